"""Pre-aggregations: pure functions from an (n, d) matrix to an (n', d) matrix.

Each is ``pre(x, *, f, **hyper)``; randomized ones (``bucketing``) also take a
typed ``key``. Used alone they return the new rows (a row built from a
non-finite input row is NaN); inside ``byzjax.aggregators.compose`` they
return lazily mixed rows, so that a distance-based aggregator after them
works on n x n distances only.

References:
  Allouah et al., "Fixing by Mixing", AISTATS 2023 (NNM, Algorithm 2).
  Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets
  via Bucketing", ICLR 2022. Allouah et al., "The Vital Role of Gradient
  Clipping in Byzantine-Resilient Distributed Learning", 2024 (ARC).
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import kernels as K
from byzjax import checks
from byzjax import rule
from byzjax.rows import Rows


def get(name: str) -> rule.Rule:
  """The pre-aggregation registered as ``name`` (ValueError listing valid names)."""
  return rule.PREAGGREGATORS.get(name)


def names() -> list:
  """Names of all registered pre-aggregations."""
  return rule.PREAGGREGATORS.names()


@rule.preaggregator("nnm", display="NNM", rows=True)
def nnm(rows: Rows, *, f: int) -> Rows:
  """Nearest neighbour mixing: each row becomes the mean of its n - f nearest
  rows, itself included (lowest index first on distance ties).

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers, 2f < n.

  Returns:
    (n, d) mixed rows.

  References:
    Allouah et al., AISTATS 2023, Algorithm 2. Composed with an (f, kappa)-
    robust rule it is (f, kappa')-robust with kappa' <= 8f/(n - f) (kappa + 1)
    (Lemma 1).
  """
  n = rows.num_rows
  keep = K.smallest_mask(rows.dist(), n - f)
  return rows.mixed(keep / (n - f))


def default_bucket_size(n: int, f: int) -> int:
  """floor(n / (2f)) as in Karimireddy et al. 2022 (1 when f = 0)."""
  return max(1, n // (2 * f)) if f > 0 else 1


def _check_bucketing(n: int, *, f: int, bucket_size: Optional[int]) -> int:
  s = default_bucket_size(n, f) if bucket_size is None else checks.check_int(
      "bucket_size", bucket_size, low=1, high=n, what="bucketing: ")
  return math.ceil(n / s)


@rule.preaggregator("bucketing", display="Bucketing", rows=True,
                    check=_check_bucketing, randomized=True)
def bucketing(rows: Rows, *, f: int, key: jax.Array,
              bucket_size: Optional[int] = None) -> Rows:
  """Bucketing: shuffle the rows, then average consecutive buckets of s rows.

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers.
    key: typed PRNG key for the permutation.
    bucket_size: s, default floor(n / (2f)). The last bucket holds the
      n - s (ceil(n / s) - 1) remaining rows when s does not divide n.

  Returns:
    (ceil(n / s), d) bucket means.

  References:
    Karimireddy, He, Jaggi, ICLR 2022, Algorithm 1.
  """
  n = rows.num_rows
  s = default_bucket_size(n, f) if bucket_size is None else bucket_size
  buckets = math.ceil(n / s)
  sizes = np.array([min(s, n - b * s) for b in range(buckets)])
  bucket_of = np.repeat(np.arange(buckets), sizes)  # position -> bucket
  weight_of = np.repeat(1.0 / sizes, sizes)
  perm = jax.random.permutation(key, n)
  a = jnp.zeros((buckets, n), rows.cdtype).at[bucket_of, perm].set(
      jnp.asarray(weight_of, rows.cdtype))
  return rows.mixed(a)


def _check_clipping(n: int, *, f: int, threshold: float) -> None:
  checks.check_positive("clipping", "threshold", threshold)


@rule.preaggregator("clipping", display="Clipping", rows=True,
                    check=_check_clipping)
def clipping(rows: Rows, *, f: int, threshold: float = 2.0) -> Rows:
  """Static l2 clipping: rows of norm above ``threshold`` are scaled to it.

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers (not used).
    threshold: the clipping radius C (ByzFL's default 2.0).

  Returns:
    (n, d) clipped rows.
  """
  del f
  norm = jnp.sqrt(K.finite_or_zero(rows.sq_norms()))
  scale = jnp.where(norm > threshold, threshold / jnp.maximum(norm, 1e-30), 1.0)
  return rows.scaled(scale)


@rule.preaggregator("arc", display="ARC", rows=True)
def arc(rows: Rows, *, f: int) -> Rows:
  """Adaptive robust clipping: clip the k = floor(2 (f / n) (n - f)) rows of
  largest norm to the (k + 1)-th largest norm (lowest index first on ties).

  Args:
    rows: (n, d) array of worker vectors.
    f: number of Byzantine workers, 2f < n.

  Returns:
    (n, d) rows.

  References:
    Allouah, Guerraoui, Gupta, Jellouli, Rizk, Stephan, "The Vital Role of
    Gradient Clipping in Byzantine-Resilient Distributed Learning", 2024.
  """
  n = rows.num_rows
  k = (2 * f * (n - f)) // n
  if k == 0:
    return rows
  sq = rows.sq_norms()
  order = jnp.argsort(-sq, stable=True)  # largest first, bad rows (inf) first
  clipped = jnp.zeros((n,), bool).at[order[:k]].set(True)
  threshold = jnp.sqrt(sq[order[k]])
  norm = jnp.sqrt(K.finite_or_zero(sq))
  scale = jnp.where(clipped & (norm > threshold) & jnp.isfinite(threshold),
                    threshold / jnp.maximum(norm, 1e-30), 1.0)
  return rows.scaled(scale)
