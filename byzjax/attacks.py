"""Byzantine attacks as optax-style transformations over the stacked worker vectors.

An attack acts on the (n, d) matrix whose rows are the vectors the n workers send
(the training step ravels each worker's update, gradient or momentum, into one row).
The honest workers are the first ``n - f`` rows and the Byzantine workers the last
``f`` rows. Every attack leaves the honest rows untouched (bitwise) and replaces the
Byzantine rows; with ``f = 0`` it returns ``x`` unchanged. Before the attack, the
Byzantine rows hold what those workers computed honestly (their "own" vectors), which
``gradient_reverse`` and ``norm_confusing`` use.

Usage::

  attack = make("alie", f=4)
  state = attack.init(x, key=jax.random.key(0))
  x, state = attack.update(x, state, aggregate=rule)   # rule: (n, d) -> (d,)

``aggregate`` is the server's defence: a ``byzjax.aggregators.Defence`` (a composed
rule with the round's key and centre, ``rule.bind(key)``), a ``Composed`` rule, or any
pure function of the (n, d) matrix; only the optimized attacks use it. To jit an update,
close over the defence: ``jax.jit(functools.partial(attack.update, aggregate=rule))``.
Against a byzjax rule the optimized attacks evaluate all candidates on lazy mixtures of
the honest rows, s and s + a, so that the rule's pairwise distances are computed once
rather than once per candidate, and simulate a randomized rule with their own key.

Notation: s is the mean of the honest rows and sigma their coordinate-wise standard
deviation, with ``ddof = 1`` by default (the unbiased estimate, as in ByzFL's ALIE,
``var(ddof=1)``, and in Karimireddy et al.'s ALIE code, ``torch.std``).

Every attack except ``label_flip`` changes the Byzantine rows; ``label_flip`` is the
identity on ``x`` because its Byzantine rows were already computed on flipped labels
(``flips_labels`` tells the training step to feed them ``C - 1 - l``).

Performance note: on XLA:CPU, reductions and sorts over the short worker axis
(``jnp.mean(x, 0)``, ``jnp.sort(x, 0)``) are 50-250x slower than elementwise code, and
a matvec ``w @ x`` becomes a slow batched dot under ``jax.vmap``; so the honest
statistics are unrolled row adds (matvecs beyond 64 honest rows) and the order
statistic of ``coordinate_wise`` is an unrolled min/max selection network over rows.
"""

from __future__ import annotations

import functools
import inspect
import math
import statistics
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from byzjax._fusion import MAX_UNROLLED_ROWS as _MAX_UNROLLED_ROWS
from byzjax.aggregators import Composed, Defence
from byzjax._kernels import Rows
from byzjax._fusion import row_mean as _honest_mean
from byzjax._fusion import row_sq_deviations as _row_sq_deviations
from byzjax._fusion import row_sum as _row_sum
from byzjax._fusion import sum_of_squares as _sum_of_squares
from byzjax.registry import Registry
from byzjax.types import Array, Key

AttackState = Any  # one of the NamedTuple states below


class Attack(NamedTuple):
  """An attack: a pair of pure functions (init, update) and three static facts.

  Attributes:
    init: ``init(x_like, *, key) -> state``; ``x_like`` is an (n, d) array (or
      anything with ``.shape`` and ``.dtype``) fixing the shapes.
    update: ``update(x, state, *, aggregate=None) -> (x', state')`` with ``x`` and
      ``x'`` of shape (n, d); the first ``n - f`` rows of ``x'`` are those of ``x``.
    name: the registry name.
    flips_labels: True only for ``label_flip``: the training step must compute the
      Byzantine workers' vectors on labels ``C - 1 - l``.
    uses_own_rows: True when the update reads the Byzantine rows of its input
      (the vectors those workers computed honestly): ``gradient_reverse`` and
      ``norm_confusing``. The training step then fills those rows first.
    bypasses_momentum: True when the Byzantine workers send the vectors they
      computed (after the l2 term and clipping) without the worker momentum:
      ``label_flip`` by default (the authors' code and ByzFL send the flipped
      gradient itself while the honest workers send momentums).
  """

  init: Callable[..., AttackState]
  update: Callable[..., Tuple[Array, AttackState]]
  name: str
  flips_labels: bool
  uses_own_rows: bool = False
  bypasses_momentum: bool = False


class KeyState(NamedTuple):
  """State of a stateless attack: only the (unused or split-per-step) key."""

  key: Key


class OptimizedState(NamedTuple):
  """State of ``optimized_alie`` / ``optimized_foe``.

  Attributes:
    key: the attack's key (not consumed).
    eta: the eta chosen at the last update (0 before the first update).
  """

  key: Key
  eta: Array


class MimicState(NamedTuple):
  """State of the ``mimic`` heuristic (Karimireddy et al. 2022).

  Attributes:
    key: the attack's key (its first split drew the initial direction).
    step: number of updates done so far (int32).
    mu: running mean of the honest mean over the warm-up, shape (d,).
    z: running estimate of the unit direction of maximal honest variance, (d,).
    target: index (among the honest rows) of the worker being mimicked (int32).
  """

  key: Key
  step: Array
  mu: Array
  z: Array
  target: Array


_REGISTRY: Registry[Callable[..., Attack]] = Registry("attack")


def _register(name: str) -> Callable[[Callable[..., Attack]], Callable[..., Attack]]:
  """Registers a builder under ``name``, wrapped to validate f (an int >= 0)."""

  def wrap(builder: Callable[..., Attack]) -> Callable[..., Attack]:
    @functools.wraps(builder)
    def checked(*, f: int, **hyper: Any) -> Attack:
      return builder(f=_check_int("f", f, low=0, what=f"attack {name!r}: "), **hyper)

    return _REGISTRY.register(name)(checked)

  return wrap


# ---------------------------------------------------------------------------
# Validation and shared helpers.


def _check_int(name: str, value: Any, *, low: int, what: str = "") -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{what}{name} must be an int >= {low}, got {value!r}")
  if value < low:
    raise ValueError(f"{what}{name} must be an int >= {low}, got {name}={value}")
  return int(value)


