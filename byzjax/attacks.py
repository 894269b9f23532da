"""Byzantine attacks as optax-style transformations over the stacked worker vectors.

An attack acts on the (n, d) matrix whose rows are the vectors the n workers send
(the training step ravels each worker's update, gradient or momentum, into one row).
The honest workers are the first ``n - f`` rows and the Byzantine workers the last
``f`` rows. Every attack leaves the honest rows untouched (bitwise) and replaces the
Byzantine rows; with ``f = 0`` it returns ``x`` unchanged. An attack declares what
the training round must put in the Byzantine rows before its update (``inputs``:
nothing, the gradients those workers computed honestly, or gradients on flipped
labels) and whether those rows pass through the worker momentum; the round knows no
attack by name. A user's own attack registers with the ``attack`` decorator.

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
identity on ``x`` because it asks for ``inputs="flipped_gradients"``: its Byzantine
rows arrive computed on labels ``C - 1 - l``.

The honest statistics are unrolled row adds and the order statistic of
``coordinate_wise`` an unrolled selection network over rows: reductions and sorts over
the short worker axis are slow on XLA:CPU (``benchmarks/results/xla_cpu_notes.md``).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from byzjax import checks
from byzjax.kernels import MAX_UNROLLED_ROWS as _MAX_UNROLLED_ROWS
from byzjax.kernels import row_sum as _row_sum
from byzjax.kernels import sum_of_squares as _sum_of_squares
# The attack API and the optimized attacks, re-exported: the catalogue's face.
from byzjax.attack import (ATTACKS, INPUTS, Attack, AttackBuilder,  # noqa: F401
                           AttackState, KeyState, attack, check_honest, get,
                           honest_mean, honest_std, keep_honest, key_init, make,
                           names, shape_nd, simple_attack)
from byzjax.optimized_attacks import (OptimizedState, line_maximize,  # noqa: F401
                                      optimized_alie, optimized_alie_grid,
                                      optimized_foe, optimized_foe_grid)
from byzjax.tailored_attacks import (ScaleState, fang_krum,  # noqa: F401
                                     fang_trimmed_mean, min_max, min_sum)
from byzjax.gradient_attacks import AscentState, gradient_ascent  # noqa: F401
from byzjax.types import Array, Key


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


@attack("sign_flip", display="SF")
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
  return simple_attack("sign_flip", f, lambda x, h: -honest_mean(x, h))


@attack("foe", display="FOE (fixed)")
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
  eta = checks.check_real("eta", eta, what="foe")
  return simple_attack("foe", f, lambda x, h: (1.0 - eta) * honest_mean(x, h))


@attack("alie", display="ALIE (fixed)")
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
    eta = checks.check_real("eta", eta, what="alie")
  ddof = checks.check_int("ddof", ddof, low=0, what="alie: ")
  name = "alie"

  def init(x_like: Any, *, key: Key) -> KeyState:
    n, _ = shape_nd(x_like, name)
    check_honest(name, n, f, ddof + 1)
    if eta is None and f > 0:
      baruch_z_max(n, f)  # fail early
    return KeyState(key=key)

  def update(x: Array, state: KeyState, *, aggregate: Any = None):
    del aggregate
    n, _ = shape_nd(x, name)
    h = check_honest(name, n, f, ddof + 1)
    if f == 0:
      return x, state
    factor = baruch_z_max(n, f) if eta is None else eta
    s = honest_mean(x, h)
    return keep_honest(x, s + factor * honest_std(x, s, h, ddof), f), state

  return Attack(init=init, update=update, name=name)


# ---------------------------------------------------------------------------
# Label flipping and mimic.


@attack("label_flip", display="LF")
def label_flip(*, f: int, momentum: bool = False) -> Attack:
  """Label flipping: the Byzantine rows are gradients computed on labels C - 1 - l.

  The flipping happens in the training step (``inputs="flipped_gradients"`` asks it
  to feed the Byzantine workers labels ``C - 1 - l``), so this update is the identity
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
    n, _ = shape_nd(x, name)
    check_honest(name, n, f)
    return x, state

  return Attack(init=key_init(name, f), update=update, name=name,
                inputs="flipped_gradients",
                momentum=checks.check_bool("momentum", momentum, what=name))


@attack("mimic_fixed", display="Mimic (fixed)")
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
  index = checks.check_int("index", index, low=0, what=f"{name}: ")

  def check(n: int) -> None:
    if index >= n - f:
      raise ValueError(f"{name}: index must be an honest row in [0, n - f) = "
                       f"[0, {n - f}), got index={index}")

  def init(x_like: Any, *, key: Key) -> KeyState:
    n, _ = shape_nd(x_like, name)
    check_honest(name, n, f)
    check(n)
    return KeyState(key=key)

  def update(x: Array, state: KeyState, *, aggregate: Any = None):
    del aggregate
    n, _ = shape_nd(x, name)
    check_honest(name, n, f)
    check(n)
    if f == 0:
      return x, state
    return keep_honest(x, x[index], f), state

  return Attack(init=init, update=update, name=name)


def _unit(v: Array, fallback: Array) -> Array:
  """v / ||v||, or ``fallback`` where v is zero (or not finite)."""
  norm = jnp.sqrt(_sum_of_squares(v))
  ok = jnp.isfinite(norm) & (norm > 0)
  return jnp.where(ok, v / jnp.where(ok, norm, 1.0), fallback)


