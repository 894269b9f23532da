"""Attacks tailored to a defence: Min-Max, Min-Sum (Shejwalkar & Houmansadr)
and Fang et al.'s full-knowledge attacks on Krum and on trimmed mean / median.

Every Byzantine row is a point on a fixed direction from a reference, with the
scale searched each step:

* ``min_max`` / ``min_sum``: rows s - gamma p, p a perturbation direction (the
  unit vector of the honest mean s, its sign, or the honest rows'
  coordinate-wise std), gamma the largest value the paper's bisection finds
  for which the row stays as close to the honest rows as they are to each
  other (Min-Max: its largest distance to an honest row at most the largest
  distance between two honest rows; Min-Sum: its sum of squared distances at
  most the least such sum of an honest row).
* ``fang_krum``: rows -lambda sign(sum of the honest rows), lambda halved from
  the paper's upper bound until Krum selects a Byzantine row.
* ``fang_trimmed_mean``: per coordinate, beyond the honest extreme opposite
  to the benign direction, by a random factor in [1, b] (the attack on
  trimmed mean and median).

The searches run inside the jitted round: the bisection and the halving are
``lax.while_loop`` s over (h,)-vectors of precomputed inner products, so a
candidate scale costs O(n) (Min-Max, Min-Sum) or O(n^2) (Fang's Krum), never
a pass over the (n, d) data; the paper loops over the data at every step.

References:
  Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model
  Poisoning Attacks and Defenses for Federated Learning", NDSS 2021,
  Algorithm 1 and Section IV; the authors' code
  (vrt1shjwlkr/NDSS21-Model-Poisoning: ``our_attack_dist``,
  ``our_attack_score``). Fang, Cao, Jia, Gong, "Local Model Poisoning Attacks
  to Byzantine-Robust Federated Learning", USENIX Security 2020, Section 4.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from byzjax import checks
from byzjax.kernels import (MAX_UNROLLED_ROWS, pairwise_sq_distances,
                             row_sq_distances, row_sum, sort_scores)
from byzjax.attack import (Attack, attack, check_honest, honest_mean,
                           honest_std, keep_honest, shape_nd)
from byzjax.types import Array, Key

DEVIATIONS = ("unit_vec", "sign", "std")


class ScaleState(NamedTuple):
  """State of the attacks whose scale is searched every step.

  Attributes:
    key: the attack's key (split at every update when the attack draws).
    eta: the scale chosen at the last update (gamma or lambda; 0 before the
      first update), reported per round as ``eta``.
  """

  key: Key
  eta: Array


def _init(name: str, f: int, min_honest: int):
  def init(x_like: Any, *, key: Key) -> ScaleState:
    n, _ = shape_nd(x_like, name)
    check_honest(name, n, f, min_honest)
    return ScaleState(key=key, eta=jnp.zeros((), jnp.float32))

  return init


def _deviation(kind: str, x: Array, s: Array, h: int) -> Array:
  """The perturbation direction p of Shejwalkar & Houmansadr (Section IV)."""
  if kind == "unit_vec":
    return s / jnp.linalg.norm(s)
  if kind == "sign":
    return jnp.sign(s)
  return honest_std(x, s, h, ddof=1)  # torch.std, as the authors' code


def bisect(succeeds: Callable[[Array], Array], *, start: float = 10.0,
           tolerance: float = 1e-5) -> Array:
  """The authors' bisection for the largest scale that ``succeeds``, jittable.

  gamma = start, step = start, gamma_succ = 0; while |gamma_succ - gamma| >
  tolerance: if succeeds(gamma), gamma_succ = gamma and gamma += step / 2,
  else gamma -= step / 2; step /= 2. Returns gamma_succ (0 when no scale
  succeeded). The search covers [0, 2 start).

  Args:
    succeeds: gamma (a float32 scalar) -> bool scalar, traceable.
    start: the first scale (> 0).
    tolerance: the stopping gap (> 0).

  Returns:
    The float32 scale gamma_succ.
  """

  def body(carry):
    gamma, step, good = carry
    ok = succeeds(gamma)
    good = jnp.where(ok, gamma, good)
    gamma = jnp.where(ok, gamma + step / 2, gamma - step / 2)
    return gamma, step / 2, good

  start = jnp.asarray(start, jnp.float32)
  carry = (start, start, jnp.zeros((), jnp.float32))
  _, _, good = jax.lax.while_loop(
      lambda c: jnp.abs(c[2] - c[0]) > tolerance, body, carry)
  return good


def _check_bisection(name: str, start: float, tolerance: float):
  return (checks.check_real("start", start, low=0.0, strict=True, what=name),
          checks.check_real("tolerance", tolerance, low=0.0, strict=True,
                            what=name))


def _distance_attack(name: str, f: int, deviation: str, start: float,
                     tolerance: float, bound: str) -> Attack:
  """Min-Max (``bound="max"``) or Min-Sum (``bound="sum"``)."""

  def update(x: Array, state: ScaleState, *, aggregate: Any = None):
    del aggregate
    n, _ = shape_nd(x, name)
    h = check_honest(name, n, f, 2)
    if f == 0:
      return x, state
    xf = x.astype(jnp.float32)
    s = honest_mean(xf, h)
    p = _deviation(deviation, xf, s, h)
    honest = xf[:h]
    # ||s - gamma p - g_i||^2 = D_i + 2 gamma P_i + gamma^2 q.
    D = row_sq_distances(honest, s)
    P = (honest - s) @ p
    q = jnp.sum(p * p)
    if bound == "max":
      limit = jnp.max(pairwise_sq_distances(honest))
      succeeds = lambda g: jnp.max(D + 2 * g * P + g * g * q) <= limit
    else:
      # sum_j ||g_i - g_j||^2 = h D_i + sum_j D_j.
      limit = jnp.min(h * D + jnp.sum(D))
      succeeds = lambda g: jnp.sum(D + 2 * g * P + g * g * q) <= limit
    gamma = bisect(succeeds, start=start, tolerance=tolerance)
    return keep_honest(x, s - gamma * p, f), state._replace(eta=gamma)

  return Attack(init=_init(name, f, 2), update=update, name=name,
                metrics=lambda state: {"eta": state.eta})


_SHEJWALKAR_DOC = """
  The honest rows are the first n - f rows; s is their mean. The perturbation
  direction p is ``deviation``: "unit_vec" (s / ||s||, the paper's default),
  "sign" (sign(s)) or "std" (the honest coordinate-wise std, ddof = 1). Every
  Byzantine row is s - gamma p, gamma found by the authors' bisection
  (``bisect``: start 10, halving steps, tolerance 1e-5, so gamma < 20) on
  O(n) precomputed inner products instead of a pass over the data per step.
  The chosen gamma is reported per round as ``eta``. Agnostic of the
  defence (the paper's aggregation-agnostic attacks).
"""


@attack("min_max", display="Min-Max")
def min_max(*, f: int, deviation: str = "unit_vec", start: float = 10.0,
            tolerance: float = 1e-5) -> Attack:
  """Min-Max: the Byzantine rows as far along -p as they can go while their
  largest distance to an honest row stays at most the largest distance
  between two honest rows.

  max_i ||s - gamma p - g_i|| <= max_{i, j} ||g_i - g_j||.
  {doc}
  Args:
    f: number of Byzantine workers (the last f rows).
    deviation: "unit_vec", "sign" or "std".
    start: the bisection's first gamma (> 0).
    tolerance: its stopping gap (> 0).

  Returns:
    The Attack.

  References:
    Shejwalkar, Houmansadr, NDSS 2021, Algorithm 1 and eq. (7).
  """
  name = "min_max"
  return _distance_attack(name, f, checks.check_choice(
      "deviation", deviation, DEVIATIONS, what=name),
                          *_check_bisection(name, start, tolerance), "max")


@attack("min_sum", display="Min-Sum")
def min_sum(*, f: int, deviation: str = "unit_vec", start: float = 10.0,
            tolerance: float = 1e-5) -> Attack:
  """Min-Sum: the Byzantine rows as far along -p as they can go while their
  sum of squared distances to the honest rows stays at most the least such
  sum of an honest row.

  sum_i ||s - gamma p - g_i||^2 <= min_j sum_i ||g_j - g_i||^2.
  {doc}
  Args:
    f: number of Byzantine workers (the last f rows).
    deviation: "unit_vec", "sign" or "std".
    start: the bisection's first gamma (> 0).
    tolerance: its stopping gap (> 0).

  Returns:
    The Attack.

  References:
    Shejwalkar, Houmansadr, NDSS 2021, Algorithm 1 and eq. (8).
  """
  name = "min_sum"
  return _distance_attack(name, f, checks.check_choice(
      "deviation", deviation, DEVIATIONS, what=name),
                          *_check_bisection(name, start, tolerance), "sum")


min_max.__doc__ = min_max.__doc__.replace("{doc}", _SHEJWALKAR_DOC)
min_sum.__doc__ = min_sum.__doc__.replace("{doc}", _SHEJWALKAR_DOC)


# ---------------------------------------------------------------------------
# Fang et al. (USENIX Security 2020).


def _krum_picks_byzantine(hd: Array, c: Array, f: int, k: int) -> Array:
  """Whether Krum (k neighbours) selects one of f identical Byzantine rows.

  ``hd`` is the (h, h) squared distances between honest rows and ``c`` the
  (h,) squared distances of the Byzantine value to them.
  """
  h = hd.shape[0]
  top = jnp.concatenate([hd, jnp.broadcast_to(c[:, None], (h, f))], axis=1)
  bottom = jnp.concatenate([jnp.broadcast_to(c[None, :], (f, h)),
                            jnp.zeros((f, f), hd.dtype)], axis=1)
  dist = jnp.concatenate([top, bottom], axis=0)
  return jnp.argmin(sort_scores(dist, k)) >= h  # ties go to the lowest index: honest


@attack("fang_krum", display="Fang-Krum")
def fang_krum(*, f: int, threshold: float = 1e-5,
              epsilon: float = 0.0) -> Attack:
  """Fang et al.'s full-knowledge attack on Krum, in gradient space.

  With s = sign of the sum of the honest rows (the benign direction), the
  first Byzantine row is -lambda s (the model w_Re - lambda s of the paper,
  written as the vector sent), lambda starting from the paper's upper bound

    lambda_max = min_i sum_{l in N(i)} ||g_l - g_i|| / ((n - 2f - 1) sqrt(d))
                 + max_i ||g_i|| / sqrt(d),

  N(i) the n - f - 2 honest rows nearest to the honest row g_i (the model
  before the attack is the origin of the vectors sent), and halved until
  Krum (n - f - 2 neighbours) selects a Byzantine row, with the f Byzantine
  rows identical during the search; when lambda falls below ``threshold``
  no scale succeeds and the rows are zero (the model unchanged). The other
  f - 1 rows are then drawn uniformly within ``epsilon`` of the first in
  every coordinate (the paper samples them "close to" it without a value;
  0, the default, keeps them identical, as the search assumed). The chosen
  lambda is reported as ``eta``. The attack targets Krum but runs against
  any defence.

  Args:
    f: number of Byzantine workers (the last f rows), n >= 2f + 3.
    threshold: the smallest lambda tried (> 0).
    epsilon: half-width of the other rows' per-coordinate noise (>= 0).

  Returns:
    The Attack.

  References:
    Fang, Cao, Jia, Gong, USENIX Security 2020, Section 4.1 (attacking Krum).
  """
  name = "fang_krum"
  threshold = checks.check_real("threshold", threshold, low=0.0, strict=True,
                                what=name)
  epsilon = checks.check_real("epsilon", epsilon, low=0.0, what=name)

  def init(x_like: Any, *, key: Key) -> ScaleState:
    n, _ = shape_nd(x_like, name)
    if f and n < 2 * f + 3:
      raise ValueError(f"{name} needs n >= 2f + 3 (Krum's n - f - 2 neighbours"
                       f" among the n - f honest rows), got n={n}, f={f}")
    return _init(name, f, 1)(x_like, key=key)

  def update(x: Array, state: ScaleState, *, aggregate: Any = None):
    del aggregate
    n, d = shape_nd(x, name)
    h = check_honest(name, n, f, 1)
    if f == 0:
      return x, state
    key, noise_key = jax.random.split(state.key)
    honest = x[:h].astype(jnp.float32)
    sign = jnp.sign(row_sum(honest, h))
    hd = pairwise_sq_distances(honest)
    norms2 = row_sq_distances(honest)
    k = n - f - 2
    # Per row, the sum of its k smallest distances (not squared) to the others.
    near = sort_scores(jnp.sqrt(jnp.maximum(hd, 0.0)), k)
    lam_max = (jnp.min(near) / ((n - 2 * f - 1) * jnp.sqrt(d))
               + jnp.sqrt(jnp.max(norms2)) / jnp.sqrt(d))
    # ||-lambda s - g_i||^2 = lambda^2 ||s||^2 + 2 lambda <s, g_i> + ||g_i||^2.
    ss = jnp.sum(sign * sign)
    sg = honest @ sign

    def picks(lam):
      return _krum_picks_byzantine(hd, lam * lam * ss + 2 * lam * sg + norms2,
                                   f, k)

    lam = jax.lax.while_loop(lambda l: (l > threshold) & ~picks(l),
                             lambda l: l * 0.5, lam_max.astype(jnp.float32))
    lam = jnp.where(lam > threshold, lam, 0.0)
    first = -lam * sign
    byz = jnp.broadcast_to(first, (f, d))
    if epsilon > 0 and f > 1:
      noise = jax.random.uniform(noise_key, (f - 1, d), jnp.float32,
                                 -epsilon, epsilon)
      byz = jnp.concatenate([first[None], first[None] + noise], axis=0)
    return keep_honest(x, byz, f), ScaleState(key=key, eta=lam)

  return Attack(init=init, update=update, name=name,
                metrics=lambda state: {"eta": state.eta})


def _row_extremes(x: Array, h: int):
  """Coordinate-wise min and max of the first h rows (unrolled for few)."""
  if h <= MAX_UNROLLED_ROWS:
    rows = [x[i] for i in range(h)]
    return (functools.reduce(jnp.minimum, rows),
            functools.reduce(jnp.maximum, rows))
  return jnp.min(x[:h], axis=0), jnp.max(x[:h], axis=0)


@attack("fang_trimmed_mean", display="Fang-TM")
def fang_trimmed_mean(*, f: int, b: float = 2.0) -> Attack:
  """Fang et al.'s full-knowledge attack on trimmed mean and median.

  Per coordinate j, with s_j = sign of the sum of the honest rows (the
  benign direction): where s_j > 0 the Byzantine values lie below the
  honest minimum w_j, where s_j < 0 above the honest maximum w_j, each drawn
  uniformly (independently per row and coordinate) in [w_j, b w_j] when that
  moves away from zero (w_j s_j < 0) and in [w_j / b, w_j] otherwise; where
  s_j = 0 they are 0. Fang's code draws r in [1, 2) and divides or
  multiplies by it; the paper's uniform draw in the interval is used here.

  Args:
    f: number of Byzantine workers (the last f rows).
    b: the interval factor (> 1; the paper's b = 2).

  Returns:
    The Attack.

  References:
    Fang, Cao, Jia, Gong, USENIX Security 2020, Section 4.2 (attacking trimmed
    mean; the same attack is used against median).
  """
  name = "fang_trimmed_mean"
  b = checks.check_real("b", b, low=1.0, strict=True, what=name)

  def update(x: Array, state: ScaleState, *, aggregate: Any = None):
    del aggregate
    n, d = shape_nd(x, name)
    h = check_honest(name, n, f, 1)
    if f == 0:
      return x, state
    key, sub = jax.random.split(state.key)
    xf = x.astype(jnp.float32)
    lo, hi = _row_extremes(xf, h)
    direction = jnp.sign(row_sum(xf, h))
    w = jnp.where(direction > 0, lo, jnp.where(direction < 0, hi, 0.0))
    u = jax.random.uniform(sub, (f, d), jnp.float32)
    away = w * (1.0 + (b - 1.0) * u)      # in [w, b w]
    toward = w * (1.0 / b + (1.0 - 1.0 / b) * u)  # in [w / b, w]
    byz = jnp.where(direction * w < 0, away, toward)
    return keep_honest(x, byz, f), ScaleState(key=key, eta=state.eta)

  return Attack(init=_init(name, f, 1), update=update, name=name)
