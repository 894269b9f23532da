"""The ``Attack`` type, its registry and decorator, and helpers attacks share.

An attack acts on the (n, d) matrix whose rows are the vectors the n workers
send; the honest workers are the first ``n - f`` rows and the Byzantine
workers the last ``f``. ``attack(name, display=...)`` registers a builder
``builder(*, f, **hyper) -> Attack``; ``make(name, f=..., **hyper)`` builds one,
refusing an unknown hyperparameter with the valid ones. The catalogues are
``byzjax.attacks`` and ``byzjax.optimized_attacks``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from byzjax import checks
from byzjax.kernels import row_mean as honest_mean  # noqa: F401 (public)
from byzjax.kernels import row_sq_deviations as _row_sq_deviations
from byzjax.registry import Registry
from byzjax.types import Array, Key


AttackState = Any  # one of the NamedTuple states below


INPUTS = ("none", "gradients", "flipped_gradients")


def _no_metrics(state: Any) -> Dict[str, Array]:
  del state
  return {}


class Attack(NamedTuple):
  """An attack: a pair of pure functions (init, update) and what it needs.

  Attributes:
    init: ``init(x_like, *, key) -> state``; ``x_like`` is an (n, d) array (or
      anything with ``.shape`` and ``.dtype``) fixing the shapes.
    update: ``update(x, state, *, aggregate=None) -> (x', state')`` with ``x`` and
      ``x'`` of shape (n, d); the first ``n - f`` rows of ``x'`` are those of ``x``.
    name: the registry name.
    inputs: what the training round puts in the Byzantine rows of ``x``: "none"
      (zeros), "gradients" (the gradients those workers computed honestly:
      ``gradient_reverse``, ``norm_confusing``) or "flipped_gradients"
      (gradients on labels ``C - 1 - l``: ``label_flip``). They get the l2 term
      and the clipping of an honest gradient.
    momentum: whether those inputs also pass through the worker momentum (False:
      they are sent as computed, as the authors' label flipping does).
    metrics: ``metrics(state) -> {name: scalar}``, what the attack reports each
      round (the optimized attacks: ``{"eta": ...}``).
  """

  init: Callable[..., AttackState]
  update: Callable[..., Tuple[Array, AttackState]]
  name: str
  inputs: str = "none"
  momentum: bool = True
  metrics: Callable[[Any], Dict[str, Array]] = _no_metrics


class KeyState(NamedTuple):
  """State of a stateless attack: only the (unused or split-per-step) key."""

  key: Key


class AttackBuilder:
  """A registered attack: ``builder(f=..., **hyper) -> Attack``.

  Attributes:
    name: the registry name.
    display: how tables and plots show it ("ALIE").
    hyperparameters: name -> default, read from the builder's signature.
  """

  def __init__(self, builder: Callable[..., Attack], *, name: str,
               display: Optional[str] = None):
    functools.update_wrapper(self, builder)
    self.builder = builder
    self.name = name
    self.display = display or name
    params = inspect.signature(builder).parameters
    self.hyperparameters = {k: p.default for k, p in params.items() if k != "f"}

  def __call__(self, *, f: int, **hyper: Any) -> Attack:
    f = checks.check_int("f", f, low=0, what=f"attack {self.name!r}")
    checks.check_names(f"attack {self.name!r}", list(hyper),
                       list(self.hyperparameters))
    return self.builder(f=f, **hyper)

  def __repr__(self) -> str:
    return f"<byzjax attack {self.name!r}>"


ATTACKS: Registry[AttackBuilder] = Registry("attack")


def attack(name: str, *, display: Optional[str] = None
          ) -> Callable[[Callable[..., Attack]], AttackBuilder]:
  """Registers ``builder(*, f, **hyper) -> Attack`` as the attack ``name``.

  Args:
    name: the registry name (lower_snake_case, unique).
    display: how tables and plots show it (default: the name).

  Returns:
    A decorator returning the registered ``AttackBuilder``.
  """

  def wrap(builder: Callable[..., Attack]) -> AttackBuilder:
    return ATTACKS.register(name)(AttackBuilder(builder, name=name,
                                                display=display))

  return wrap


def shape_nd(x_like: Any, name: str) -> Tuple[int, int]:
  shape = tuple(getattr(x_like, "shape", ()))
  if len(shape) != 2:
    raise ValueError(f"{name} expects an (n, d) matrix of stacked worker vectors, "
                     f"got shape {shape}")
  return int(shape[0]), int(shape[1])


def check_honest(name: str, n: int, f: int, min_honest: int = 1) -> int:
  """Returns h = n - f after checking that at least ``min_honest`` rows are honest."""
  h = n - f
  if h < min_honest:
    raise ValueError(f"{name} needs n - f >= {min_honest} honest rows, got n={n}, f={f}")
  return h


def keep_honest(x: Array, byzantine: Array, f: int) -> Array:
  """x with its last f rows replaced by ``byzantine`` (shape (f, d) or (d,)).

  A concatenation after the static slice of the honest rows, which keeps them bitwise
  and was measured faster on XLA:CPU than a masked ``where`` over the whole matrix.
  """
  n, d = x.shape
  byzantine = jnp.broadcast_to(byzantine.astype(x.dtype), (f, d))
  return jnp.concatenate([x[:n - f], byzantine], axis=0)


def honest_std(x: Array, s: Array, h: int, ddof: int) -> Array:
  """Coordinate-wise std of the first h rows around their mean s (divisor h - ddof)."""
  return jnp.sqrt(_row_sq_deviations(x, s, h) * (1.0 / (h - ddof)))


def key_init(name: str, f: int, min_honest: int = 1) -> Callable[..., KeyState]:
  def init(x_like: Any, *, key: Key) -> KeyState:
    n, _ = shape_nd(x_like, name)
    check_honest(name, n, f, min_honest)
    return KeyState(key=key)

  return init


def simple_attack(name: str, f: int, byzantine_row: Callable[[Array, int], Array],
                   *, min_honest: int = 1) -> Attack:
  """An attack whose Byzantine rows all equal ``byzantine_row(x, h)`` (shape (d,))."""

  def update(x: Array, state: KeyState, *, aggregate: Any = None):
    del aggregate
    n, _ = shape_nd(x, name)
    h = check_honest(name, n, f, min_honest)
    if f == 0:
      return x, state
    return keep_honest(x, byzantine_row(x, h), f), state

  return Attack(init=key_init(name, f, min_honest), update=update, name=name)


def get(name: str) -> AttackBuilder:
  """The builder registered as ``name`` (call it as ``builder(f=..., **hyper)``).

  Raises:
    ValueError: listing the valid names when ``name`` is unknown.
  """
  return ATTACKS.get(name)


def names() -> list:
  """The registered attack names, sorted."""
  return ATTACKS.names()


def make(name: str, *, f: int, **hyper: Any) -> Attack:
  """Builds the attack ``name`` for f Byzantine workers (the last f rows).

  Args:
    name: a registered name (see ``names()``).
    f: number of Byzantine workers, an int >= 0.
    **hyper: the attack's hyperparameters (keyword-only).

  Returns:
    The Attack.

  Raises:
    ValueError: for an unknown name, a bad f, an unknown hyperparameter (listing the
      valid ones) or a bad hyperparameter value (naming it and its valid range).
  """
  return get(name)(f=f, **hyper)
