"""Flax models of the papers, behind a registry and a pure init/apply pair.

The models are ``flax.linen`` modules: linen keeps parameters outside the module,
so ``init(key) -> (params, state)`` and ``apply(params, state, x, ...) -> (logits,
state)`` are pure functions that compose directly with ``jax.jit``, ``jax.vmap``
(over workers or seeds) and ``jax.lax.scan`` (over rounds), with no module
objects to split or merge.

Every model takes a batch of NHWC float32 images ``(batch, height, width,
channels)`` and returns float32 logits ``(batch, num_classes)``. The papers end
their networks with a log-softmax (``S`` in Table 3) and train with the NLL
loss; here the log-softmax is left to the loss
(``optax.softmax_cross_entropy_with_integer_labels`` on the logits is the same
objective). Convolutions and linear layers are initialized as PyTorch's are
(``torch_uniform``), since the papers' hyperparameters were tuned for it.

Models (``names()``):
  * ``mnist_cnn``: C(20)-R-M-C(20)-R-M-L(500)-R-L(10), Table 3 of Allouah et al.
    (2023), 176,050 parameters on 28x28x1 inputs.
  * ``cifar_cnn``: C(64)-R-B-C(64)-R-B-M-D-C(128)-R-B-C(128)-R-B-M-D-L(128)-R-D-
    L(10), Table 3 of Allouah et al. (2023), with batch norm and dropout (0.25);
    789,706 trainable parameters (plus 768 batch-norm statistics) on 32x32x3.
    The paper does not state this count; it follows from its notation (kernel
    5, padding 0, stride 1, max-pool 2).
  * ``lenet``: C(20)-R-M-C(50)-R-M-L(500)-R-L(10) of the CGE paper (Gupta, Liu
    and Vaidya): 431,080 parameters on MNIST (28x28x1) and 657,080 on CIFAR-10
    (32x32x3), the two dimensions d the paper reports.
  * ``mlp``: fully connected ReLU network (hidden sizes configurable).
  * ``logistic_regression``: one linear layer on the flattened image.

References:
  Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan. "Fixing by Mixing: A
  Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023, Appendix
  14.1, Table 3. Gupta, Liu, Vaidya. "Byzantine Fault-Tolerant Distributed
  Machine Learning with Norm-Based Comparative Gradient Elimination" (CGE),
  Section 3.4.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from byzjax import checks
from byzjax.registry import Registry
from byzjax.types import Array, Key, PyTree

MODELS: Registry[Callable[..., "ModelDef"]] = Registry("model")


class ModelDef(NamedTuple):
  """What a registered factory returns: the module and its needs.

  Attributes:
    module: the ``flax.linen`` module; called as ``module(x, train=...)``.
    min_hw: smallest (height, width) the architecture accepts.
    uses_dropout: training needs a ``key`` for dropout.
  """

  module: nn.Module
  min_hw: Tuple[int, int] = (1, 1)
  uses_dropout: bool = False


_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _lax_conv(x: Array, kernel: Array, padding) -> Array:
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                      dimension_numbers=_DIMENSIONS)


@jax.custom_vjp
def conv_valid(x: Array, kernel: Array) -> Array:
  """Stride-1 "valid" 2D convolution (NHWC input, HWIO kernel).

  Its VJP writes both backward convolutions as forward convolutions: the input
  gradient as a "full" convolution of the output gradient with the flipped,
  in/out-swapped kernel, and the kernel gradient as a convolution of the input
  (channels as batch) with the output gradient (batch as channels). The
  numbers are those of JAX's own transpose rules; the form matters on XLA:CPU,
  where JAX's transposed convolutions were measured much slower inside a
  ``lax.scan`` body than outside it, while forward convolutions run at full
  speed in both (``benchmarks/results/xla_cpu_notes.md``).

  Args:
    x: (batch, height, width, in_channels).
    kernel: (kh, kw, in_channels, out_channels).

  Returns:
    (batch, height - kh + 1, width - kw + 1, out_channels).
  """
  return _lax_conv(x, kernel, "VALID")


def _conv_valid_fwd(x, kernel):
  return _lax_conv(x, kernel, "VALID"), (x, kernel)


def _conv_valid_bwd(residuals, ct):
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
  dx = _lax_conv(ct, flipped, [(kh - 1, kh - 1), (kw - 1, kw - 1)])
  dkernel = _lax_conv(x.transpose(3, 1, 2, 0), ct.transpose(1, 2, 0, 3),
                      "VALID").transpose(1, 2, 0, 3)
  return dx, dkernel


conv_valid.defvjp(_conv_valid_fwd, _conv_valid_bwd)


def torch_uniform(fan_in: int) -> Callable[..., Array]:
  """PyTorch's default initializer of Conv2d and Linear parameters.

  U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weights (kaiming_uniform with
  a = sqrt(5)) and biases alike. The papers trained their models from this
  initialization, and their learning rates (0.75 for the MNIST CNN) are tuned
  for it; flax's default (LeCun normal) starts about 1.7x larger.

  Args:
    fan_in: inputs per output unit (kh * kw * in_channels for a convolution).

  Returns:
    A flax initializer ``(key, shape, dtype) -> array``.
  """
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class Conv(nn.Module):
  """C(#channels) of Table 3: 5x5 kernel, padding 0, stride 1, with bias.

  Parameters ``kernel`` (k, k, in, out) and ``bias`` (out,), initialized as in
  PyTorch. On the CPU backend the convolution is ``conv_valid`` (whose VJP is
  fast under ``lax.scan`` on XLA:CPU); elsewhere ``lax`` directly.

  Attributes:
    features: output channels.
    kernel_size: square kernel size (5 in the papers).
  """

  features: int
  kernel_size: int = 5

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k, cin = self.kernel_size, x.shape[-1]
    init = torch_uniform(k * k * cin)
    kernel = self.param("kernel", init, (k, k, cin, self.features))
    bias = self.param("bias", init, (self.features,))
    conv = conv_valid if jax.default_backend() == "cpu" else (
        lambda a, b: _lax_conv(a, b, "VALID"))
    return conv(x, kernel.astype(x.dtype)) + bias.astype(x.dtype)


class Linear(nn.Module):
  """L(#outputs) of Table 3: a fully connected layer, initialized as in PyTorch.

  Attributes:
    features: number of outputs.
  """

  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    init = torch_uniform(x.shape[-1])
    kernel = self.param("kernel", init, (x.shape[-1], self.features))
    bias = self.param("bias", init, (self.features,))
    return x @ kernel.astype(x.dtype) + bias.astype(x.dtype)


def _conv(features: int) -> Conv:
  # Table 3: C(#channels) has kernel size 5, padding 0, stride 1.
  return Conv(features)


def max_pool(x: Array) -> Array:
  """M of Table 3: 2x2 max-pool, stride 2, odd edges dropped (PyTorch's floor).

  A reshape and a max over the two window axes: the same values as
  ``nn.max_pool``, and its VJP (compare-and-select) was measured faster on
  XLA:CPU than ``nn.max_pool``'s select-and-scatter for the MNIST CNN's
  per-worker gradients.
  """
  b, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class MnistCNN(nn.Module):
  """The MNIST / Fashion-MNIST CNN of Table 3: C(20)-R-M-C(20)-R-M-L(500)-R-L(10).

  On 28x28x1 inputs: conv 520 + conv 10,020 + dense (4*4*20 -> 500) 160,500 +
  dense 5,010 = 176,050 parameters. The authors' group's code
  (LPD-EPFL/robust-collaborative-learning, ``simples-conv``) gives the second
  convolution 50 channels: that network is ``lenet`` (431,080 parameters).

  Attributes:
    num_classes: number of output logits.

  References:
    Allouah et al., "Fixing by Mixing", AISTATS 2023, Appendix 14.1, Table 3.
  """

  num_classes: int = 10

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    del train  # no train-only layers
    x = max_pool(nn.relu(_conv(20)(x)))
    x = max_pool(nn.relu(_conv(20)(x)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(Linear(500)(x))
    return Linear(self.num_classes)(x)


class CifarCNN(nn.Module):
  """The CIFAR-10 CNN of Table 3, with batch norm (B) and dropout (D).

  (3, 32x32)-C(64)-R-B-C(64)-R-B-M-D-C(128)-R-B-C(128)-R-B-M-D-L(128)-R-D-L(10).
  With kernel 5 / padding 0 the spatial size goes 32-28-24-12-8-4-2, so on
  32x32x3: convs 4,864 + 102,464 + 204,928 + 409,728, batch-norm scales and
  biases 768, dense (2*2*128 -> 128) 65,664 + 1,290 = 789,706 trainable
  parameters, plus 768 running statistics in ``state["batch_stats"]``. The
  paper states no count.
  Batch norm uses batch statistics and updates its running averages when
  ``train=True`` (PyTorch defaults: momentum 0.1, i.e. flax momentum 0.9, eps
  1e-5) and the running averages when ``train=False``; dropout (rate 0.25) is
  active only when ``train=True`` and then needs a ``"dropout"`` rng.

  Attributes:
    num_classes: number of output logits.
    dropout_rate: dropout probability (Table 3: 0.25).

  References:
    Allouah et al., "Fixing by Mixing", AISTATS 2023, Appendix 14.1, Table 3.
  """

  num_classes: int = 10
  dropout_rate: float = 0.25

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    def bn(y):
      return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                          epsilon=1e-5)(y)

    def drop(y):
      return nn.Dropout(self.dropout_rate, deterministic=not train)(y)

    x = bn(nn.relu(_conv(64)(x)))
    x = bn(nn.relu(_conv(64)(x)))
    x = drop(max_pool(x))
    x = bn(nn.relu(_conv(128)(x)))
    x = bn(nn.relu(_conv(128)(x)))
    x = drop(max_pool(x))
    x = x.reshape((x.shape[0], -1))
    x = drop(nn.relu(Linear(128)(x)))
    return Linear(self.num_classes)(x)


class LeNet(nn.Module):
  """LeNet of the CGE paper: C(20)-R-M-C(50)-R-M-L(500)-R-L(10).

  On 28x28x1 (MNIST): 520 + 25,050 + 400,500 + 5,010 = 431,080 parameters; on
  32x32x3 (CIFAR-10): 1,520 + 25,050 + 625,500 + 5,010 = 657,080, the two
  dimensions d reported in the paper.

  Attributes:
    num_classes: number of output logits.

  References:
    Gupta, Liu, Vaidya, "Comparative Gradient Elimination (CGE)", Section 3.4.
  """

  num_classes: int = 10

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    del train
    x = max_pool(nn.relu(_conv(20)(x)))
    x = max_pool(nn.relu(_conv(50)(x)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(Linear(500)(x))
    return Linear(self.num_classes)(x)


class MLP(nn.Module):
  """A fully connected ReLU network on the flattened image, for fast runs.

  Attributes:
    num_classes: number of output logits.
    hidden_sizes: widths of the hidden layers.

  References:
    Baseline model; not from a specific paper of the project.
  """

  num_classes: int = 10
  hidden_sizes: Tuple[int, ...] = (128,)

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    del train
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden_sizes:
      x = nn.relu(Linear(width)(x))
    return Linear(self.num_classes)(x)


class LogisticRegression(nn.Module):
  """Multinomial logistic regression: one linear layer on the flattened image.

  Attributes:
    num_classes: number of output logits.

  References:
    Baseline model; not from a specific paper of the project.
  """

  num_classes: int = 10

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    del train
    return Linear(self.num_classes)(x.reshape((x.shape[0], -1)))


@MODELS.register("mnist_cnn")
def _mnist_cnn(*, num_classes: int) -> ModelDef:
  # 5x5 valid conv, pool, 5x5 valid conv, pool: needs at least 16x16.
  return ModelDef(MnistCNN(num_classes=num_classes), min_hw=(16, 16))


@MODELS.register("cifar_cnn")
def _cifar_cnn(*, num_classes: int, dropout_rate: float = 0.25) -> ModelDef:
  if not 0.0 <= dropout_rate < 1.0:
    raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
  # Two 5x5 valid convs, pool, two 5x5 valid convs, pool: needs at least 26x26.
  return ModelDef(CifarCNN(num_classes=num_classes, dropout_rate=dropout_rate),
                  min_hw=(26, 26), uses_dropout=dropout_rate > 0)


@MODELS.register("lenet")
def _lenet(*, num_classes: int) -> ModelDef:
  return ModelDef(LeNet(num_classes=num_classes), min_hw=(16, 16))


@MODELS.register("mlp")
def _mlp(*, num_classes: int, hidden_sizes: Sequence[int] = (128,)) -> ModelDef:
  hidden_sizes = tuple(int(h) for h in hidden_sizes)
  if any(h < 1 for h in hidden_sizes):
    raise ValueError(f"mlp hidden_sizes must be >= 1, got {hidden_sizes}")
  return ModelDef(MLP(num_classes=num_classes, hidden_sizes=hidden_sizes))


@MODELS.register("logistic_regression")
def _logistic_regression(*, num_classes: int) -> ModelDef:
  return ModelDef(LogisticRegression(num_classes=num_classes))


class Model(NamedTuple):
  """A built model: pure ``init`` / ``apply`` around a linen module.

  ``params`` are the trainable parameters; ``state`` holds the other variable
  collections (``{"batch_stats": ...}`` for ``cifar_cnn``, ``{}`` otherwise).
  Both are pytrees, so they can be stacked over seeds/workers with ``jax.vmap``.

  Attributes:
    name: the registry name.
    module: the ``flax.linen`` module.
    input_shape: per-example (height, width, channels).
    num_classes: number of logits.
    uses_dropout: training needs a ``key`` for dropout.
  """

  name: str
  module: nn.Module
  input_shape: Tuple[int, int, int]
  num_classes: int
  uses_dropout: bool = False

  def init(self, key: Key) -> Tuple[PyTree, PyTree]:
    """Initializes the variables.

    Args:
      key: a ``jax.random.key``.

    Returns:
      ``(params, state)``.
    """
    dummy = jnp.zeros((1,) + tuple(self.input_shape), jnp.float32)
    variables = self.module.init({"params": key}, dummy, train=False)
    variables = dict(variables)
    params = variables.pop("params")
    return params, variables

  def apply(self, params: PyTree, state: PyTree, x: Array, *,
            train: bool = False, key: Optional[Key] = None
           ) -> Tuple[Array, PyTree]:
    """Computes logits, and the updated state in train mode.

    Args:
      params: the trainable parameters from ``init``.
      state: the non-trainable collections from ``init`` (``{}`` if none).
      x: float32 images ``(batch, height, width, channels)``.
      train: training mode (batch statistics, dropout); a static Python bool.
      key: ``jax.random.key`` for dropout; required when ``train`` and the
        model uses dropout.

    Returns:
      ``(logits, new_state)`` with logits of shape ``(batch, num_classes)``;
      ``new_state`` is ``state`` unchanged in eval mode.
    """
    variables = {"params": params, **state}
    rngs = {"dropout": key} if key is not None else None
    if train and self.uses_dropout and key is None:
      raise ValueError(f"model {self.name!r} uses dropout: apply(..., train=True)"
                       " needs key=jax.random.key(...)")
    if train and state:
      logits, new_state = self.module.apply(
          variables, x, train=True, rngs=rngs, mutable=list(state))
      return logits, dict(new_state)
    logits = self.module.apply(variables, x, train=train, rngs=rngs)
    return logits, state


def get(name: str) -> Callable[..., ModelDef]:
  """Returns the factory registered as ``name`` (see ``names()``).

  Args:
    name: a model name such as ``"mnist_cnn"``.

  Returns:
    A factory ``(*, num_classes, **hyper) -> ModelDef``.

  References:
    See the module docstring.
  """
  return MODELS.get(name)


def names() -> list:
  """The registered model names, sorted."""
  return MODELS.names()


def build_model(name: str, *, num_classes: int,
                input_shape: Sequence[int], **hyper: Any) -> Model:
  """Builds a registered model for a given input shape and number of classes.

  Args:
    name: one of ``names()``.
    num_classes: number of logits, >= 2.
    input_shape: per-example (height, width, channels), e.g. (28, 28, 1).
    **hyper: model hyperparameters (``hidden_sizes`` for ``mlp``,
      ``dropout_rate`` for ``cifar_cnn``).

  Returns:
    A ``Model`` with pure ``init`` and ``apply``.

  Raises:
    ValueError: unknown name, ``num_classes < 2``, or an input shape that is
      not (H, W, C) or is too small for the architecture.

  References:
    Allouah et al., "Fixing by Mixing", AISTATS 2023, Table 3; Gupta, Liu,
    Vaidya, CGE, Section 3.4.
  """
  factory = MODELS.get(name)
  num_classes = int(num_classes)
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}")
  input_shape = tuple(int(s) for s in input_shape)
  if len(input_shape) != 3 or min(input_shape) < 1:
    raise ValueError("input_shape must be (height, width, channels) with "
                     f"positive sizes, got {input_shape}")
  valid = [k for k in inspect.signature(factory).parameters if k != "num_classes"]
  checks.check_names(f"model {name!r}", list(hyper), valid)
  spec = factory(num_classes=num_classes, **hyper)
  h, w, _ = input_shape
  if h < spec.min_hw[0] or w < spec.min_hw[1]:
    raise ValueError(
        f"model {name!r} needs images of at least {spec.min_hw[0]}x"
        f"{spec.min_hw[1]}, got input_shape={input_shape}; use 'mlp' or "
        "'logistic_regression' for small images")
  return Model(name=name.strip().lower().replace("-", "_"), module=spec.module,
               input_shape=input_shape, num_classes=num_classes,
               uses_dropout=spec.uses_dropout)


def num_params(params: PyTree) -> int:
  """Total number of scalars in a parameter pytree.

  Args:
    params: a pytree of arrays.

  Returns:
    The sum of the leaves' sizes, as a Python int.
  """
  return int(sum(np.prod(np.shape(leaf)) for leaf in jax.tree.leaves(params)))
