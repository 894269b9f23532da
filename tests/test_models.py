"""Tests of byzjax.models: parameter counts of the papers, shapes, jit, modes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import models

MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)


@pytest.mark.parametrize("name,shape,expected", [
    ("mnist_cnn", MNIST, 176_050),  # Allouah et al. 2023, Table 3
    ("lenet", MNIST, 431_080),  # CGE paper, Section 3.4.1
    ("lenet", CIFAR, 657_080),  # CGE paper, CIFAR-10 section
    # Table 3 gives no count; kernel 5, padding 0, pool 2 give this one.
    ("cifar_cnn", CIFAR, 789_706),
    ("logistic_regression", MNIST, 7_850),
    ("mlp", MNIST, 784 * 128 + 128 + 128 * 10 + 10),
])
def test_parameter_counts(name, shape, expected):
  model = models.build_model(name, num_classes=10, input_shape=shape)
  params, state = jax.eval_shape(model.init, jax.random.key(0))
  assert models.num_params(params) == expected
  if name == "cifar_cnn":
    # running mean and variance of the four batch norms: 2 * (64+64+128+128)
    assert models.num_params(state) == 768
  else:
    assert state == {}


@pytest.mark.parametrize("name,shape", [
    ("mnist_cnn", MNIST), ("lenet", MNIST),
    ("mlp", (8, 8, 1)), ("logistic_regression", (8, 8, 1))])
def test_jit_apply_shapes(name, shape):
  model = models.build_model(name, num_classes=7, input_shape=shape)
  params, state = jax.jit(model.init)(jax.random.key(1))
  x = jax.random.normal(jax.random.key(2), (3,) + shape)
  apply = jax.jit(lambda p, s, x: model.apply(p, s, x)[0])
  logits = apply(params, state, x)
  assert logits.shape == (3, 7) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


def test_cifar_cnn_train_and_eval_modes():
  """Also the cifar_cnn jit/shape test (compiling it twice is slow on CPU)."""
  model = models.build_model("cifar_cnn", num_classes=10, input_shape=CIFAR)
  params, state = jax.jit(model.init)(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (4,) + CIFAR)
  with pytest.raises(ValueError, match="dropout"):
    model.apply(params, state, x, train=True)
  train = jax.jit(lambda p, s, x, k: model.apply(p, s, x, train=True, key=k))
  a, new_state = train(params, state, x, jax.random.key(2))
  b, _ = train(params, state, x, jax.random.key(3))
  assert a.shape == (4, 10)
  assert not np.allclose(a, b)  # dropout masks differ
  moved = jax.tree.map(lambda u, v: bool(jnp.any(u != v)), state, new_state)
  assert all(jax.tree.leaves(moved))  # running statistics updated
  evaluate = jax.jit(lambda p, s, x: model.apply(p, s, x))
  e1, s1 = evaluate(params, new_state, x)
  e2, _ = evaluate(params, new_state, x)
  assert e1.shape == (4, 10) and np.all(np.isfinite(e1))
  np.testing.assert_array_equal(e1, e2)  # eval is deterministic
  same = jax.tree.map(lambda u, v: bool(jnp.all(u == v)), new_state, s1)
  assert all(jax.tree.leaves(same))  # eval leaves the statistics alone


def test_vmap_over_stacked_params():
  model = models.build_model("mlp", num_classes=10, input_shape=(8, 8, 1))
  keys = jax.random.split(jax.random.key(0), 5)
  params, state = jax.jit(jax.vmap(model.init))(keys)
  x = jnp.ones((5, 2, 8, 8, 1))
  logits = jax.vmap(lambda p, x: model.apply(p, state, x)[0])(params, x)
  assert logits.shape == (5, 2, 10)


def test_registry_and_errors():
  assert set(models.names()) >= {"mnist_cnn", "cifar_cnn", "lenet", "mlp",
                                  "logistic_regression"}
  assert models.get("mnist-cnn") is models.get("mnist_cnn")
  with pytest.raises(ValueError, match="mnist_cnn"):
    models.build_model("mnist_cn", num_classes=10, input_shape=MNIST)
  with pytest.raises(ValueError, match="num_classes"):
    models.build_model("mlp", num_classes=1, input_shape=MNIST)
  with pytest.raises(ValueError, match="at least 16x16"):
    models.build_model("mnist_cnn", num_classes=10, input_shape=(8, 8, 1))
  with pytest.raises(ValueError, match="input_shape"):
    models.build_model("mlp", num_classes=10, input_shape=(28, 28))
  with pytest.raises(ValueError, match="dropout_rate"):
    models.build_model("cifar_cnn", num_classes=10, input_shape=CIFAR,
                       dropout_rate=1.0)
  m = models.build_model("mlp", num_classes=10, input_shape=MNIST,
                         hidden_sizes=(32, 16))
  assert models.num_params(jax.eval_shape(m.init, jax.random.key(0))[0]) == (
      784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10)


def test_conv_valid_and_its_vjp_match_lax():
  """The forward-form VJP gives JAX's own transposed-convolution numbers."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 12, 11, 4)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((5, 3, 4, 6)), jnp.float32)
  ct = jnp.asarray(rng.standard_normal((3, 8, 9, 6)), jnp.float32)

  def lax_conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  want, want_vjp = jax.vjp(lax_conv, x, w)
  got, got_vjp = jax.vjp(models.conv_valid, x, w)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for g, h in zip(got_vjp(ct), want_vjp(ct)):
    np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-4)
  # and inside lax.scan, where it matters for speed
  scanned = jax.jit(lambda x, w: jax.lax.scan(
      lambda c, _: (c, jax.vjp(models.conv_valid, x, w)[1](ct)), 0.0, None,
      length=2)[1])(x, w)
  np.testing.assert_allclose(scanned[1][0], want_vjp(ct)[1], rtol=1e-5, atol=1e-4)


def test_pool_matches_flax_max_pool_with_odd_edges():
  x = jax.random.normal(jax.random.key(0), (2, 9, 7, 3))
  want = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")
  np.testing.assert_array_equal(models.max_pool(x), want)


def test_pytorch_default_initialization_bounds():
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels and biases (PyTorch)."""
  model = models.build_model("mnist_cnn", num_classes=10, input_shape=MNIST)
  params, _ = model.init(jax.random.key(0))
  fan_ins = {"Conv_0": 25, "Conv_1": 500, "Linear_0": 320, "Linear_1": 500}
  for layer, fan_in in fan_ins.items():
    for leaf in params[layer].values():
      bound = 1 / np.sqrt(fan_in)
      assert np.abs(leaf).max() <= bound
      assert np.abs(leaf).max() > 0.9 * bound  # uniform, not much narrower
