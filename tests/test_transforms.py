"""The optax adapter and stacked-pytree helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import reference as ref
from byzjax import aggregators as A
from byzjax import transforms
from byzjax.tree import ravel_stacked


def stacked(n, seed):
  rng = np.random.default_rng(seed)
  return {"w": jnp.asarray(rng.standard_normal((n, 3, 2)), jnp.float32),
          "b": jnp.asarray(rng.standard_normal((n, 4)), jnp.float32)}


def test_ravel_stacked_rows_are_ravel_pytree_of_each_worker():
  tree = stacked(5, 0)
  x, unravel = ravel_stacked(tree)
  for i in range(5):
    row, _ = jax.flatten_util.ravel_pytree(jax.tree.map(lambda a: a[i], tree))
    np.testing.assert_array_equal(np.asarray(x[i]), np.asarray(row))
  back = unravel(x[2])
  for k in tree:
    np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(tree[k][2]))


def test_ravel_stacked_rejects_mismatched_worker_axes():
  with pytest.raises(ValueError, match="same leading worker axis"):
    ravel_stacked({"a": jnp.zeros((3, 2)), "b": jnp.zeros((4, 2))})
  with pytest.raises(ValueError, match="at least one leaf"):
    ravel_stacked({})


def test_robust_aggregate_matches_the_rule_on_the_worker_matrix():
  grads = stacked(13, 1)
  x = np.concatenate([np.asarray(grads["b"]), np.asarray(grads["w"]).reshape(13, -1)],
                     axis=1).astype(np.float64)  # tree_flatten order: b, w
  agg = transforms.robust_aggregate("nnm+trimmed_mean", f=3, num_workers=13)
  params = jax.tree.map(lambda a: a[0], grads)
  out, _ = jax.jit(agg.update)(grads, agg.init(params))
  want = ref.trimmed_mean(ref.nnm(x, 3), 3)
  np.testing.assert_allclose(np.asarray(out["b"]), want[:4], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out["w"]).ravel(), want[4:], rtol=1e-5, atol=1e-6)


def test_robust_aggregate_inside_optax_process():
  grads = stacked(9, 2)
  params = jax.tree.map(lambda a: jnp.zeros_like(a[0]), grads)
  opt = optax.experimental.aggregating.process(
      optax.identity(), transforms.robust_aggregate("median", f=2), optax.sgd(0.5))
  updates, _ = opt.update(grads, opt.init(params), params)
  np.testing.assert_allclose(np.asarray(updates["b"]),
                             -0.5 * np.median(np.asarray(grads["b"]), axis=0), rtol=1e-6)


def test_centered_clipping_starts_from_the_previous_aggregate():
  grads = stacked(9, 3)
  x, _ = ravel_stacked(grads)
  x64 = np.asarray(x, np.float64)
  agg = transforms.robust_aggregate(("centered_clipping", {"tau": 0.5}), f=2)
  state = agg.init(jax.tree.map(lambda a: a[0], grads))
  first, state = agg.update(grads, state)
  second, _ = agg.update(grads, state)
  v1 = ref.centered_clipping(x64, 2, tau=0.5)
  v2 = ref.centered_clipping(x64, 2, tau=0.5, center=v1)
  flat2, _ = jax.flatten_util.ravel_pytree(second)
  np.testing.assert_allclose(np.asarray(flat2), v2, rtol=1e-5, atol=1e-6)
  assert not np.allclose(v1, v2)  # the second step really moved from v1


def test_randomized_rule_gets_a_fresh_key_each_step():
  grads = stacked(17, 4)
  agg = transforms.robust_aggregate("bucketing+mean", f=4, key=jax.random.key(7))
  state = agg.init(jax.tree.map(lambda a: a[0], grads))
  outs = []
  for _ in range(3):
    out, state = agg.update(grads, state)
    outs.append(np.asarray(out["b"]))
  # Bucket means averaged over all buckets equal the mean up to bucket weights;
  # with s = 2 the last bucket has 1 row, so different permutations differ.
  assert not np.allclose(outs[0], outs[1])
  again = transforms.robust_aggregate("bucketing+mean", f=4, key=jax.random.key(7))
  out0, _ = again.update(grads, again.init(jax.tree.map(lambda a: a[0], grads)))
  np.testing.assert_array_equal(np.asarray(out0["b"]), outs[0])  # same seed, same numbers


def test_robust_aggregate_needs_f_and_checks_bounds():
  with pytest.raises(ValueError, match="needs f"):
    transforms.robust_aggregate("krum")
  with pytest.raises(ValueError, match="bulyan needs n >= 4f \\+ 3, got n=17, f=4"):
    transforms.robust_aggregate("bulyan", f=4, num_workers=17)
  composed = A.compose("krum", f=4)
  with pytest.raises(ValueError, match="needs n > 2f"):
    transforms.robust_aggregate(composed, num_workers=8)
