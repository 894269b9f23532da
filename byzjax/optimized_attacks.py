"""Optimized attacks: ALIE and FOE whose eta maximizes the damage each step.

Every Byzantine row is s + eta a (ALIE: a = sigma, the honest rows'
coordinate-wise std; FOE: a = -s), with eta >= 0 chosen every step to
maximize ||F(x_eta) - s||_2 against the server's defence F: greedily, by the
authors' line search (``optimized_alie`` / ``optimized_foe``, the paper's
attacks), or as the best of a fixed grid (``optimized_alie_grid`` /
``optimized_foe_grid``, a stronger attack). The attacker simulates the
defence with randomness of its own, never the server's keys (unless
``knows_server_randomness``). Against a byzjax rule the candidates are
evaluated on lazy mixtures of the honest rows, s and s + a, so that the
rule's distances are computed once for all candidates.

References:
  Allouah et al., "Fixing by Mixing", AISTATS 2023, Appendix 14.3; Baruch,
  Baruch, Goldberg, "A Little Is Enough", NeurIPS 2019; Xie, Koyejo, Gupta,
  "Fall of Empires", UAI 2019; Shejwalkar, Houmansadr, NDSS 2021 (optimized
  attacks); LPD-EPFL/ByzantineMomentum (``tools.line_maximize``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import checks
from byzjax.kernels import sum_of_squares
from byzjax.attack import (Attack, attack, check_honest, honest_mean,
                           honest_std, keep_honest, shape_nd)
from byzjax.rows import Rows
from byzjax.rule import Composed, Defence
from byzjax.types import Array, Key


class OptimizedState(NamedTuple):
  """State of ``optimized_alie`` / ``optimized_foe``.

  Attributes:
    key: the attack's key (not consumed).
    eta: the eta chosen at the last update (0 before the first update).
  """

  key: Key
  eta: Array


def _eta_grid(name: str, etas: Optional[Sequence[float]], eta_min: float,
              eta_max: float, num_etas: int) -> np.ndarray:
  """Validates and returns the candidate etas as a float32 numpy vector."""
  if etas is not None:
    grid = np.asarray(etas, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 1 or not np.all(np.isfinite(grid)):
      raise ValueError(f"{name}: etas must be a non-empty 1-D sequence of finite "
                       f"reals, got {etas!r}")
    return grid.astype(np.float32)
  eta_min = checks.check_real("eta_min", eta_min, what=name)
  eta_max = checks.check_real("eta_max", eta_max, what=name)
  num_etas = checks.check_int("num_etas", num_etas, low=2, what=f"{name}: ")
  if not 0.0 <= eta_min < eta_max:
    raise ValueError(f"{name}: the eta range needs 0 <= eta_min < eta_max, got "
                     f"eta_min={eta_min}, eta_max={eta_max}")
  return np.linspace(eta_min, eta_max, num_etas).astype(np.float32)


# Candidates whose damage is within this relative tolerance of the best count as ties.
_TIE_RTOL = 1e-5


def _check_batch_size(name: str, batch_size: Optional[int]) -> Optional[int]:
  if batch_size is None:
    return None
  return checks.check_int("batch_size", batch_size, low=1, what=f"{name}: ")


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
  evals = checks.check_int("evals", evals, low=1, what=f"{name}: ")
  start = checks.check_real("start", start, what=name)
  delta = checks.check_real("delta", delta, what=name)
  ratio = checks.check_real("ratio", ratio, what=name)
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
    n, _ = shape_nd(x_like, name)
    check_honest(name, n, f, min_honest)
    return OptimizedState(key=key, eta=jnp.zeros((), jnp.float32))

  def update(x: Array, state: OptimizedState, *, aggregate: Any = None):
    key, own = jax.random.split(state.key)
    defence, takes_rows = _simulated_defence(name, aggregate, own,
                                             knows_server_randomness)
    n, _ = shape_nd(x, name)
    h = check_honest(name, n, f, min_honest)
    if f == 0:
      return x, state
    s = honest_mean(x, h)
    a = direction(x, s, h)
    if takes_rows:  # a byzjax rule: shared base distances
      candidate = _candidate_rows(x, s, a, h, f)
      evaluate = lambda eta: defence.run_rows(candidate(eta))
    else:
      evaluate = lambda eta: defence(keep_honest(x, s + eta.astype(x.dtype) * a, f))

    def damage(eta: Array, squared: bool = False) -> Array:
      sq = sum_of_squares((evaluate(eta) - s).astype(jnp.float32))
      return sq if squared else jnp.sqrt(sq)

    best = search(damage)
    x_new = keep_honest(x, s + best.astype(x.dtype) * a, f)
    return x_new, OptimizedState(key=key, eta=best)

  return Attack(init=init, update=update, name=name,
                metrics=lambda state: {"eta": state.eta})


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
  return lambda x, s, h: honest_std(x, s, h, ddof)


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


@attack("optimized_alie", display="ALIE")
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
  ddof = checks.check_int("ddof", ddof, low=0, what=f"{name}: ")
  search = _greedy_search(*_check_line_search(name, evals, start, delta, ratio))
  return _optimized_attack(name, f, search, _alie_direction(ddof), ddof + 1,
                           checks.check_bool("knows_server_randomness",
                                       knows_server_randomness, what=name))


@attack("optimized_foe", display="FOE")
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
                           checks.check_bool("knows_server_randomness",
                                       knows_server_randomness, what=name))


@attack("optimized_alie_grid", display="ALIE (grid)")
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
  ddof = checks.check_int("ddof", ddof, low=0, what=f"{name}: ")
  grid = _eta_grid(name, etas, eta_min, eta_max, num_etas)
  search = _grid_search(grid, _check_batch_size(name, batch_size))
  return _optimized_attack(name, f, search, _alie_direction(ddof), ddof + 1,
                           checks.check_bool("knows_server_randomness",
                                       knows_server_randomness, what=name))


@attack("optimized_foe_grid", display="FOE (grid)")
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
                           checks.check_bool("knows_server_randomness",
                                       knows_server_randomness, what=name))


for _builder in (optimized_alie, optimized_foe, optimized_alie_grid,
                 optimized_foe_grid):
  _builder.__doc__ = _builder.__doc__.replace("{doc}", _OPTIMIZED_DOC)
del _builder
