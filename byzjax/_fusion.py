"""Reductions written so that XLA:CPU fuses them well (shared by several modules).

Two measured pitfalls of XLA:CPU (jax 0.10) shape these helpers:

* A sum over the short worker axis (``jnp.mean(x[:h], axis=0)`` of a (13, d)
  matrix) was 17.6 ms at d = 176,050; unrolled row adds take about 1 ms.
* A plain full reduction (``jnp.sum``, ``jnp.mean``, a dot of v with itself)
  of a vector produced by a large fused network (a min/max sorting network, or
  its forward-mode derivative) makes XLA split and recompute the network:
  ``jnp.mean`` of the JVP of NNM + trimmed mean cost 280 ms instead of 10 ms
  at d = 176,050. A matvec of a (d/8, 8) view with ones keeps the network one
  fusion.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from byzjax.types import Array

# Above this many rows, sums over rows are matvecs instead of unrolled adds.
MAX_UNROLLED_ROWS = 64


def row_sum(x: Array, h: int, weights: Optional[Array] = None) -> Array:
  """sum_{i < h} w_i x_i for an (n, d) matrix x (w_i = 1 without weights).

  Unrolled row adds: on XLA:CPU at (17, 431080) they were measured several
  times faster than a matvec ``w @ x[:h]`` (which copies the slice), and over
  10x faster under ``jax.vmap`` (seeds), where the matvec becomes a batched
  dot_general. Beyond ``MAX_UNROLLED_ROWS`` rows a matvec keeps the program
  small.

  Args:
    x: (n, d) matrix.
    h: number of leading rows to sum, h <= n.
    weights: optional (>= h,) row weights.

  Returns:
    (d,) vector.
  """
  if h > MAX_UNROLLED_ROWS:
    w = jnp.ones((h,), x.dtype) if weights is None else weights[:h].astype(x.dtype)
    return jnp.dot(w, x[:h], precision=jax.lax.Precision.HIGHEST)
  total = x[0] if weights is None else weights[0] * x[0]
  for i in range(1, h):
    total = total + (x[i] if weights is None else weights[i] * x[i])
  return total


def row_mean(x: Array, h: int) -> Array:
  """Mean of the first h rows of an (n, d) matrix, as unrolled adds."""
  return row_sum(x, h) * (1.0 / h)


def row_sq_deviations(x: Array, center: Array, h: int) -> Array:
  """sum_{i < h} (x_i - center)**2, coordinate-wise, for an (n, d) matrix x.

  Two-pass (deviations from a given centre, not E[x^2] - c^2, which cancels
  catastrophically), unrolled like ``row_sum``.

  Args:
    x: (n, d) matrix.
    center: (d,) vector.
    h: number of leading rows, h <= n.

  Returns:
    (d,) vector.
  """
  if h > MAX_UNROLLED_ROWS:
    return jnp.dot(jnp.ones((h,), x.dtype), jnp.square(x[:h] - center),
                   precision=jax.lax.Precision.HIGHEST)
  total = jnp.square(x[0] - center)
  for i in range(1, h):
    total = total + jnp.square(x[i] - center)
  return total


def vector_sum(v: Array) -> Array:
  """sum(v) of a (d,) vector, as a small matvec over a (d/8, 8) view.

  Keeps a large fused producer of ``v`` one fusion (see the module docstring).
  """
  v = jnp.pad(v, (0, (-v.shape[0]) % 8))
  return jnp.sum(jnp.dot(v.reshape(-1, 8), jnp.ones((8,), v.dtype),
                         precision=jax.lax.Precision.HIGHEST))


def sum_of_squares(v: Array) -> Array:
  """sum(v**2) of a (d,) vector (``vector_sum`` of the squares)."""
  return vector_sum(jnp.square(v))