def _check_real(name: str, value: Any, *, what: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
    raise ValueError(f"{what}: {name} must be a finite real number, got {value!r}")
  value = float(value)
  if not math.isfinite(value):
    raise ValueError(f"{what}: {name} must be finite, got {name}={value}")
  return value


def _check_bool(name: str, value: Any, *, what: str) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{what}: {name} must be True or False, got {value!r}")
  return bool(value)


def _shape_nd(x_like: Any, name: str) -> Tuple[int, int]:
  shape = tuple(getattr(x_like, "shape", ()))
  if len(shape) != 2:
    raise ValueError(f"{name} expects an (n, d) matrix of stacked worker vectors, "
                     f"got shape {shape}")
  return int(shape[0]), int(shape[1])


def _check_honest(name: str, n: int, f: int, min_honest: int = 1) -> int:
  """Returns h = n - f after checking that at least ``min_honest`` rows are honest."""
  h = n - f
  if h < min_honest:
    raise ValueError(f"{name} needs n - f >= {min_honest} honest rows, got n={n}, f={f}")
  return h


def _keep_honest(x: Array, byzantine: Array, f: int) -> Array:
  """x with its last f rows replaced by ``byzantine`` (shape (f, d) or (d,)).

  A concatenation after the static slice of the honest rows, which keeps them bitwise
  and was measured faster on XLA:CPU than a masked ``where`` over the whole matrix.
  """
  n, d = x.shape
  byzantine = jnp.broadcast_to(byzantine.astype(x.dtype), (f, d))
  return jnp.concatenate([x[:n - f], byzantine], axis=0)


def _honest_std(x: Array, s: Array, h: int, ddof: int) -> Array:
  """Coordinate-wise std of the first h rows around their mean s (divisor h - ddof)."""
  return jnp.sqrt(_row_sq_deviations(x, s, h) * (1.0 / (h - ddof)))


def _kth_smallest_rows(rows: Sequence[Array], k: int) -> Array:
  """Per coordinate, the k-th smallest (1-indexed) of the given (d,) rows.

  An unrolled min/max selection network: keeps the k smallest values seen so far in
  sorted order and inserts each new row by compare-exchange (about 2 k len(rows)
  elementwise ops, all fused by XLA into one pass over d).
  """
  best = [rows[0]]
  for r in rows[1:]:
    carry = r
    for j in range(len(best)):
      lo = jnp.minimum(best[j], carry)
      carry = jnp.maximum(best[j], carry)
      best[j] = lo
    if len(best) < k:
      best.append(carry)
  return best[k - 1]


def baruch_z_max(n: int, f: int) -> float:
  """The ALIE factor z_max of Baruch et al. (2019) for n workers, f Byzantine.

  s = floor(n / 2 + 1) - f workers must be "won over"; z_max = Phi^{-1}((n - s) / n),
  with Phi the standard normal CDF.

  Args:
    n: total number of workers.
    f: number of Byzantine workers.

  Returns:
    z_max as a Python float.

  Raises:
    ValueError: if (n - s) / n is not in (0, 1), i.e. f >= floor(n / 2 + 1) or n < 3.

  References:
    Baruch, Baruch, Goldberg. A Little Is Enough: Circumventing Defenses For
    Distributed Learning. NeurIPS 2019, Section 3.
  """
  s = math.floor(n / 2 + 1) - f
  p = (n - s) / n
  if not 0.0 < p < 1.0:
    raise ValueError(
        f"alie's z_max = Phi^-1((n - s) / n), s = floor(n/2 + 1) - f, needs "
        f"0 < (n - s) / n < 1, got n={n}, f={f} (s={s}); pass a fixed eta= instead")
  return statistics.NormalDist().inv_cdf(p)


def flip_labels(labels: Array, num_classes: int) -> Array:
  """The label-flipping map l -> C - 1 - l (C = num_classes).

  Args:
    labels: integer labels in [0, num_classes).
    num_classes: the number of classes C (10 for MNIST/CIFAR-10: l' = 9 - l).

  Returns:
    The flipped labels, same shape and dtype.

  References:
    Allouah et al., Fixing by Mixing (AISTATS 2023), Appendix 14.3 (LF); Gupta, Liu,
    Vaidya, Comparative Gradient Elimination, Section 3.3 (label-flipping faults).
  """
  num_classes = _check_int("num_classes", num_classes, low=1, what="flip_labels: ")
  return (num_classes - 1 - labels).astype(jnp.asarray(labels).dtype)


def _key_init(name: str, f: int, min_honest: int = 1) -> Callable[..., KeyState]:
  def init(x_like: Any, *, key: Key) -> KeyState:
    n, _ = _shape_nd(x_like, name)
    _check_honest(name, n, f, min_honest)
    return KeyState(key=key)

  return init


def _simple_attack(name: str, f: int, byzantine_row: Callable[[Array, int], Array],
                   *, min_honest: int = 1) -> Attack:
  """An attack whose Byzantine rows all equal ``byzantine_row(x, h)`` (shape (d,))."""

  def update(x: Array, state: KeyState, *, aggregate: Optional[Defence] = None):
    del aggregate
    n, _ = _shape_nd(x, name)
    h = _check_honest(name, n, f, min_honest)
    if f == 0:
      return x, state
    return _keep_honest(x, byzantine_row(x, h), f), state

  return Attack(init=_key_init(name, f, min_honest), update=update, name=name,
                flips_labels=False)


# ---------------------------------------------------------------------------
# Attacks built on the honest mean s (Appendix 14.3 of Fixing by Mixing).


@_register("sign_flip")
def sign_flip(*, f: int) -> Attack:
  """Sign flipping: every Byzantine row is -s (s = mean of the honest rows).

  Equivalently s + eta * (-s) with eta = 2.

  Args:
    f: number of Byzantine workers (the last f rows).

  Returns:
    The Attack.

  References:
    Allouah et al., Fixing by Mixing (AISTATS 2023), Appendix 14.3 (SF); Allen-Zhu et
    al., Byzantine-resilient non-convex SGD (ICLR 2021).
  """
  return _simple_attack("sign_flip", f, lambda x, h: -_honest_mean(x, h))


@_register("foe")
def foe(*, f: int, eta: float = 0.1) -> Attack:
  """Fall of Empires / inner product manipulation: every Byzantine row is (1 - eta) s.

  That is s + eta * a with a = -s. eta = 0.1 is Xie et al.'s small-epsilon setting
  (the one Karimireddy et al.'s code uses for IPM); ByzFL's default corresponds to
  eta = 3 (it sends -tau * s with tau = 2); eta = 2 is sign flipping.

  Args:
    f: number of Byzantine workers.
    eta: the attack factor (any finite real).

  Returns:
    The Attack.

  References:
    Xie, Koyejo, Gupta. Fall of Empires: Breaking Byzantine-tolerant SGD by Inner
    Product Manipulation. UAI 2019; Allouah et al., Fixing by Mixing, Appendix 14.3.
  """
  eta = _check_real("eta", eta, what="foe")
  return _simple_attack("foe", f, lambda x, h: (1.0 - eta) * _honest_mean(x, h))


@_register("alie")
def alie(*, f: int, eta: Optional[float] = None, ddof: int = 1) -> Attack:
  """A Little Is Enough: every Byzantine row is s + eta * sigma.

  sigma is the coordinate-wise std of the honest rows (divisor n - f - ddof). By
  default eta is Baruch et al.'s z_max computed from (n, f) when the state is built
  (``baruch_z_max``: s = floor(n/2 + 1) - f, z_max = Phi^{-1}((n - s)/n); 0.541 for
  n = 17, f = 4). Note: Karimireddy et al.'s code uses Phi^{-1}((n - f - s)/(n - f))
  and sends s - z sigma; pass ``eta=`` for such variants (ByzFL's default is 1.5).

  Args:
    f: number of Byzantine workers.
    eta: fixed attack factor (any finite real), or None for Baruch's z_max.
    ddof: delta degrees of freedom of sigma (1: unbiased, as ByzFL; 0: population).

  Returns:
    The Attack.

  References:
    Baruch, Baruch, Goldberg. A Little Is Enough. NeurIPS 2019; Allouah et al.,
    Fixing by Mixing (AISTATS 2023), Appendix 14.3.
  """
  if eta is not None:
    eta = _check_real("eta", eta, what="alie")
  ddof = _check_int("ddof", ddof, low=0, what="alie: ")
  name = "alie"

  def init(x_like: Any, *, key: Key) -> KeyState:
    n, _ = _shape_nd(x_like, name)
    _check_honest(name, n, f, ddof + 1)
    if eta is None and f > 0:
      baruch_z_max(n, f)  # fail early
    return KeyState(key=key)

  def update(x: Array, state: KeyState, *, aggregate: Optional[Defence] = None):
    del aggregate
    n, _ = _shape_nd(x, name)
    h = _check_honest(name, n, f, ddof + 1)
    if f == 0:
      return x, state
    factor = baruch_z_max(n, f) if eta is None else eta
    s = _honest_mean(x, h)
    return _keep_honest(x, s + factor * _honest_std(x, s, h, ddof), f), state

  return Attack(init=init, update=update, name=name, flips_labels=False)


def _eta_grid(name: str, etas: Optional[Sequence[float]], eta_min: float,
              eta_max: float, num_etas: int) -> np.ndarray:
  """Validates and returns the candidate etas as a float32 numpy vector."""
  if etas is not None:
    grid = np.asarray(etas, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 1 or not np.all(np.isfinite(grid)):
      raise ValueError(f"{name}: etas must be a non-empty 1-D sequence of finite "
                       f"reals, got {etas!r}")
    return grid.astype(np.float32)
  eta_min = _check_real("eta_min", eta_min, what=name)
  eta_max = _check_real("eta_max", eta_max, what=name)
  num_etas = _check_int("num_etas", num_etas, low=2, what=f"{name}: ")
  if not 0.0 <= eta_min < eta_max:
    raise ValueError(f"{name}: the eta range needs 0 <= eta_min < eta_max, got "
                     f"eta_min={eta_min}, eta_max={eta_max}")
  return np.linspace(eta_min, eta_max, num_etas).astype(np.float32)


# Candidates whose damage is within this relative tolerance of the best count as ties.
_TIE_RTOL = 1e-5


def _check_batch_size(name: str, batch_size: Optional[int]) -> Optional[int]:
  if batch_size is None:
    return None
  return _check_int("batch_size", batch_size, low=1, what=f"{name}: ")


def line_maximize(scape: Callable[[Array], Array], *, evals: int = 16,
                  start: float = 0.0, delta: float = 1.0,
                  ratio: float = 0.8) -> Tuple[Array, Array]:
  """Greedy line search for a maximizer of ``scape`` over eta >= 0, jittable.

  The procedure of the authors' group (``tools.line_maximize`` of
  LPD-EPFL/ByzantineMomentum and robust-collaborative-learning), with every
  evaluation inside one ``lax.fori_loop``:

    best = start; evaluate it
    expansion: propose best + delta; if it is better (strictly), take it and
      double delta; else multiply delta by ``ratio`` and contract
    contraction: from the last proposal p, propose p + delta if p < best, else
      p - delta (halved towards p while negative); take it if strictly better;
      multiply delta by ``ratio``

  until ``evals`` evaluations are spent. A NaN value is never better (as in
  the reference, whose comparisons are false for NaN).

  Args:
    scape: eta (a float32 scalar) -> a real scalar, traceable.
    evals: number of evaluations (>= 1).
    start: first point (>= 0).
    delta: first step (> 0).
    ratio: contraction factor, in (0.5, 1).

  Returns:
    ``(best_eta, best_value)``, float32 scalars.
  """
  x0 = jnp.asarray(start, jnp.float32)
  y0 = jnp.asarray(scape(x0), jnp.float32)

  def body(_, carry):
    best_x, best_y, prop_x, step, expanding = carry
    back = jax.lax.while_loop(lambda x: x < 0, lambda x: (x + prop_x) / 2,
                              prop_x - step)
    x = jnp.where(expanding, best_x + step,
                  jnp.where(prop_x < best_x, prop_x + step, back))
    y = jnp.asarray(scape(x), jnp.float32)
    better = y > best_y
    step = jnp.where(expanding & better, step * 2, step * ratio)
    return (jnp.where(better, x, best_x), jnp.where(better, y, best_y), x,
            step, expanding & better)

  carry = (x0, y0, x0, jnp.asarray(delta, jnp.float32), jnp.asarray(True))
  best_x, best_y, *_ = jax.lax.fori_loop(0, evals - 1, body, carry)
  return best_x, best_y


def _check_line_search(name: str, evals: int, start: float, delta: float,
                       ratio: float) -> Tuple[int, float, float, float]:
  evals = _check_int("evals", evals, low=1, what=f"{name}: ")
  start = _check_real("start", start, what=name)
  delta = _check_real("delta", delta, what=name)
  ratio = _check_real("ratio", ratio, what=name)
  if start < 0:
    raise ValueError(f"{name}: start must be >= 0 (eta >= 0), got start={start}")
  if delta <= 0:
    raise ValueError(f"{name}: delta must be > 0, got delta={delta}")
  if not 0.5 < ratio < 1.0:
    raise ValueError(f"{name}: ratio must be in (0.5, 1), got ratio={ratio}")
  return evals, start, delta, ratio


def _candidate_rows(x: Array, s: Array, a: Array, h: int, f: int):
  """The candidate inputs as lazy mixtures of h + 2 base rows.

  Base rows: the h honest rows, s and s + a. Candidate eta keeps the honest
  rows and sets every Byzantine row to (1 - eta) s + eta (s + a) = s + eta a,
  an affine mixture, so a rule run on ``base.mixed(mix(eta))`` sees the
  distances of the base rows, computed once for all candidates.
  """
  base = Rows(jnp.concatenate([x[:h], s[None], (s + a)[None]], axis=0))
  base.dist(), base.sq_norms(), base.bad()  # outside the search: shared
  honest = np.zeros((h, h + 2), np.float32)
  honest[:, :h] = np.eye(h)

  def rows(eta: Array) -> Rows:
    byz = jnp.zeros((f, h + 2), base.cdtype).at[:, h].set(1.0 - eta).at[:, h + 1].set(eta)
    return base.mixed(jnp.concatenate([jnp.asarray(honest, base.cdtype), byz]))

  return rows


def _simulated_defence(name: str, aggregate: Any, key: Key,
                       knows_server_randomness: bool):
  """The defence as the attacker simulates it, and whether it takes ``Rows``.

  A ``Composed`` rule or a ``Defence`` is re-keyed with the attacker's own
  ``key`` (its simulation of bucketing draws its own permutation), unless
  ``knows_server_randomness``; any other callable is used as it is.
  """
  if isinstance(aggregate, Composed):
    aggregate = aggregate.bind(key)
  if isinstance(aggregate, Defence):
    return (aggregate if knows_server_randomness else aggregate.with_key(key)), True
  if aggregate is None or not callable(aggregate):
    raise ValueError(
        f"{name} simulates the server's defence: pass update(..., aggregate=rule) "
        f"with rule a byzjax Defence or a pure function (n, d) -> (d,), got "
        f"aggregate={aggregate!r}")
  return aggregate, False


def _optimized_attack(name: str, f: int, search: Callable[..., Array],
                      direction: Callable[[Array, Array, int], Array],
                      min_honest: int, knows_server_randomness: bool) -> Attack:
  """Byzantine rows s + eta * a, eta chosen by ``search`` to do the most damage.

  ``search(damage, squared)`` gets ``damage(eta, squared)`` = ||defence(x_eta) -
  s||_2 (or its square) and returns the chosen eta.
  """

  def init(x_like: Any, *, key: Key) -> OptimizedState:
    n, _ = _shape_nd(x_like, name)
    _check_honest(name, n, f, min_honest)
    return OptimizedState(key=key, eta=jnp.zeros((), jnp.float32))

  def update(x: Array, state: OptimizedState, *, aggregate: Any = None):
    key, own = jax.random.split(state.key)
    defence, takes_rows = _simulated_defence(name, aggregate, own,
                                             knows_server_randomness)
    n, _ = _shape_nd(x, name)
    h = _check_honest(name, n, f, min_honest)
    if f == 0:
      return x, state
    s = _honest_mean(x, h)
    a = direction(x, s, h)
    if takes_rows:  # a byzjax rule: shared base distances
      candidate = _candidate_rows(x, s, a, h, f)
      evaluate = lambda eta: defence.run_rows(candidate(eta))
    else:
      evaluate = lambda eta: defence(_keep_honest(x, s + eta.astype(x.dtype) * a, f))

    def damage(eta: Array, squared: bool = False) -> Array:
      sq = _sum_of_squares((evaluate(eta) - s).astype(jnp.float32))
      return sq if squared else jnp.sqrt(sq)

    best = search(damage)
    x_new = _keep_honest(x, s + best.astype(x.dtype) * a, f)
    return x_new, OptimizedState(key=key, eta=best)

  return Attack(init=init, update=update, name=name, flips_labels=False)


def _greedy_search(evals: int, start: float, delta: float, ratio: float):
  """``line_maximize`` of the squared damage, as the authors' code measures it."""

  def search(damage):
    best, _ = line_maximize(lambda eta: damage(eta, squared=True), evals=evals,
                            start=start, delta=delta, ratio=ratio)
    return best

  return search


def _grid_search(grid: np.ndarray, batch_size: Optional[int]):
  """The candidate of largest damage (first within ``_TIE_RTOL`` of the best)."""
  etas = jnp.asarray(grid)

  def search(damage):
    per_step = batch_size if batch_size is not None else (
        1 if jax.default_backend() == "cpu" else len(grid))
    if per_step >= len(grid):
      dist = jax.vmap(damage)(etas)  # all candidates in one vectorized call
    else:
      dist = jax.lax.map(damage, etas, batch_size=per_step)
    # A candidate that makes the defence output NaN does maximal damage.
    dist = jnp.where(jnp.isnan(dist), jnp.inf, dist)
    # The first candidate within float32 rounding of the maximum: damage is often
    # flat in eta (e.g. once a rule discards the Byzantine rows), and the rounding of
    # equal values depends on how XLA fused the program (jit or not).
    near_max = dist >= jnp.max(dist) * (1.0 - _TIE_RTOL)
    return etas[jnp.argmax(near_max)]

  return search


def _alie_direction(ddof: int) -> Callable[[Array, Array, int], Array]:
  return lambda x, s, h: _honest_std(x, s, h, ddof)


def _foe_direction(x: Array, s: Array, h: int) -> Array:
  del x, h
  return -s


_OPTIMIZED_DOC = """
  Omniscient: the attacker knows the honest vectors and the defence, not the
  server's random draws. Its simulation of a randomized defence (bucketing)
  draws its own randomness from the attack's key, split at every update, as
  the authors' code and ByzFL do; ``knows_server_randomness=True`` gives it the
  server's key of the round instead (a stronger, unrealistic attacker that
  knows the exact bucket assignment). The chosen eta is kept in ``state.eta``
  (0 before the first update). Against a byzjax rule (a ``Composed`` or a
  ``Defence``) the candidates are evaluated on lazy mixtures of the honest
  rows, s and s + a, so that the rule's distances are computed once.
"""


@_register("optimized_alie")
def optimized_alie(*, f: int, evals: int = 16, start: float = 0.0,
                   delta: float = 1.0, ratio: float = 0.8, ddof: int = 1,
                   knows_server_randomness: bool = False) -> Attack:
  """ALIE with eta chosen greedily each step, as in the paper: rows s + eta sigma.

  eta >= 0 maximizes ||aggregate(x_eta) - s||_2, x_eta being x with every
  Byzantine row set to s + eta sigma, by the authors' greedy line search
  (``line_maximize``: start 0, step 1 doubled while the damage grows, then
  contraction by 0.8 around the best point, 16 evaluations; Appendix 14.3:
  "determined greedily by linearly searching"). ``optimized_alie_grid`` takes
  the best of a fixed grid instead, a stronger attack.
  {doc}
  Args:
    f: number of Byzantine workers.
    evals: number of evaluations of the defence (>= 1).
    start: first eta (>= 0).
    delta: first step (> 0).
    ratio: contraction factor, in (0.5, 1).
    ddof: delta degrees of freedom of sigma.
    knows_server_randomness: simulate the defence with the server's key.

  Returns:
    The Attack; its update requires ``aggregate=``.

  References:
    Allouah et al., Fixing by Mixing (AISTATS 2023), Appendix 14.3; Baruch et al.,
    A Little Is Enough (NeurIPS 2019); LPD-EPFL/ByzantineMomentum,
    ``attacks/identical.py`` and ``tools.line_maximize``.
  """
  name = "optimized_alie"
  ddof = _check_int("ddof", ddof, low=0, what=f"{name}: ")
  search = _greedy_search(*_check_line_search(name, evals, start, delta, ratio))
  return _optimized_attack(name, f, search, _alie_direction(ddof), ddof + 1,
                           _check_bool("knows_server_randomness",
                                       knows_server_randomness, what=name))


@_register("optimized_foe")
def optimized_foe(*, f: int, evals: int = 16, start: float = 0.0,
                  delta: float = 1.0, ratio: float = 0.8,
                  knows_server_randomness: bool = False) -> Attack:
  """FOE with eta chosen greedily each step, as in the paper: rows (1 - eta) s.

  The greedy line search of ``optimized_alie`` over eta >= 0 with a = -s (the
  authors' ``empire`` direction of ``attacks/identical.py``: eta = 1 is the
  zero vector, eta = 2 sign flipping). ``optimized_foe_grid`` takes the best
  of a fixed grid instead.
  {doc}
  Args:
    f: number of Byzantine workers.
    evals: number of evaluations of the defence (>= 1).
    start: first eta (>= 0).
    delta: first step (> 0).
    ratio: contraction factor, in (0.5, 1).
    knows_server_randomness: simulate the defence with the server's key.

  Returns:
    The Attack; its update requires ``aggregate=``.

  References:
    Allouah et al., Fixing by Mixing (AISTATS 2023), Appendix 14.3; Xie et al., Fall
    of Empires (UAI 2019).
  """
  name = "optimized_foe"
  search = _greedy_search(*_check_line_search(name, evals, start, delta, ratio))
  return _optimized_attack(name, f, search, _foe_direction, 1,
                           _check_bool("knows_server_randomness",
                                       knows_server_randomness, what=name))


@_register("optimized_alie_grid")
def optimized_alie_grid(*, f: int, eta_min: float = 0.0, eta_max: float = 10.0,
                        num_etas: int = 21, etas: Optional[Sequence[float]] = None,
                        ddof: int = 1, batch_size: Optional[int] = None,
                        knows_server_randomness: bool = False) -> Attack:
  """ALIE with eta the best of a fixed grid each step: rows s + eta* sigma.

  eta* maximizes ||aggregate(x_eta) - s||_2 over every candidate (a global
  search, stronger than the paper's greedy ``optimized_alie``). The default
  grid, 21 values evenly spaced in [0, 10] (step 0.5), contains Baruch's z_max
  region and resolves the small etas that hurt robust rules most. All
  candidates are evaluated in one jitted call: ``batch_size=b`` maps over them b
  at a time (``jax.lax.map``; b >= num_etas is one ``jax.vmap``, holding
  num_etas copies of the (n, d) matrix); the default (None) is one ``jax.vmap``
  on accelerators and one candidate at a time on the CPU, where it was faster
  (benchmarks/results). Ties (damage within a relative 1e-5 of the best, float32
  rounding) go to the first listed candidate; a candidate for which the defence
  returns NaN counts as maximal damage; against a rule whose damage grows
  without bound in eta (the mean) the search picks eta_max.
  {doc}
  Args:
    f: number of Byzantine workers.
    eta_min: smallest candidate (>= 0, as eta >= 0 in the paper).
    eta_max: largest candidate (> eta_min).
    num_etas: number of evenly spaced candidates (>= 2).
    etas: explicit candidates instead of the even grid (any finite reals).
    ddof: delta degrees of freedom of sigma.
    batch_size: candidates per map step (None: all at once on accelerators, one
      at a time on the CPU).
    knows_server_randomness: simulate the defence with the server's key.

  Returns:
    The Attack; its update requires ``aggregate=``.

  References:
    Allouah et al., Fixing by Mixing (AISTATS 2023), Appendix 14.3; Baruch et al.,
    A Little Is Enough (NeurIPS 2019).
  """
  name = "optimized_alie_grid"
  ddof = _check_int("ddof", ddof, low=0, what=f"{name}: ")
  grid = _eta_grid(name, etas, eta_min, eta_max, num_etas)
  search = _grid_search(grid, _check_batch_size(name, batch_size))
  return _optimized_attack(name, f, search, _alie_direction(ddof), ddof + 1,
                           _check_bool("knows_server_randomness",
                                       knows_server_randomness, what=name))


@_register("optimized_foe_grid")
def optimized_foe_grid(*, f: int, eta_min: float = 0.0, eta_max: float = 10.0,
                       num_etas: int = 21, etas: Optional[Sequence[float]] = None,
                       batch_size: Optional[int] = None,
                       knows_server_randomness: bool = False) -> Attack:
  """FOE with eta the best of a fixed grid each step: rows (1 - eta*) s.

  See ``optimized_alie_grid`` for the search, ties, NaN, memory and
  ``batch_size``. The default grid, 21 values evenly spaced in [0, 10],
  contains eta = 1 (the zero vector) and eta = 2 (sign flipping); ByzFL's
  ``Optimal_InnerProductManipulation`` sends -tau s, i.e. eta = 1 + tau.
  {doc}
  Args:
    f: number of Byzantine workers.
    eta_min: smallest candidate (>= 0).
    eta_max: largest candidate (> eta_min).
    num_etas: number of evenly spaced candidates (>= 2).
    etas: explicit candidates instead of the even grid (any finite reals).
    batch_size: candidates per map step (None: all at once on accelerators, one
      at a time on the CPU).
    knows_server_randomness: simulate the defence with the server's key.

  Returns:
    The Attack; its update requires ``aggregate=``.

  References:
    Allouah et al., Fixing by Mixing (AISTATS 2023), Appendix 14.3; Xie et al., Fall
    of Empires (UAI 2019).
  """
  name = "optimized_foe_grid"
  grid = _eta_grid(name, etas, eta_min, eta_max, num_etas)
  search = _grid_search(grid, _check_batch_size(name, batch_size))
  return _optimized_attack(name, f, search, _foe_direction, 1,
                           _check_bool("knows_server_randomness",
                                       knows_server_randomness, what=name))


for _builder in (optimized_alie, optimized_foe, optimized_alie_grid,
                 optimized_foe_grid):
  _builder.__doc__ = _builder.__doc__.replace("{doc}", _OPTIMIZED_DOC)
del _builder

# ---------------------------------------------------------------------------
# Label flipping and mimic.


@_register("label_flip")
def label_flip(*, f: int, momentum: bool = False) -> Attack:
  """Label flipping: the Byzantine rows are gradients computed on labels C - 1 - l.

  The flipping happens in the training step (``flips_labels=True`` tells it to feed
  the Byzantine workers ``flip_labels(labels, C)``), so this update is the identity
  on x: the only attack that does not rewrite the Byzantine rows. Without data of
  their own, the Byzantine workers send the mean of the honest workers' gradients
  on their flipped batches (the authors' ``labelflipping`` attack).

  Two readings of "the Byzantine workers send flipped-label gradients" under D-SHB:

  * ``momentum=False`` (default; the authors' code, LPD-EPFL, and ByzFL): each
    flipped gradient gets the l2 term and the clipping of an honest gradient, and
    the Byzantine workers send their mean as it is, while the honest workers send
    momentums;
  * ``momentum=True``: the Byzantine workers run the worker pipeline on the mean
    flipped gradient (l2, clipping, heavy-ball momentum), i.e. D-SHB on flipped
    labels.

  Under D-SGD and D-GD (no momentum) they differ only in the order of clipping and
  averaging.

  Args:
    f: number of Byzantine workers.
    momentum: pass the flipped gradients through the worker momentum.

  Returns:
    The Attack.

  References:
    Allouah et al., Fixing by Mixing (AISTATS 2023), Appendix 14.3 (LF); Gupta et al.,
    CGE, Section 3.3; LPD-EPFL/robust-collaborative-learning, ``attacks/labelflipping.py``.
  """
  name = "label_flip"

  def update(x: Array, state: KeyState, *, aggregate: Any = None):
    del aggregate
    n, _ = _shape_nd(x, name)
    _check_honest(name, n, f)
    return x, state

  return Attack(init=_key_init(name, f), update=update, name=name, flips_labels=True,
                bypasses_momentum=not _check_bool("momentum", momentum, what=name))


@_register("mimic_fixed")
def mimic_fixed(*, f: int, index: int = 0) -> Attack:
  """Mimic a fixed honest worker: every Byzantine row copies honest row ``index``.

  Args:
    f: number of Byzantine workers.
    index: the honest row to copy, in [0, n - f) (ByzFL's ``epsilon``, default 0).

  Returns:
    The Attack.

  References:
    Karimireddy, He, Jaggi. Byzantine-Robust Learning on Heterogeneous Datasets via
    Bucketing. ICLR 2022.
  """
  name = "mimic_fixed"
  index = _check_int("index", index, low=0, what=f"{name}: ")

  def check(n: int) -> None:
    if index >= n - f:
      raise ValueError(f"{name}: index must be an honest row in [0, n - f) = "
                       f"[0, {n - f}), got index={index}")

  def init(x_like: Any, *, key: Key) -> KeyState:
    n, _ = _shape_nd(x_like, name)
    _check_honest(name, n, f)
    check(n)
    return KeyState(key=key)

  def update(x: Array, state: KeyState, *, aggregate: Optional[Defence] = None):
    del aggregate
    n, _ = _shape_nd(x, name)
    _check_honest(name, n, f)
    check(n)
    if f == 0:
      return x, state
    return _keep_honest(x, x[index], f), state

  return Attack(init=init, update=update, name=name, flips_labels=False)


def _unit(v: Array, fallback: Array) -> Array:
  """v / ||v||, or ``fallback`` where v is zero (or not finite)."""
  norm = jnp.sqrt(_sum_of_squares(v))
  ok = jnp.isfinite(norm) & (norm > 0)
  return jnp.where(ok, v / jnp.where(ok, norm, 1.0), fallback)


@_register("mimic")
def mimic(*, f: int, warmup: int = 100, absolute: bool = False) -> Attack:
  """Mimic with the heuristic of Karimireddy et al.: copy the most "extreme" worker.

  All Byzantine rows copy one honest row x_{i*}. During a warm-up of ``warmup``
  updates (t = 0, ..., warmup - 1) the attackers estimate the direction z of maximal
  variance of the honest vectors by an online power iteration, and copy the honest
  row with the largest projection on z:

    mu_t = t/(t+1) mu_{t-1} + 1/(t+1) s_t                   (s_t: honest mean)
    c_t  = sum_{i honest} <x_i - mu_t, z_{t-1}> (x_i - mu_t)
    z_t  = normalize(t/(t+1) z_{t-1} + 1/(t+1) c_t / ||c_t||)
    i*_t = argmax_{i honest} <x_i, z_t>      (|<x_i, z_t>| with ``absolute=True``)

  z_{-1} is a standard normal draw from the init key, so z_0 = c_0 / ||c_0|| (one
  power-iteration step from a random start). After the warm-up, mu and z are frozen
  and the attackers keep copying the last target i*_{warmup-1}. This follows the
  authors' code (``MimicVariantAttacker``, epfml/byzantine-robust-noniid-optimizer).
  The default warm-up of 100 steps is the ``--mimic-learning-phase`` default of the
  EPFL group's code (LPD-EPFL/robust-collaborative-learning, by an author of Fixing by
  Mixing); Karimireddy et al.'s code defaults to 1 and ByzFL's example uses 20.
  (ByzFL and the LPD code instead copy honest worker 0 during the learning phase and
  then re-pick argmax |<x_i, z>| at every step; the LPD code also weights the power
  step by |<x_i - mu, z>|.)

  Args:
    f: number of Byzantine workers.
    warmup: number of warm-up updates (>= 1).
    absolute: rank honest rows by |<x_i, z>| instead of <x_i, z>.

  Returns:
    The Attack; ``state.target`` is the mimicked honest row.

  References:
    Karimireddy, He, Jaggi. Byzantine-Robust Learning on Heterogeneous Datasets via
    Bucketing. ICLR 2022 (mimic attack); Allouah et al., Fixing by Mixing, App. 14.3.
  """
  name = "mimic"
  warmup = _check_int("warmup", warmup, low=1, what=f"{name}: ")
  absolute = bool(absolute)

  def init(x_like: Any, *, key: Key) -> MimicState:
    n, d = _shape_nd(x_like, name)
    _check_honest(name, n, f)
    dtype = getattr(x_like, "dtype", jnp.float32)
    key, sub = jax.random.split(key)
    z = jax.random.normal(sub, (d,), dtype=dtype)
    return MimicState(key=key, step=jnp.zeros((), jnp.int32),
                      mu=jnp.zeros((d,), dtype), z=z,
                      target=jnp.zeros((), jnp.int32))

  def learn(x: Array, state: MimicState, h: int) -> MimicState:
    t = state.step.astype(jnp.float32)
    keep, new = (t / (t + 1)).astype(x.dtype), (1 / (t + 1)).astype(x.dtype)
    honest = x[:h]
    mu = keep * state.mu + new * _honest_mean(x, h)
    dev = honest - mu
    weights = jnp.sum(dev * state.z, axis=1)  # <x_i - mu, z_{t-1}>, shape (h,)
    c = _row_sum(dev, h, weights)
    z = _unit(keep * state.z + new * _unit(c, jnp.zeros_like(c)), state.z)
    proj = jnp.sum(honest * z, axis=1)
    target = jnp.argmax(jnp.abs(proj) if absolute else proj).astype(jnp.int32)
    return state._replace(mu=mu, z=z, target=target)

  def update(x: Array, state: MimicState, *, aggregate: Optional[Defence] = None):
    del aggregate
    n, _ = _shape_nd(x, name)
    h = _check_honest(name, n, f)
    if f == 0:
      return x, state
    state = jax.lax.cond(state.step < warmup, lambda st: learn(x, st, h),
                         lambda st: st, state)
    state = state._replace(step=state.step + 1)
    row = jax.lax.dynamic_index_in_dim(x, state.target, axis=0, keepdims=False)
    return _keep_honest(x, row, f), state

  return Attack(init=init, update=update, name=name, flips_labels=False)


# ---------------------------------------------------------------------------
# Fault types of the CGE paper (Section 3.3).


@_register("gradient_reverse")
def gradient_reverse(*, f: int, scale: float = 100.0) -> Attack:
  """Gradient reverse: each Byzantine worker sends -scale times its own vector.

  The Byzantine rows of the input hold the vectors these workers computed honestly;
  row j becomes -scale * x_j (scale = 100 in the paper).

  Args:
    f: number of Byzantine workers.
    scale: the reversal factor (finite real).

  Returns:
    The Attack.

  References:
    Gupta, Liu, Vaidya. Comparative Gradient Elimination (CGE) for Byzantine
    fault-tolerance in homogeneous distributed learning, Section 3.3.
  """
  name = "gradient_reverse"
  scale = _check_real("scale", scale, what=name)

  def update(x: Array, state: KeyState, *, aggregate: Optional[Defence] = None):
    del aggregate
    n, _ = _shape_nd(x, name)
    _check_honest(name, n, f)
    if f == 0:
      return x, state
    return _keep_honest(x, (-scale) * x[n - f:], f), state

  return Attack(init=_key_init(name, f), update=update, name=name, flips_labels=False,
                uses_own_rows=True)


@_register("coordinate_wise")
def coordinate_wise(*, f: int) -> Attack:
  """Coordinate-wise fault: per coordinate, the f-th smallest honest value.

  Every Byzantine row is y with y[l] = the f-th smallest (1-indexed, counting
  repeated values; f = 1 is the minimum) of {x_i[l] : i honest}. Needs n - f >= f.
  Computed by an unrolled min/max selection network over the honest rows (a sort
  beyond 64 honest rows); ``jnp.sort(x, 0)`` was ~40x slower on XLA:CPU.

  Args:
    f: number of Byzantine workers.

  Returns:
    The Attack.

  References:
    Gupta, Liu, Vaidya. Comparative Gradient Elimination, Section 3.3.
  """
  name = "coordinate_wise"

  def update(x: Array, state: KeyState, *, aggregate: Optional[Defence] = None):
    del aggregate
    n, _ = _shape_nd(x, name)
    h = _check_honest(name, n, f, max(f, 1))
    if f == 0:
      return x, state
    if h > _MAX_UNROLLED_ROWS:
      row = jnp.sort(x[:h], axis=0)[f - 1]
    else:
      row = _kth_smallest_rows([x[i] for i in range(h)], f)
    return _keep_honest(x, row, f), state

  return Attack(init=_key_init(name, f, max(f, 1)), update=update, name=name,
                flips_labels=False)


@_register("norm_confusing")
def norm_confusing(*, f: int) -> Attack:
  """Norm-confusing fault: own vector reversed, rescaled to an honest norm.

  Byzantine row j becomes -(r / ||x_j||) x_j, where r is the (f+1)-th largest norm
  among the honest rows (needs n - f >= f + 1). A zero own vector stays zero.

  Args:
    f: number of Byzantine workers.

  Returns:
    The Attack.

  References:
    Gupta, Liu, Vaidya. Comparative Gradient Elimination, Section 3.3.
  """
  name = "norm_confusing"

  def update(x: Array, state: KeyState, *, aggregate: Optional[Defence] = None):
    del aggregate
    n, _ = _shape_nd(x, name)
    h = _check_honest(name, n, f, f + 1)
    if f == 0:
      return x, state
    norms = jnp.sqrt(jnp.sum(jnp.square(x), axis=1))  # (n,), reduction along d
    r = jnp.sort(norms[:h])[h - 1 - f]  # (f+1)-th largest honest norm
    own = norms[h:, None]
    factor = jnp.where(own > 0, -r / jnp.where(own > 0, own, 1.0), 0.0)
    return _keep_honest(x, factor.astype(x.dtype) * x[h:], f), state

  return Attack(init=_key_init(name, f, f + 1), update=update, name=name,
                flips_labels=False, uses_own_rows=True)


@_register("gaussian")
def gaussian(*, f: int, std: float = 200.0, mean: float = 0.0) -> Attack:
  """Random fault: each Byzantine row is an independent draw of N(mean, std^2 I).

  The state key is split at every update (one fresh subkey per step, never reused).

  Args:
    f: number of Byzantine workers.
    std: the standard deviation (>= 0; 200 in the paper).
    mean: the mean of every coordinate (0 in the paper).

  Returns:
    The Attack.

  References:
    Gupta, Liu, Vaidya. Comparative Gradient Elimination, Section 3.3 (random faults).
  """
  name = "gaussian"
  std = _check_real("std", std, what=name)
  mean = _check_real("mean", mean, what=name)
  if std < 0:
    raise ValueError(f"{name}: std must be >= 0, got std={std}")

  def update(x: Array, state: KeyState, *, aggregate: Optional[Defence] = None):
    del aggregate
    n, d = _shape_nd(x, name)
    _check_honest(name, n, f)
    if f == 0:
      return x, state
    key, sub = jax.random.split(state.key)
    noise = mean + std * jax.random.normal(sub, (f, d), dtype=x.dtype)
    return _keep_honest(x, noise, f), KeyState(key=key)

  return Attack(init=_key_init(name, f), update=update, name=name, flips_labels=False)


# ---------------------------------------------------------------------------
# Non-finite rows, to test the rules' claims (DESIGN section 3).


def _constant_attack(name: str, value: float) -> Callable[..., Attack]:
  def build(*, f: int) -> Attack:
    return _simple_attack(name, f, lambda x, h: jnp.full((x.shape[1],), value, x.dtype))

  build.__name__ = name
  build.__doc__ = f"""Every Byzantine row is filled with {value!r}.

  Tests the claim that a robust rule stays finite with at most f non-finite rows.

  Args:
    f: number of Byzantine workers.

  Returns:
    The Attack.

  References:
    ByzFL (Inf attack); byzjax DESIGN section 3.
  """
  return build


inf = _register("inf")(_constant_attack("inf", float("inf")))
neg_inf = _register("neg_inf")(_constant_attack("neg_inf", float("-inf")))
nan = _register("nan")(_constant_attack("nan", float("nan")))


# ---------------------------------------------------------------------------
# Registry access.


def get(name: str) -> Callable[..., Attack]:
  """The builder registered as ``name`` (call it as ``builder(f=..., **hyper)``).

  Raises:
    ValueError: listing the valid names when ``name`` is unknown.
  """
  return _REGISTRY.get(name)


def names() -> list:
  """The registered attack names, sorted."""
  return _REGISTRY.names()


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
  builder = get(name)
  _check_int("f", f, low=0, what=f"attack {name!r}: ")
  params = inspect.signature(builder).parameters
  valid = [p for p in params if p != "f"]
  unknown = sorted(set(hyper) - set(valid))
  if unknown:
    raise ValueError(f"attack {name!r} got unknown hyperparameter(s) {unknown}; "
                     f"valid: {valid or 'none'}")
  return builder(f=f, **hyper)


__all__ = [
    "Attack", "AttackState", "KeyState", "OptimizedState", "MimicState",
    "baruch_z_max", "flip_labels", "get", "names", "make",
    "line_maximize", "sign_flip", "foe", "alie", "optimized_alie", "optimized_foe",
    "optimized_alie_grid", "optimized_foe_grid", "label_flip",
    "mimic", "mimic_fixed", "gradient_reverse", "coordinate_wise", "norm_confusing",
    "gaussian", "inf", "neg_inf", "nan",
]
