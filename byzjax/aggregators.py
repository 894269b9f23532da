"""Robust aggregation rules: pure functions from an (n, d) matrix to a (d,) vector.

Every rule is ``rule(x, *, f, **hyper)``: ``x`` holds one row per worker, ``f``
is the number of Byzantine workers the rule must tolerate (a static Python
int), hyperparameters are keyword-only. Rules are found by name
(``get("trimmed_mean")``, ``names()``) and chained with pre-aggregations by
``compose("nnm", "krum", f=4)``.

Robustness to non-finite input: a Byzantine row may hold +/-inf, NaN or values
whose squares overflow. Coordinate-wise rules read NaN as +inf (an extreme
value, trimmed like any other); distance-based rules treat such a row as
infinitely far from every other row, so it is never selected and gets weight
zero. With at most f such rows, every rule but ``mean`` returns a finite vector.

Speed (XLA:CPU, see benchmarks/aggregators.py): coordinate-wise rules run a
min/max sorting network over the n rows instead of ``jnp.sort(x, axis=0)``;
distance-based rules compute the n x n squared distances once and read the data
again only for one final weighted sum.

References:
  Allouah et al., "Fixing by Mixing: A Recipe for Optimal Byzantine ML under
  Heterogeneity", AISTATS 2023 (NNM, (f, kappa)-robustness, Appendix 8).
  Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant
  Gradient Descent", NeurIPS 2017 (Krum, Multi-Krum).
  El Mhamdi et al., "The Hidden Vulnerability of Distributed Learning in
  Byzantium", ICML 2018 (Bulyan, MDA). Damaskinos et al., "AggregaThor",
  SysML 2019. Yin et al., ICML 2018 (median, trimmed mean). Xie et al. 2018
  (MeaMed). Pillutla et al., "Robust Aggregation for Federated Learning"
  (RFA, smoothed Weiszfeld). Gupta, Liu, Vaidya, "Comparative Gradient
  Elimination" (CGE, median of means). Karimireddy et al., "Learning from
  History for Byzantine Robust Optimization", ICML 2021 (centered clipping).
  Allouah et al., "Robust Distributed Learning: Tight Error Bounds and
  Breakdown Point under Data Heterogeneity", NeurIPS 2023 (CAF). Farhadkhani
  et al., "Robust Collaborative Learning with Linear Gradient Overhead", ICML
  2023 (MoNNA). Allouah et al., "On the Privacy-Robustness-Utility Trilemma in
  Distributed Learning", ICML 2023 (SMEA).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import kernels as K
from byzjax import checks
from byzjax import preaggregators  # noqa: F401  (registers the pre-aggregations)
from byzjax import rule
from byzjax.rows import Rows
# The composition API, re-exported: ``aggregators.compose("nnm+krum", f=4)``.
from byzjax.rule import Composed, Defence, compose  # noqa: F401

# Above this many Weiszfeld iterations, the geometric median iterates in
# distance space (n x n work per iteration) instead of over the (n, d) data.
_DIRECT_WEISZFELD_ITERATIONS = 8


def get(name: str) -> rule.Rule:
  """The aggregator registered as ``name`` (ValueError listing valid names)."""
  return rule.AGGREGATORS.get(name)


def names() -> list:
  """Names of all registered aggregators."""
  return rule.AGGREGATORS.names()


# ---------------------------------------------------------------------------
# Coordinate-wise rules.


@rule.aggregator("mean", display="Average", rows=True)
def mean(rows: Rows, *, f: int) -> jax.Array:
  """Average of the rows. Not robust: it propagates inf and NaN.

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers (ignored; any f >= 0).

  Returns:
    (d,) mean.
  """
  del f
  y = rows.materialize()
  cdt = rows.cdtype
  total = K.tree_sum([y[i].astype(cdt) for i in range(y.shape[0])])
  return (total / y.shape[0]).astype(rows.dtype)


@rule.aggregator("median", display="CWMed", rows=True)
def median(rows: Rows, *, f: int) -> jax.Array:
  """Coordinate-wise median (mean of the two middle values for even n).

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers, 2f < n.

  Returns:
    (d,) coordinate-wise median.

  References:
    Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates", ICML 2018. (f, kappa)-robust with
    kappa = 4 (1 + f / (n - 2f))^2 (Allouah et al. 2023, Proposition 5).
  """
  del f
  m = rows.num_rows
  middle = (m // 2,) if m % 2 else (m // 2 - 1, m // 2)
  return K.median_of_sorted(rows.partitioned(middle)).astype(rows.dtype)


@rule.aggregator("trimmed_mean", display="CWTM", rows=True)
def trimmed_mean(rows: Rows, *, f: int) -> jax.Array:
  """Coordinate-wise trimmed mean (CWTM): drop the f smallest and f largest.

  Args:
    rows: (n, d) array of worker vectors.
    f: number of values trimmed on each side, 2f < n.

  Returns:
    (d,) average of the n - 2f middle values of each coordinate.

  References:
    Yin et al., ICML 2018. (f, kappa)-robust with
    kappa = 6 f / (n - 2f) (1 + f / (n - 2f)) (Allouah et al. 2023, Prop. 2).
  """
  n = rows.num_rows
  s = rows.partitioned(sorted({f, n - f - 1}))
  return (K.tree_sum(s[f:n - f]) / (n - 2 * f)).astype(rows.dtype)


@rule.aggregator("meamed", display="MeaMed", rows=True)
def meamed(rows: Rows, *, f: int) -> jax.Array:
  """Mean around median: per coordinate, the mean of the n - f values closest
  to the median (ties: the lower values).

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers, 2f < n.

  Returns:
    (d,) vector.

  References:
    Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD", 2018.
  """
  s = rows.sorted()
  return K.mean_around_median(s, len(s) - f).astype(rows.dtype)


# ---------------------------------------------------------------------------
# Selection rules (Krum family).


def _neighbours(rule: str, n: int, f: int, neighbours: Optional[int]) -> int:
  if neighbours is None:
    if n - f - 2 < 1:
      raise ValueError(
          f"{rule} with the default n - f - 2 neighbours (Blanchard et al.) "
          f"needs n >= f + 3, got n={n}, f={f}; pass neighbours=n - f - 1 "
          f"(the variant of Allouah et al. 2023) or another count in [1, n - 1]")
    checks.warn_blanchard(rule, n, f)
    return n - f - 2
  return checks.check_int("neighbours", neighbours, low=1, high=n - 1,
                             what=f"{rule}: ")


def _check_krum(n: int, *, f: int, neighbours: Optional[int]) -> None:
  _neighbours("krum", n, f, neighbours)


@rule.aggregator("krum", display="Krum", rows=True, check=_check_krum)
def krum(rows: Rows, *, f: int, neighbours: Optional[int] = None) -> jax.Array:
  """Krum: the row whose squared distances to its nearest neighbours sum least.

  score(i) = sum of ||x_i - x_j||^2 over the ``neighbours`` rows j != i
  nearest to x_i; the output is x_i of least score (lowest index on ties).

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers, 2f < n.
    neighbours: rows in each score. Default n - f - 2 (Blanchard et al., as
      in most libraries). ``n - f - 1`` gives the variant analysed by Allouah
      et al. 2023 (n - f nearest vectors, the row itself included), which is
      (f, kappa)-robust with kappa = 6 (1 + f / (n - 2f)) (Proposition 3).

  Returns:
    (d,) the selected row, bitwise.

  References:
    Blanchard et al., NeurIPS 2017.
  """
  k = _neighbours("krum", rows.num_rows, f, neighbours)
  scores = K.sort_scores(rows.dist(), k)
  return rows.select(jnp.argmin(scores))


def _check_multi_krum(n: int, *, f: int, m: Optional[int],
                      neighbours: Optional[int]) -> None:
  _neighbours("multi_krum", n, f, neighbours)
  if m is not None:
    checks.check_int("m", m, low=1, high=n, what="multi_krum: ")


@rule.aggregator("multi_krum", display="Multi-Krum", rows=True,
                 check=_check_multi_krum)
def multi_krum(rows: Rows, *, f: int, m: Optional[int] = None,
               neighbours: Optional[int] = None) -> jax.Array:
  """Multi-Krum: the average of the m rows of least Krum score.

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers, 2f < n.
    m: how many rows to average. Default n - f (as in ByzFL and most
      libraries); AggregaThor's MULTI-KRUM uses n - f - 2 and the CGE paper
      m = 2. m = 1 is Krum.
    neighbours: rows in each Krum score, default n - f - 2 (see ``krum``).

  Returns:
    (d,) average of the selected rows.

  References:
    Blanchard et al., NeurIPS 2017; Damaskinos et al., AggregaThor, SysML 2019.
  """
  n = rows.num_rows
  k = _neighbours("multi_krum", n, f, neighbours)
  count = n - f if m is None else m
  scores = K.sort_scores(rows.dist(), k)
  chosen = K.smallest_mask(scores, count)
  return rows.combine(chosen / count)


_BULYAN_SELECTIONS = ("krum", "multi_krum")


def _check_bulyan(n: int, *, f: int, selection: str) -> None:
  if n < 4 * f + 3:
    raise ValueError(f"bulyan needs n >= 4f + 3, got n={n}, f={f}; the largest "
                     f"valid f is {(n - 3) // 4}" if n >= 3 else
                     f"bulyan needs n >= 4f + 3, got n={n}, f={f}")
  if selection not in _BULYAN_SELECTIONS:
    raise ValueError(f"bulyan: selection must be one of {_BULYAN_SELECTIONS}, "
                     f"got selection={selection!r}")


@rule.aggregator("bulyan", display="Bulyan", rows=True, check=_check_bulyan)
def bulyan(rows: Rows, *, f: int, selection: str = "krum") -> jax.Array:
  """Bulyan: select theta = n - 2f rows, then per coordinate average the
  beta = theta - 2f selected values closest to their median.

  Args:
    rows: (n, d) array of worker vectors; needs n >= 4f + 3.
    f: number of Byzantine workers.
    selection: "krum" (El Mhamdi et al.: Krum applied theta times, each time
      to the rows not yet selected, with max(r - f - 2, 1) neighbours among
      the r remaining rows); or "multi_krum" (AggregaThor: the theta rows of
      least Krum score, i.e. Multi-Krum's selection with m = theta).

  Returns:
    (d,) vector.

  References:
    El Mhamdi, Guerraoui, Rouault, ICML 2018; Damaskinos et al., SysML 2019.
  """
  n = rows.num_rows
  theta, beta = n - 2 * f, n - 4 * f
  dist = rows.dist()
  if selection == "multi_krum":
    scores = K.sort_scores(dist, n - f - 2)
    chosen = jnp.argsort(scores, stable=True)[:theta]
  else:
    active = jnp.ones((n,), bool)
    picks = []
    for t in range(theta):
      remaining = n - t
      k = max(remaining - f - 2, 1)
      masked = jnp.where(active[None, :], dist, jnp.inf)
      scores = jnp.where(active, K.sort_scores(masked, k), jnp.inf)
      pick = jnp.argmin(scores)
      picks.append(pick)
      active = active.at[pick].set(False)
    chosen = jnp.stack(picks)
  selected = rows.take(chosen)
  cdt = rows.cdtype
  s = [r.astype(cdt) for r in K.sorted_rows(selected)]
  return K.mean_around_median(s, beta).astype(rows.dtype)


# ---------------------------------------------------------------------------
# Subset rules.


def _check_subsets(rule: str, n: int, f: int, max_subsets: int) -> None:
  max_subsets = checks.check_int("max_subsets", max_subsets, low=1,
                                    what=f"{rule}: ")
  count = math.comb(n, f)
  if count > max_subsets:
    raise ValueError(f"{rule} enumerates C(n, f) = C({n}, {f}) = {count} subsets, "
                     f"more than max_subsets={max_subsets}; lower f or raise "
                     f"max_subsets")


def _kept_subsets(n: int, f: int) -> np.ndarray:
  """(C(n, f), n) boolean masks of the subsets of size n - f, in the
  lexicographic order of itertools.combinations."""
  idx = K.subsets(n, n - f)
  mask = np.zeros((len(idx), n), bool)
  np.put_along_axis(mask, idx, True, axis=1)
  return mask


def _check_mda(n: int, *, f: int, max_subsets: int) -> None:
  _check_subsets("mda", n, f, max_subsets)


@rule.aggregator("mda", display="MDA", rows=True, check=_check_mda)
def mda(rows: Rows, *, f: int, max_subsets: int = 200_000) -> jax.Array:
  """Minimum diameter averaging: the average of the n - f rows of least diameter.

  All C(n, f) subsets are enumerated as one index array and scored in one
  vectorized pass over the n x n distances (the first subset in lexicographic
  order wins ties).

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers, 2f < n.
    max_subsets: refuse (ValueError) when C(n, f) exceeds this.

  Returns:
    (d,) vector.

  References:
    El Mhamdi, Guerraoui, Rouault, ICML 2018; Rousseeuw 1985.
  """
  n = rows.num_rows
  keep = jnp.asarray(_kept_subsets(n, f))
  dist = rows.dist()

  def diameters(k):
    pair = k[:, :, None] & k[:, None, :]
    return jnp.max(jnp.where(pair, dist[None], -jnp.inf), axis=(1, 2))

  diam = jax.lax.map(diameters, keep.reshape(-1, 1, n))[:, 0] \
      if keep.shape[0] > 4096 else diameters(keep)
  best = keep[jnp.argmin(diam)]
  return rows.combine(best / (n - f))


def _check_smea(n: int, *, f: int, max_subsets: int) -> None:
  _check_subsets("smea", n, f, max_subsets)


def _centered_gram(dist: jax.Array, a: jax.Array) -> jax.Array:
  """Inner products of the rows centred on the affine combination ``a``."""
  r = dist @ a
  t = a @ r
  return -0.5 * (dist - r[:, None] - r[None, :] + t)


@rule.aggregator("smea", display="SMEA", rows=True, check=_check_smea)
def smea(rows: Rows, *, f: int, max_subsets: int = 20_000) -> jax.Array:
  """Smallest maximum eigenvalue averaging: the mean of the n - f rows whose
  empirical covariance has the least largest eigenvalue.

  The largest eigenvalue of each subset's covariance is computed exactly, from
  the (n - f) x (n - f) centred Gram matrix (ByzFL uses one power iteration
  from a random start instead).

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers, 2f < n.
    max_subsets: refuse (ValueError) when C(n, f) exceeds this.

  Returns:
    (d,) vector.

  References:
    Allouah, Guerraoui, Gupta, Pinot, Stephan, ICML 2023.
  """
  n = rows.num_rows
  keep = jnp.asarray(_kept_subsets(n, f))
  dist = K.finite_or_zero(rows.dist())
  has_bad = jnp.any(keep & rows.bad()[None, :], axis=1)

  def top_eigenvalue(k):
    a = k / (n - f)
    g = _centered_gram(dist, a) * (k[:, None] & k[None, :])
    return jnp.linalg.eigvalsh(g)[-1] / (n - f)

  lam = jnp.where(has_bad, jnp.inf, jax.vmap(top_eigenvalue)(keep))
  best = keep[jnp.argmin(lam)]
  return rows.combine(best / (n - f))


# ---------------------------------------------------------------------------
# Norm- and neighbourhood-based rules.


_CGE_REDUCTIONS = ("mean", "sum")


def _check_cge(n: int, *, f: int, reduction: str) -> None:
  checks.check_choice("reduction", reduction, _CGE_REDUCTIONS, what="cge: ")


@rule.aggregator("cge", display="CGE", rows=True, check=_check_cge)
def cge(rows: Rows, *, f: int, reduction: str = "mean") -> jax.Array:
  """Comparative gradient elimination: drop the f rows of largest norm and
  average (or sum) the n - f others (lowest index kept on ties).

  The CGE paper's update (eq. 7) is w_{t+1} = w_t - eta_t * SUM of the n - f
  kept gradients, with eta_t = 0.1 in its experiments (Section 3.1), the same
  sum as its fault-free D-SGD (eq. 3): ``reduction="sum"``, which the CGE
  paper's configs use (``paper_settings.cge_paper_rules``). The default,
  ``"mean"``, divides by n - f, as the EPFL codebases do (Rouault's ``cge``
  GAR of the AggregaThor lineage): a step on the scale of the other rules'
  outputs, n - f times smaller than eq. (7) at the same learning rate. The
  two give the same training, up to rounding, when the mean's learning rate
  is n - f times the sum's.

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers, 2f < n.
    reduction: "mean" (default) or "sum" (the paper's eq. 7).

  Returns:
    (d,) vector.

  References:
    Gupta, Liu, Vaidya, "Byzantine Fault-Tolerant Distributed Machine Learning
    with Norm-Based Comparative Gradient Elimination", Sections 2.1 and 3.1.
  """
  n = rows.num_rows
  keep = K.smallest_mask(rows.sq_norms(), n - f)
  return rows.combine(keep if reduction == "sum" else keep / (n - f))


def _check_monna(n: int, *, f: int, index: int) -> None:
  checks.check_int("index", index, low=0, high=n - 1, what="monna: ")


@rule.aggregator("monna", display="MoNNA", rows=True, check=_check_monna)
def monna(rows: Rows, *, f: int, index: int = 0) -> jax.Array:
  """MoNNA: the average of the n - f rows nearest to a trusted row (itself
  included).

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers, 2f < n.
    index: the trusted row (a worker's own vector in peer-to-peer learning).

  Returns:
    (d,) vector.

  References:
    Farhadkhani et al., ICML 2023.
  """
  n = rows.num_rows
  if rows.mix is None and "dist" not in rows._cache:
    x = rows.x.astype(rows.cdtype)
    d2 = K.row_sq_distances(x, x[index])
    d2 = jnp.where(jnp.isfinite(d2) & ~rows.bad(), d2, jnp.inf).at[index].set(0.0)
  else:
    d2 = rows.dist()[index]
  keep = K.smallest_mask(d2, n - f)
  return rows.combine(keep / (n - f))


# CAF: rows whose tau is within this many ulps of tau_max count as tied.
_TIE_ULPS = 64


@rule.aggregator("caf", display="CAF", rows=True)
def caf(rows: Rows, *, f: int) -> jax.Array:
  """Covariance-bound agnostic filter.

  Weights c start at 1 (0 for non-finite rows). While sum(c) > n - 2f: take the
  weighted mean mu_c, the top eigenpair (lambda, v) of the weighted covariance
  sum_i c_i (x_i - mu_c)(x_i - mu_c)^T / sum(c), tau_i = ((x_i - mu_c) . v)^2,
  and c_i <- c_i (1 - tau_i / max_{j: c_j > 0} tau_j). Returns the mu_c of
  least lambda seen. The eigenpair is exact (from the n x n weighted centred
  Gram matrix), so the rule is deterministic; ByzFL instead runs one power
  iteration from a random start and takes the max over all rows.

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers, 2f < n.

  Returns:
    (d,) vector.

  References:
    Allouah, Guerraoui, Gupta, Pinot, Stephan, NeurIPS 2023.
  """
  n = rows.num_rows
  dist = K.finite_or_zero(rows.dist())
  c0 = jnp.where(rows.bad(), 0.0, 1.0).astype(dist.dtype)

  def step(_, carry):
    c, best_c, best_lam = carry
    total = jnp.sum(c)
    active = total > n - 2 * f
    a = c / total
    g = _centered_gram(dist, a)
    sq = jnp.sqrt(c)
    lam_all, u_all = jnp.linalg.eigh(sq[:, None] * g * sq[None, :] / total)
    lam, u = lam_all[-1], u_all[:, -1]
    # tau_i / tau_max = (proj_i / max |proj|)^2: the ratio of the squares
    # without squaring (proj is on the squared-distance scale, so its square
    # overflows float32 once f rows hold values around 1e10).
    proj = jnp.abs(g @ (sq * u))
    top = jnp.argmax(jnp.where(c > 0, proj, -1.0))
    proj_max = jnp.where(c[top] > 0, proj[top], 0.0)
    better = active & (lam < best_lam)
    best_c = jnp.where(better, c, best_c)
    best_lam = jnp.where(better, lam, best_lam)
    shrink = jnp.square(proj / jnp.where(proj_max > 0, proj_max, 1.0))
    # Rows tied with the maximum are removed exactly: the compiled loop may
    # round their ratio to 1 - 1e-16 (float64), and a weight of 1e-16 would
    # keep them active and let them set tau_max in the next steps.
    tied = shrink >= 1.0 - _TIE_ULPS * jnp.finfo(dist.dtype).eps
    new_c = jnp.where(tied, 0.0, jnp.maximum(c * (1.0 - shrink), 0.0)).at[top].set(0.0)
    # Stop when inactive, or when the covariance is already zero.
    c = jnp.where(active & (proj_max > 0), new_c, c)
    return c, best_c, best_lam

  inf = jnp.asarray(jnp.inf, dist.dtype)
  _, best_c, _ = jax.lax.fori_loop(0, max(2 * f, 1), step, (c0, c0, inf))
  return rows.combine(best_c / jnp.sum(best_c))


# ---------------------------------------------------------------------------
# Geometric median and its relatives.

_GM_INITS = ("median", "mean", "zero")


def _check_gm(n: int, *, f: int, nu: float, iterations: int,
              tolerance: float, init: str) -> None:
  checks.check_positive("geometric_median", "nu", nu)
  checks.check_int("iterations", iterations, low=0, what="geometric_median: ")
  checks.check_positive("geometric_median", "tolerance", tolerance,
                           allow_zero=True)
  if init not in _GM_INITS:
    raise ValueError(f"geometric_median: init must be one of {_GM_INITS}, got "
                     f"init={init!r}")


def _weiszfeld_weights(sq_dist: jax.Array, bad: jax.Array, nu: float):
  """Weights w_i / sum w of one smoothed Weiszfeld step, and the objective."""
  dist = jnp.sqrt(jnp.maximum(sq_dist, 0.0))
  ok = ~bad & jnp.isfinite(dist)
  w = jnp.where(ok, 1.0 / jnp.maximum(dist, nu), 0.0)
  objective = jnp.sum(jnp.where(ok, dist, 0.0))
  return w / jnp.sum(w), objective


def _gm_start(rows: Rows, init: str):
  """The starting point (None for zero) and its squared distances to the rows."""
  if init == "zero":
    return None, rows.sq_norms()
  bad = rows.bad()
  z = median.impl(rows, f=0) if init == "median" else \
      rows.combine(jnp.where(bad, 0.0, 1.0) / jnp.sum(~bad))
  cdt = rows.cdtype
  y = rows.materialize().astype(cdt)
  return z, K.row_sq_distances(y, z.astype(cdt))


# GM's distance-space loop: a distance this many ulps of the data's scale or
# less has lost its digits in the plain form.
_NEAR_ULPS = 1024


def _sq_distances_to_combination(dist: jax.Array, a: jax.Array) -> jax.Array:
  """||z - x_i||^2 for z = sum_j a_j x_j (sum a = 1), from the squared
  distances D alone.

  The plain form (D a)_i - 1/2 a^T D a cancels two terms of the size of D
  when z nears a row, and in float32 then pins z to that row (GM's iterates
  stall at a duplicated or zero row that a Weiszfeld loop over the data
  leaves). Where its smallest distance is within its rounding error
  (_NEAR_ULPS ulps of max |D a|), the distances are measured from the row k
  of largest weight instead: with b = a - e_k (b_k = -sum_{j != k} a_j,
  summed from the small weights, not 1 - a_k, which loses them; rows equal to
  x_k join it), ||z - x_i||^2 = (D b)_i - (D b)_k + D_ik - 1/2 b^T D b. Away
  from the rows the plain form is kept, so earlier results are unchanged.
  """
  r = dist @ a
  plain = r - 0.5 * (a @ r)
  near = jnp.min(plain) <= _NEAR_ULPS * jnp.finfo(dist.dtype).eps * jnp.max(jnp.abs(r))
  k = jnp.argmax(a)
  # Rows equal to x_k (D_ik = 0: duplicates, e.g. zero rows) are x_k: their
  # weight joins x_k's, so that b stays small when z is near them all.
  others = jnp.where(dist[:, k] == 0, 0.0, a)
  b = others.at[k].set(-jnp.sum(others))
  db = dist @ b
  return jnp.where(near, db - db[k] + dist[:, k] - 0.5 * (b @ db), plain)


def _converged(prev: jax.Array, objective: jax.Array, tolerance: float):
  """Whether to stop after a step that took the objective from prev to
  objective; never with tolerance 0 (a float32 objective may stall or rise by
  rounding while the iterates still move)."""
  if tolerance == 0:
    return jnp.asarray(False)
  return prev - objective <= tolerance * objective


@rule.aggregator("geometric_median", display="GM", rows=True, check=_check_gm)
def geometric_median(rows: Rows, *, f: int, nu: float = 1e-6,
                     iterations: int = 100, tolerance: float = 1e-6,
                     init: str = "median") -> jax.Array:
  """Geometric median by the smoothed Weiszfeld algorithm (RFA).

  z <- sum_i w_i x_i / sum_i w_i with w_i = 1 / max(nu, ||z - x_i||), at most
  ``iterations`` times, stopping after the step at which the objective
  sum_i ||z - x_i|| decreased by at most ``tolerance`` times its value.
  Non-finite rows get weight 0.

  Up to 8 iterations run over the data (two passes each); more run in
  distance space (n x n work per iteration, after one pass for the distances).

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers, 2f < n (the rule itself does not use it).
    nu: smoothing: distances below nu count as nu. Pillutla et al. use 1e-6;
      ByzFL's default is 0.1.
    iterations: maximum number of Weiszfeld steps (ByzFL: 3).
    tolerance: relative decrease of the objective below which to stop; 0
      runs all ``iterations``.
    init: start at the coordinate-wise "median" (default, a robust start),
      the "mean" of the finite rows, or "zero" (ByzFL's start; not robust).

  Returns:
    (d,) vector.

  References:
    Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning",
    IEEE TSP 2022. (f, kappa)-robust (exact GM) with
    kappa = 4 (1 + f / (n - 2f))^2 (Allouah et al. 2023, Proposition 4).
  """
  del f
  bad = rows.bad()
  z0, sq0 = _gm_start(rows, init)
  if iterations == 0:
    return jnp.zeros((rows.dim,), rows.dtype) if z0 is None else z0
  a, obj = _weiszfeld_weights(sq0, bad, nu)
  done = jnp.asarray(False)
  if iterations <= _DIRECT_WEISZFELD_ITERATIONS and rows.mix is None:
    cdt = rows.cdtype
    x = rows.x.astype(cdt)
    z = rows.combine(a).astype(cdt)
    for _ in range(iterations - 1):
      sq = K.row_sq_distances(x, z)
      a_new, obj_new = _weiszfeld_weights(sq, bad, nu)
      done = done | _converged(obj, obj_new, tolerance)
      z = jnp.where(done, z, rows.combine(a_new).astype(cdt))
      obj = obj_new
    return z.astype(rows.dtype)
  dist = K.finite_or_zero(rows.dist())

  def cond(carry):
    t, _, _, stop = carry
    return (t < iterations - 1) & ~stop

  def body(carry):
    t, a, obj, _ = carry
    sq = _sq_distances_to_combination(dist, a)
    a_new, obj_new = _weiszfeld_weights(sq, bad, nu)
    stop = _converged(obj, obj_new, tolerance)
    return t + 1, jnp.where(stop, a, a_new), obj_new, stop

  carry = (0, a, obj, jnp.asarray(False))
  if K.reverse_mode():  # the same steps, frozen after the exit: transposable
    frozen = lambda t, c: jax.lax.cond(c[3], lambda c: c, body, c)
    _, a, _, _ = jax.lax.fori_loop(0, iterations - 1, frozen, carry)
  else:
    _, a, _, _ = jax.lax.while_loop(cond, body, carry)
  return rows.combine(a)


def _default_groups(n: int, f: int) -> int:
  return next(g for g in range(2 * f + 1, n + 1) if n % g == 0)


def _check_mom(n: int, *, f: int, num_groups: Optional[int],
               **gm_hyper: Any) -> int:
  if num_groups is not None:
    checks.check_int("num_groups", num_groups, low=2 * f + 1, high=n,
                        what="median_of_means: ")
    if n % num_groups:
      raise ValueError(f"median_of_means: num_groups must divide n, got "
                       f"n={n}, num_groups={num_groups}")
  _check_gm(n, f=f, **gm_hyper)
  return None


@rule.aggregator("median_of_means", display="MoM", rows=True, check=_check_mom,
                 forwards=geometric_median)
def median_of_means(rows: Rows, *, f: int, num_groups: Optional[int] = None,
                    **gm_hyper: Any) -> jax.Array:
  """Geometric median of means: average groups of consecutive rows, then take
  the geometric median of the group means.

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers; at most f groups are corrupted, so
      num_groups >= 2f + 1.
    num_groups: number of groups l, dividing n; rows {1..b} form group 1,
      {b+1..2b} group 2, ... with b = n / l. Default: the smallest divisor of
      n that is >= 2f + 1 (the largest groups that stay robust).
    **gm_hyper: nu, iterations, tolerance, init of ``geometric_median``.

  Returns:
    (d,) vector.

  References:
    Gupta, Liu, Vaidya, CGE paper, Section 3.2 (after Chen, Su, Xu 2017).
  """
  n = rows.num_rows
  groups = _default_groups(n, f) if num_groups is None else num_groups
  size = n // groups
  a = np.kron(np.eye(groups), np.full((1, size), 1.0 / size))
  return geometric_median.impl(rows.mixed(jnp.asarray(a)), f=f, **gm_hyper)


def _check_cc(n: int, *, f: int, tau: float, iterations: int) -> None:
  checks.check_positive("centered_clipping", "tau", tau)
  checks.check_int("iterations", iterations, low=1, what="centered_clipping: ")


@rule.aggregator("centered_clipping", display="CC", rows=True,
                 check=_check_cc, uses_center=True)
def centered_clipping(rows: Rows, *, f: int, tau: float = 100.0,
                      iterations: int = 1,
                      center: Optional[jax.Array] = None) -> jax.Array:
  """Centered clipping: v <- v + (1/n) sum_i clip(x_i - v, tau), repeated.

  clip(u, tau) = u min(1, tau / ||u||). Non-finite rows contribute 0.

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers, 2f < n (not used by the rule).
    tau: clipping radius (ByzFL's default 100).
    iterations: number of clipping steps L (Karimireddy et al. use 1).
    center: the starting point v_0, shape (d,): the previous aggregate, which
      ``byzjax.transforms.robust_aggregate`` keeps in its state. None: zero.

  Returns:
    (d,) vector.

  References:
    Karimireddy, He, Jaggi, ICML 2021.
  """
  del f
  cdt = rows.cdtype
  # Two passes per iteration over the original rows (distances to v, then one
  # masked weighted sum); from zero the first distances are the cached norms.
  base = rows if rows.mix is None else Rows(rows.materialize())
  x, bad, n = base.x.astype(cdt), base.bad(), base.num_rows
  v = None if center is None else center.astype(cdt)
  for _ in range(iterations):
    sq = base.sq_norms() if v is None else K.row_sq_distances(x, v)
    scale = jnp.where(bad, 0.0,
                      jnp.minimum(1.0, tau / jnp.maximum(jnp.sqrt(sq), 1e-30)))
    step = base.combine(scale / n, dtype=cdt)
    v = step if v is None else v * (1.0 - jnp.sum(scale) / n) + step
  return v.astype(rows.dtype)


# ---------------------------------------------------------------------------
# Spectral filtering.


def _dnc_kept(n: int, f: int, filter_frac: float) -> int:
  return n - int(math.floor(filter_frac * f))


def _check_dnc(n: int, *, f: int, iterations: int, sub_dim: int,
               filter_frac: float) -> None:
  checks.check_int("iterations", iterations, low=1, what="dnc: ")
  checks.check_int("sub_dim", sub_dim, low=1, what="dnc: ")
  filter_frac = checks.check_real("filter_frac", filter_frac, low=0.0,
                                  what="dnc")
  if _dnc_kept(n, f, filter_frac) < 1:
    raise ValueError(f"dnc keeps n - floor(filter_frac f) rows, which must be "
                     f">= 1, got n={n}, f={f}, filter_frac={filter_frac}")


@rule.aggregator("dnc", display="DnC", rows=True, check=_check_dnc,
                 randomized=True)
def dnc(rows: Rows, *, f: int, key: jax.Array, iterations: int = 5,
        sub_dim: int = 10_000, filter_frac: float = 1.0) -> jax.Array:
  """Divide-and-Conquer: spectral outlier filtering on random coordinates.

  Each of ``iterations`` times: draw ``sub_dim`` coordinates without
  replacement (all of them when d <= sub_dim), centre the rows restricted
  to them on their mean, score each row by its squared projection on the
  top right singular vector of the centred matrix, and keep the
  n - floor(filter_frac f) rows of least score. The output is the mean of
  the rows kept in every iteration (when no row is, of those kept in the
  most iterations). The top singular direction comes from the n x n Gram
  matrix of the centred rows (its top eigenpair (lambda, u) gives the scores
  lambda u_i^2), never from an SVD of the (n, sub_dim) matrix. Bad
  (non-finite) rows are left out of the centring and scored +inf.

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers.
    key: typed PRNG key for the coordinate draws.
    iterations: niters (>= 1).
    sub_dim: b, the number of coordinates drawn (>= 1).
    filter_frac: c, the filtering fraction (>= 0).

  Returns:
    (d,) vector.

  References:
    Shejwalkar, Houmansadr, "Manipulating the Byzantine", NDSS 2021,
    Algorithm 2. The paper leaves niters, b and c to the experiment and its
    authors' code does not include DnC; the defaults (5, 10,000, 1.0) are
    those of the Blades and FLPoison implementations.
  """
  n, d = rows.num_rows, rows.dim
  b = min(sub_dim, d)
  keep = _dnc_kept(n, f, filter_frac)
  bad = rows.bad()
  good = (~bad).astype(rows.cdtype)
  x = jnp.where(bad[:, None], 0.0, rows.materialize().astype(rows.cdtype))

  def kept(k):
    sub = x if b == d else x[:, jax.random.permutation(k, d)[:b]]
    mu = (good @ sub) / jnp.maximum(jnp.sum(good), 1.0)
    centred = (sub - mu) * good[:, None]
    gram = jnp.dot(centred, centred.T, precision=jax.lax.Precision.HIGHEST)
    values, vectors = jnp.linalg.eigh(gram)
    scores = values[-1] * jnp.square(vectors[:, -1])
    return K.smallest_mask(jnp.where(bad, jnp.inf, scores), keep)

  counts = jnp.sum(jax.vmap(kept)(jax.random.split(key, iterations)), axis=0)
  chosen = (counts == jnp.max(counts)).astype(rows.cdtype)
  return rows.combine(chosen / jnp.sum(chosen))


# ---------------------------------------------------------------------------
# (f, kappa)-robustness coefficients (Allouah et al. 2023, Table 1).


def robustness_coefficient(aggregator: str, *, n: int, f: int,
                           aggregator_args: Optional[dict] = None
                          ) -> Optional[float]:
  """The kappa of (f, kappa)-robustness proven for a rule, or None.

  F is (f, kappa)-robust when ||F(x) - mean_S||^2 <= kappa (1/|S|) sum_S
  ||x_i - mean_S||^2 for every S of n - f inputs (Definition 2): the empirical
  kappa_hat_t^2 of eq. (26) never exceeds it. With r = f / (n - 2f):
  CWTM 6 r (1 + r) (Proposition 2), Krum with the n - f nearest vectors
  (itself included, ``neighbours = n - f - 1``) 6 (1 + r) (Proposition 3),
  GM (exact) and CWMed 4 (1 + r)^2 (Propositions 4 and 5); NNM followed by an
  (f, kappa)-robust F: 8 f / (n - f) (kappa + 1) (Lemma 1). Other rules,
  other Krum variants and other pre-aggregations (bucketing's guarantee holds
  only in expectation): None. The lower bound every rule obeys is f / (n - 2f)
  (Proposition 6).

  Args:
    aggregator: stages joined by "+", e.g. "nnm+trimmed_mean".
    n: number of workers.
    f: number of Byzantine workers, 0 <= 2f < n.
    aggregator_args: hyperparameters per stage (Krum's ``neighbours``).

  Returns:
    kappa, or None when the paper proves none for this composition.
  """
  stages = aggregator.split("+")
  args = dict(aggregator_args or {})
  r = f / (n - 2 * f)
  last = stages[-1]
  if last == "trimmed_mean":
    kappa = 6 * r * (1 + r)
  elif last in ("median", "geometric_median"):
    kappa = 4 * (1 + r) ** 2
  elif last == "krum" and args.get("krum", {}).get("neighbours") == n - f - 1:
    kappa = 6 * (1 + r)
  else:
    return None
  if stages[:-1] == ["nnm"]:
    return 8 * f / (n - f) * (kappa + 1)
  return kappa if len(stages) == 1 else None