@attack("mimic", display="Mimic")
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
  warmup = checks.check_int("warmup", warmup, low=1, what=f"{name}: ")
  absolute = bool(absolute)

  def init(x_like: Any, *, key: Key) -> MimicState:
    n, d = shape_nd(x_like, name)
    check_honest(name, n, f)
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
    mu = keep * state.mu + new * honest_mean(x, h)
    dev = honest - mu
    weights = jnp.sum(dev * state.z, axis=1)  # <x_i - mu, z_{t-1}>, shape (h,)
    c = _row_sum(dev, h, weights)
    z = _unit(keep * state.z + new * _unit(c, jnp.zeros_like(c)), state.z)
    proj = jnp.sum(honest * z, axis=1)
    target = jnp.argmax(jnp.abs(proj) if absolute else proj).astype(jnp.int32)
    return state._replace(mu=mu, z=z, target=target)

  def update(x: Array, state: MimicState, *, aggregate: Any = None):
    del aggregate
    n, _ = shape_nd(x, name)
    h = check_honest(name, n, f)
    if f == 0:
      return x, state
    state = jax.lax.cond(state.step < warmup, lambda st: learn(x, st, h),
                         lambda st: st, state)
    state = state._replace(step=state.step + 1)
    row = jax.lax.dynamic_index_in_dim(x, state.target, axis=0, keepdims=False)
    return keep_honest(x, row, f), state

  return Attack(init=init, update=update, name=name)


@attack("gradient_reverse", display="Gradient reverse")
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
  scale = checks.check_real("scale", scale, what=name)

  def update(x: Array, state: KeyState, *, aggregate: Any = None):
    del aggregate
    n, _ = shape_nd(x, name)
    check_honest(name, n, f)
    if f == 0:
      return x, state
    return keep_honest(x, (-scale) * x[n - f:], f), state

  return Attack(init=key_init(name, f), update=update, name=name, inputs="gradients")


@attack("coordinate_wise", display="Coordinate-wise")
def coordinate_wise(*, f: int) -> Attack:
  """Coordinate-wise fault: per coordinate, the f-th smallest honest value.

  Every Byzantine row is y with y[l] = the f-th smallest (1-indexed, counting
  repeated values; f = 1 is the minimum) of {x_i[l] : i honest}. Needs n - f >= f.
  Computed by an unrolled min/max selection network over the honest rows (a sort
  beyond 64 honest rows), much faster than ``jnp.sort(x, 0)`` on XLA:CPU.

  Args:
    f: number of Byzantine workers.

  Returns:
    The Attack.

  References:
    Gupta, Liu, Vaidya. Comparative Gradient Elimination, Section 3.3.
  """
  name = "coordinate_wise"

  def update(x: Array, state: KeyState, *, aggregate: Any = None):
    del aggregate
    n, _ = shape_nd(x, name)
    h = check_honest(name, n, f, max(f, 1))
    if f == 0:
      return x, state
    if h > _MAX_UNROLLED_ROWS:
      row = jnp.sort(x[:h], axis=0)[f - 1]
    else:
      row = _kth_smallest_rows([x[i] for i in range(h)], f)
    return keep_honest(x, row, f), state

  return Attack(init=key_init(name, f, max(f, 1)), update=update, name=name)


@attack("norm_confusing", display="Norm-confusing")
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

  def update(x: Array, state: KeyState, *, aggregate: Any = None):
    del aggregate
    n, _ = shape_nd(x, name)
    h = check_honest(name, n, f, f + 1)
    if f == 0:
      return x, state
    norms = jnp.sqrt(jnp.sum(jnp.square(x), axis=1))  # (n,), reduction along d
    r = jnp.sort(norms[:h])[h - 1 - f]  # (f+1)-th largest honest norm
    own = norms[h:, None]
    factor = jnp.where(own > 0, -r / jnp.where(own > 0, own, 1.0), 0.0)
    return keep_honest(x, factor.astype(x.dtype) * x[h:], f), state

  return Attack(init=key_init(name, f, f + 1), update=update, name=name,
                inputs="gradients")


@attack("gaussian", display="Gaussian")
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
  std = checks.check_real("std", std, what=name)
  mean = checks.check_real("mean", mean, what=name)
  if std < 0:
    raise ValueError(f"{name}: std must be >= 0, got std={std}")

  def update(x: Array, state: KeyState, *, aggregate: Any = None):
    del aggregate
    n, d = shape_nd(x, name)
    check_honest(name, n, f)
    if f == 0:
      return x, state
    key, sub = jax.random.split(state.key)
    noise = mean + std * jax.random.normal(sub, (f, d), dtype=x.dtype)
    return keep_honest(x, noise, f), KeyState(key=key)

  return Attack(init=key_init(name, f), update=update, name=name)


def _constant_attack(name: str, value: float) -> Callable[..., Attack]:
  def build(*, f: int) -> Attack:
    return simple_attack(name, f, lambda x, h: jnp.full((x.shape[1],), value, x.dtype))

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


inf = attack("inf", display="+inf")(_constant_attack("inf", float("inf")))


neg_inf = attack("neg_inf", display="-inf")(_constant_attack("neg_inf", float("-inf")))


nan = attack("nan", display="NaN")(_constant_attack("nan", float("nan")))


__all__ = [
    "Attack", "AttackBuilder", "ATTACKS", "INPUTS", "attack", "AttackState",
    "KeyState", "OptimizedState", "MimicState", "baruch_z_max", "get", "names", "make",
    "line_maximize", "sign_flip", "foe", "alie", "optimized_alie", "optimized_foe",
    "optimized_alie_grid", "optimized_foe_grid", "label_flip",
    "mimic", "mimic_fixed", "gradient_reverse", "coordinate_wise", "norm_confusing",
    "gaussian", "inf", "neg_inf", "nan",
]
