"""The kernels under every rule and attack: reductions, order statistics and
distances over the short worker axis of an (n, d) matrix.

Two public switches change how they are traced, never what they compute:

* ``reverse_differentiable()``: inside it, rules take forms that ``jax.grad``
  can transpose (loops with a data-dependent exit, as in the geometric
  median's Weiszfeld iterations, run their full length with the state frozen
  after the exit). Differentiate a rule in reverse mode inside it.
* ``distributed_layout()``: inside it, kernels take the plain forms that XLA's
  SPMD partitioner splits (the training round sets it on a mesh); trace
  rules on arrays sharded over your own mesh inside it.

Outside both, on one CPU device, the kernels take their CPU forms (one
predicate, ``_cpu_forms``); on a GPU or TPU the plain ones.

The CPU forms below were chosen by measurement (``benchmarks/aggregators.py``,
``benchmarks/results/``); each function states what it computes, and the
measured reason for its form is in ``benchmarks/results/xla_cpu_notes.md``.

* Coordinate-wise order statistics: a min/max sorting network over the n
  rows (``sorted_rows``), each comparator two elementwise ops on (d,) rows,
  fused by XLA into one pass over memory, instead of ``jnp.sort(x, axis=0)``.
* Distances: the n x n squared distances in one fused pass over L1-sized
  column blocks (``pairwise_sq_distances``); exact sums of squared
  differences, no cancellation.
* Sums over rows: ``tree_sum`` (a balanced tree of adds over a list of rows)
  and ``row_sum`` (sequential adds over the leading rows of a matrix, optional
  weights); full reductions of a (d,) vector as a small matvec
  (``vector_sum``), which keeps a large fused producer one fusion.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
from typing import Iterator, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Whether the arrays being traced are laid out over several devices (set by
# the training round while it traces): the CPU cache layouts (column blocks)
# and host callbacks then give way to the plain forms that XLA's SPMD
# partitioner splits without gathering the data.
_DISTRIBUTED = contextvars.ContextVar("byzjax_distributed", default=False)


@contextlib.contextmanager
def distributed_layout(active: bool = True) -> Iterator[None]:
  """Within this context, kernels take their forms for sharded arrays."""
  token = _DISTRIBUTED.set(bool(active) or _DISTRIBUTED.get())
  try:
    yield
  finally:
    _DISTRIBUTED.reset(token)


# Whether a rule is being traced to be differentiated in reverse mode (an
# attack ascending through the defence): loops with a data-dependent exit
# then run their full length with the state frozen after the exit, which
# gives the same values and can be transposed.
_REVERSE = contextvars.ContextVar("byzjax_reverse_mode", default=False)


@contextlib.contextmanager
def reverse_differentiable() -> Iterator[None]:
  """Within this context, rules take forms that ``jax.grad`` can transpose."""
  token = _REVERSE.set(True)
  try:
    yield
  finally:
    _REVERSE.reset(token)


def reverse_mode() -> bool:
  """True inside ``reverse_differentiable``."""
  return _REVERSE.get()


def _cpu_forms() -> bool:
  """True when the CPU-specific forms apply: a CPU backend, one device."""
  return jax.default_backend() == "cpu" and not _DISTRIBUTED.get()

# Above this many rows, pairwise reductions compile slowly; switch to XLA's dot.
MAX_UNROLLED_PAIR_ROWS = 32
# Above this many rows, sorting networks compile slowly; switch to XLA's sort
# (still far faster up to here: see benchmarks/results/xla_cpu_notes.md).
MAX_NETWORK_ROWS = 128


def compute_dtype(dtype) -> jnp.dtype:
  """The dtype rules compute in: float64 stays, everything else is float32."""
  return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


# ----------------------------------------------------------------------------
# Sorting networks.


@functools.lru_cache(maxsize=None)
def sorting_network(n: int) -> Tuple[Tuple[int, int], ...]:
  """Comparators of Batcher's odd-even merge sort for n inputs.

  The network for the next power of two is pruned of comparators that touch a
  padding position (padding with +inf makes them no-ops).

  Args:
    n: number of inputs.

  Returns:
    A tuple of (i, j) pairs, i < j: after each, position i holds the min.
  """
  p = 1
  while p < n:
    p *= 2
  comparators: List[Tuple[int, int]] = []

  def merge(lo: int, hi: int, r: int) -> None:
    step = r * 2
    if step < hi - lo:
      merge(lo, hi, step)
      merge(lo + r, hi, step)
      comparators.extend((i, i + r) for i in range(lo + r, hi - r, step))
    else:
      comparators.append((lo, lo + r))

  def sort(lo: int, hi: int) -> None:
    if hi - lo >= 1:
      mid = lo + (hi - lo) // 2
      sort(lo, mid)
      sort(mid + 1, hi)
      merge(lo, hi, 1)

  sort(0, p - 1)
  return tuple((i, j) for i, j in comparators if j < n)


def sorted_rows(x: jax.Array) -> List[jax.Array]:
  """The rows of ``x`` sorted per coordinate, as a list of n (d,) arrays.

  NaN is mapped to +inf first, so a NaN coordinate counts as the largest value
  (infinitely far) and never poisons a comparison. Unused outputs are removed by
  XLA's dead-code elimination, so selecting a few order statistics costs less
  than a full sort.

  Two choices keep the network one fused loop on XLA:CPU: NaN is mapped row by
  row, not on the whole (n, d) array (which XLA materializes first); and each
  comparator is a compare and two selects, not ``minimum``/``maximum``, whose
  NaN propagation costs extra instructions and splits larger networks into
  separate fusions (measurements: ``benchmarks/results/xla_cpu_notes.md``).

  Args:
    x: (n, d) array in a compute dtype, or a list of n (d,) rows (which the
      network then consumes without an (n, d) array in between).

  Returns:
    List of n arrays of shape (d,), ascending per coordinate.
  """
  listed = isinstance(x, (list, tuple))
  n = len(x) if listed else x.shape[0]
  if n > MAX_NETWORK_ROWS:
    stacked = jnp.stack(x) if listed else x
    stacked = jnp.where(jnp.isnan(stacked), jnp.inf, stacked)
    s = host_sort(stacked) if _cpu_forms() else jnp.sort(
        stacked, axis=0)
    return [s[i] for i in range(n)]
  rows = list(x) if listed else [x[i] for i in range(n)]
  rows = [jnp.where(jnp.isnan(r), jnp.inf, r) for r in rows]
  for i, j in sorting_network(n):
    a, b = rows[i], rows[j]
    swap = b < a  # no NaN left: a plain compare orders the pair
    rows[i], rows[j] = jnp.where(swap, b, a), jnp.where(swap, a, b)
  return rows


def _numpy_sort(x: np.ndarray) -> np.ndarray:
  return np.sort(np.asarray(x), axis=0)


def _numpy_argsort(x: np.ndarray) -> np.ndarray:
  return np.argsort(np.asarray(x), axis=0, kind="stable").astype(np.int32)


@jax.custom_jvp
def host_sort(x: jax.Array) -> jax.Array:
  """``jnp.sort(x, axis=0)`` of a NaN-free (n, d) array, by NumPy on the host.

  XLA:CPU's sort over a long worker axis is far slower than NumPy's (the
  cliff past the sorting networks, ``benchmarks/results/xla_cpu_notes.md``),
  so on the CPU the rows are sorted by ``np.sort`` through a
  ``jax.pure_callback`` (jittable, vmappable one call per batch element).
  Differentiable: the tangent is permuted like the values (the permutation is
  computed only when a derivative is asked for).
  """
  out = jax.ShapeDtypeStruct(x.shape, x.dtype)
  return jax.pure_callback(_numpy_sort, out, x, vmap_method="sequential")


@host_sort.defjvp
def _host_sort_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  order = jax.pure_callback(_numpy_argsort,
                            jax.ShapeDtypeStruct(x.shape, jnp.int32), x,
                            vmap_method="sequential")
  return (jnp.take_along_axis(x, order, axis=0),
          jnp.take_along_axis(dx, order, axis=0))


def _numpy_partition(x: np.ndarray, kth: Tuple[int, ...]) -> np.ndarray:
  out = np.array(x, copy=True)
  out.partition(kth, axis=0)
  return out


def _numpy_argpartition(x: np.ndarray, kth: Tuple[int, ...]) -> np.ndarray:
  return np.argpartition(np.asarray(x), kth, axis=0).astype(np.int32)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def host_partition(x: jax.Array, kth: Tuple[int, ...]) -> jax.Array:
  """``np.partition(x, kth, axis=0)`` of a NaN-free (n, d) array, on the host.

  Row k of the result holds, per coordinate, the k-th smallest value for
  every k in ``kth``, smaller values above it and larger below; so the rows
  between two ``kth`` positions hold exactly the values of those ranks (in
  no particular order). Like ``host_sort``, a ``jax.pure_callback`` with a
  permuting JVP.
  """
  out = jax.ShapeDtypeStruct(x.shape, x.dtype)
  return jax.pure_callback(functools.partial(_numpy_partition, kth=kth), out,
                           x, vmap_method="sequential")


@host_partition.defjvp
def _host_partition_jvp(kth, primals, tangents):
  (x,), (dx,) = primals, tangents
  order = jax.pure_callback(functools.partial(_numpy_argpartition, kth=kth),
                            jax.ShapeDtypeStruct(x.shape, jnp.int32), x,
                            vmap_method="sequential")
  return (jnp.take_along_axis(x, order, axis=0),
          jnp.take_along_axis(dx, order, axis=0))


def partitioned_rows(x, kth: Sequence[int]) -> List[jax.Array]:
  """The rows partitioned per coordinate around the ranks ``kth``.

  Like ``sorted_rows`` (NaN counts as +inf), but only the ranks in ``kth``
  are guaranteed in place, and the rows between two of them hold the values
  of those ranks: what the median and the trimmed mean need. Up to
  ``MAX_NETWORK_ROWS`` rows this is the sorting network (a full sort is a
  partition); beyond, NumPy's partition on the CPU (``host_partition``) and
  XLA's sort elsewhere.

  Args:
    x: (n, d) array in a compute dtype, or a list of n (d,) rows.
    kth: ranks (0-based, ascending) to put in place.

  Returns:
    List of n arrays of shape (d,).
  """
  listed = isinstance(x, (list, tuple))
  n = len(x) if listed else x.shape[0]
  if n <= MAX_NETWORK_ROWS or not _cpu_forms():
    return sorted_rows(x)
  kth = tuple(sorted({int(k) for k in kth}))
  if len(kth) > 1:  # NumPy partitions once per rank: a sort is cheaper
    return sorted_rows(x)
  stacked = jnp.stack(x) if listed else x
  stacked = jnp.where(jnp.isnan(stacked), jnp.inf, stacked)
  p = host_partition(stacked, kth)
  return [p[i] for i in range(n)]


def tree_sum(rows: Sequence[jax.Array]) -> jax.Array:
  """Sum of a list of rows as a balanced tree of adds (accurate, fusable)."""
  rows = list(rows)
  while len(rows) > 1:
    rows = [rows[i] + rows[i + 1] if i + 1 < len(rows) else rows[i]
            for i in range(0, len(rows), 2)]
  return rows[0]


def median_of_sorted(s: Sequence[jax.Array]) -> jax.Array:
  """Median from sorted rows (mean of the two middle rows for even count)."""
  m = len(s)
  if m % 2:
    return s[m // 2]
  return 0.5 * (s[m // 2 - 1] + s[m // 2])


def mean_around_median(s: Sequence[jax.Array], keep: int) -> jax.Array:
  """Per coordinate, the mean of the ``keep`` sorted values closest to the median.

  The ``keep`` values closest to the median form a contiguous window of the
  sorted values; of the ``m - keep + 1`` windows, the one whose farthest value
  is closest to the median wins (the lowest window on ties).

  Args:
    s: m sorted rows (from ``sorted_rows``).
    keep: how many values to average, 1 <= keep <= m.

  Returns:
    (d,) array.
  """
  m = len(s)
  med = median_of_sorted(s)
  if m > MAX_NETWORK_ROWS:
    return _mean_around_median_masked(s, keep, med)
  best_cost = best_sum = None
  for j in range(m - keep + 1):
    cost = jnp.maximum(med - s[j], s[j + keep - 1] - med)
    # Each window summed afresh: sliding sums lose every honest digit when a
    # Byzantine value near 1e38 enters and leaves the window.
    total = tree_sum(s[j:j + keep])
    if best_cost is None:
      best_cost, best_sum = cost, total
    else:
      better = cost < best_cost
      best_cost = jnp.where(better, cost, best_cost)
      best_sum = jnp.where(better, total, best_sum)
  return best_sum / keep


def _mean_around_median_masked(s: Sequence[jax.Array], keep: int,
                               med: jax.Array) -> jax.Array:
  """``mean_around_median`` in O(m) passes for many rows: the best window's
  start first (its farthest value closest to the median, the lowest on
  ties), then one masked sum of the rows in it (no sliding sums, which lose
  the honest digits next to a value near 1e38)."""
  m = len(s)
  best_cost = best_start = None
  for j in range(m - keep + 1):
    cost = jnp.maximum(med - s[j], s[j + keep - 1] - med)
    if best_cost is None:
      best_cost, best_start = cost, jnp.zeros(cost.shape, jnp.int32)
    else:
      better = cost < best_cost
      best_cost = jnp.where(better, cost, best_cost)
      best_start = jnp.where(better, j, best_start)
  inside = lambda i: (best_start <= i) & (i < best_start + keep)
  return tree_sum([jnp.where(inside(i), s[i], 0.0) for i in range(m)]) / keep


# ----------------------------------------------------------------------------
# Rows in "distance space".

HIGHEST = jax.lax.Precision.HIGHEST


def _column_blocks(d: int) -> Tuple[int, int, int]:
  """(K, V, pad): how ``_blocks`` cuts d columns into blocks of K x V.

  V is the vector width (16 or 8 lanes dividing d); K is the divisor of d / V
  in [4, 128] whose block K V is closest to 400 columns (17 rows x 400
  columns fit the 32 KB L1 cache). Without such divisors, d is padded with
  zero columns to a multiple of 400 (block sizes measured in
  ``benchmarks/results/xla_cpu_notes.md``).
  """
  for lanes in (16, 8):
    if d % lanes == 0:
      ks = [k for k in range(4, 129) if (d // lanes) % k == 0]
      if ks:
        return min(ks, key=lambda k: abs(k * lanes - 400)), lanes, 0
  return 25, 16, (-d) % 400


def _blocks(x: jax.Array) -> List[jax.Array]:
  """The columns of an (n, d) array as K arrays of shape (blocks, n, V).

  Block b holds K x V consecutive columns; the k-th array holds its k-th run
  of V. An elementwise function of the k-th arrays summed over k
  (``_block_sums``) is one fused loop that visits the blocks in order, each
  while it sits in the L1 cache, and that XLA:CPU splits over both cores.
  Zero columns pad d when no block divides it (see ``_column_blocks``).
  """
  n, d = x.shape
  num_k, lanes, pad = _column_blocks(d)
  if pad:
    x = jnp.pad(x, ((0, 0), (0, pad)))
  y = x.reshape(n, -1, num_k, lanes)
  return [y[:, :, k].transpose(1, 0, 2) for k in range(num_k)]


def _block_sums(terms: Sequence[jax.Array], axis) -> jax.Array:
  """Sum of the block-wise ``terms`` over k (a tree), then over ``axis``."""
  part = tree_sum(terms)
  # A select that XLA's YNNPACK fusion does not take (it keeps NaN): without
  # it YNNPACK claims the elementwise work too and runs it much slower.
  part = jnp.where(part < 0, 0.0, part)
  return jnp.sum(part, axis=axis)


def row_sq_distances(x: jax.Array, z: jax.Array | None = None) -> jax.Array:
  """(n,) squared distances ||x_i - z||^2 (squared norms when z is None).

  On the CPU, one fused pass over column blocks (``_blocks``), split over
  both cores (faster than ``jnp.sum(x * x, axis=1)``); when the blocks need
  padding, and on accelerators, the plain reduction (one pass, no copy).

  Args:
    x: (n, d) array in a compute dtype.
    z: optional (d,) vector.

  Returns:
    (n,) array (NaN or inf where a row is not finite).
  """
  if _column_blocks(x.shape[1])[2] or not _cpu_forms():
    return jnp.sum(jnp.square(x if z is None else x - z), axis=1)
  if z is None:
    return _block_sums([jnp.square(b) for b in _blocks(x)], (0, 2))
  pairs = zip(_blocks(x), _blocks(z[None].astype(x.dtype)))
  return _block_sums([jnp.square(b - c) for b, c in pairs], (0, 2))


def _pair_terms(x: jax.Array, shifts: np.ndarray, partner: np.ndarray,
                y: jax.Array | None = None) -> List[jax.Array]:
  """Per column block, (x_i - x_p)^2 for every cyclic pair (i, p) (row i
  against zero at shift 0), or (x_i - x_p)(y_i - y_p) when ``y`` is given."""
  if shifts[0] == 0:  # shift 0 pairs each row with zero: x_i * 0 (NaN for inf)
    keep = (shifts > 0).astype(x.dtype)[:, None, None]
    diff = lambda b: b[:, None] - b[:, partner] * keep
  else:
    diff = lambda b: b[:, None] - b[:, partner]
  if y is None:
    return [jnp.square(diff(b)) for b in _blocks(x)]
  return [diff(b) * diff(c) for b, c in zip(_blocks(x), _blocks(y))]


def _pair_sums(x: jax.Array, with_norms: bool,
               y: jax.Array | None = None):
  """The cyclic pairs' sums of ``_pair_terms`` laid out as ``_pair_sq_distances``
  returns them: an (n, n) symmetric matrix with a zero diagonal (and the (n,)
  shift-0 sums with ``with_norms``). The matrix is gathered from the sums, not
  scattered, so that its derivative transposes (jax.grad)."""
  n = x.shape[0]
  shifts = np.arange(0 if with_norms else 1, n // 2 + 1)
  partner = (np.arange(n)[None, :] + shifts[:, None]) % n
  if y is None:
    sums = _block_sums(_pair_terms(x, shifts, partner), (0, 3))  # (shifts, n)
  else:
    # The select keeps YNNPACK off the fused loop, as in _block_sums; its
    # condition (squares are never negative) reads x alone, so the sums stay
    # linear in y.
    sq = tree_sum(_pair_terms(x, shifts, partner))
    sums = jnp.sum(jnp.where(sq < 0, 0.0, tree_sum(_pair_terms(x, shifts, partner, y))),
                   axis=(0, 3))
  if with_norms:
    norms, sums, partner = sums[0], sums[1:], partner[1:]
  sums = sums.reshape(-1)
  rows, cols = np.tile(np.arange(n), len(partner)), partner.reshape(-1)
  where = np.full((n, n), len(sums))  # the diagonal reads the appended zero
  where[rows, cols] = np.arange(len(sums))
  where[cols, rows] = np.arange(len(sums))
  dist = jnp.concatenate([sums, jnp.zeros((1,), sums.dtype)])[where]
  return (dist, norms) if with_norms else dist


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _pair_sq_distances(x: jax.Array, with_norms: bool = False):
  """Exact squared distances of a few rows in one pass over the data.

  For every pair of rows, the sum of squared differences over each block of
  columns (``_blocks``) is computed while the block of all n rows sits in the
  L1 cache; one reduction then adds the block sums. The pairs are enumerated
  cyclically, (i, i + s mod n) for s = 1..n // 2, so each is computed once
  (twice for s = n / 2) by a static gather, with no concatenation: faster
  than separate reductions over pairs of rows (each re-reads two rows from
  the L3 cache) or the dot ``x @ x.T``. With ``with_norms``, shift s = 0
  (the row against zero: its squared norm) rides in the same pass, instead
  of a second pass over the data.

  Its derivative along t, 2 <x_i - x_j, t_i - t_j> (and 2 <x_i, t_i> for the
  norms), is the same blocked pass over x and t, behind a barrier that keeps
  XLA from merging it with the distances' pass: JAX's own derivative of this
  pass shared the (n / 2, n, d) differences between the two and ran 40-50x
  slower than the distances (the Byzantine influence of GM, ``diagnostics``).

  Args:
    x: (n, d) array in the compute dtype.
    with_norms: also return the (n,) squared row norms.

  Returns:
    (n, n) symmetric array, zero diagonal; NaN or inf where a row is not
    finite. With ``with_norms``, the pair (distances, squared norms), the
    norms NaN or inf where a row is not finite.
  """
  return _pair_sums(x, with_norms)


@_pair_sq_distances.defjvp
def _pair_sq_distances_jvp(with_norms, primals, tangents):
  (x,), (t,) = primals, tangents
  out = _pair_sq_distances(x, with_norms)
  dots = _pair_sums(jax.lax.optimization_barrier(x), with_norms, t.astype(x.dtype))
  return out, jax.tree.map(lambda v: 2.0 * v, dots)


def sq_distances_and_norms(x: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """``pairwise_sq_distances(x)`` and ``row_sq_distances(x)`` (in the compute
  dtype), in one pass over the data where the exact form applies."""
  xf = x.astype(compute_dtype(x.dtype))
  if xf.shape[0] <= MAX_UNROLLED_PAIR_ROWS and _cpu_forms():
    return _pair_sq_distances(xf, True)
  norms = row_sq_distances(xf)
  return gram_sq_distances(xf, norms), norms


def pairwise_sq_distances(x: jax.Array,
                          sq_norms: jax.Array | None = None) -> jax.Array:
  """(n, n) squared distances ||x_i - x_j||^2 in the compute dtype.

  Up to ``MAX_UNROLLED_PAIR_ROWS`` rows, each distance is an exact sum of squared
  differences (``_pair_sq_distances``), with no cancellation: rows far from
  the origin keep exact distances (translation equivariance). Above, and on
  accelerators (where the matrix unit makes a matmul cheap and the blocked
  pass is a CPU cache layout), the Gram matrix of the rows centred on a
  reference row is used: the finite row of
  median norm. Its norm is at most the largest honest norm whatever up to n/2
  Byzantine rows hold, so the cancellation in G_ii + G_jj - 2 G_ij between
  honest rows is bounded by the honest rows alone (centring on a fixed row
  would let a Byzantine row 0 at 1e15 erase every honest distance).

  Args:
    x: (n, d) array.
    sq_norms: the (n,) squared row norms (+inf for non-finite rows), used to
      pick the reference row when n is large; computed when not given.

  Returns:
    (n, n) symmetric array with a zero diagonal; entries are +inf or NaN where
    a row is not finite.
  """
  n = x.shape[0]
  xf = x.astype(compute_dtype(x.dtype))
  if n <= MAX_UNROLLED_PAIR_ROWS and _cpu_forms():
    return _pair_sq_distances(xf)
  return gram_sq_distances(xf, sq_norms)


def gram_sq_distances(xf: jax.Array,
                      sq_norms: jax.Array | None = None) -> jax.Array:
  """The Gram form of ``pairwise_sq_distances`` (rows centred on the finite
  row of median norm), whatever the backend and n."""
  n = xf.shape[0]
  if sq_norms is None:
    sq_norms = row_sq_distances(xf)
  sq_norms = jnp.where(jnp.isfinite(sq_norms), sq_norms, jnp.inf)
  ref = jnp.argsort(sq_norms)[(n - 1) // 2]
  xc = xf - jax.lax.dynamic_index_in_dim(xf, ref, keepdims=True)
  g = jnp.dot(xc, xc.T, precision=HIGHEST)
  diag = jnp.diagonal(g)
  return jnp.maximum(diag[:, None] + diag[None, :] - 2.0 * g, 0.0)


def mask_bad(dist: jax.Array, bad: jax.Array) -> jax.Array:
  """Distances with +inf to and from bad rows (and non-finite entries), 0 diagonal."""
  far = bad[:, None] | bad[None, :] | ~jnp.isfinite(dist)
  dist = jnp.where(far, jnp.inf, jnp.maximum(dist, 0.0))
  return jnp.where(jnp.eye(dist.shape[0], dtype=bool), 0.0, dist)


def finite_or_zero(v: jax.Array) -> jax.Array:
  return jnp.where(jnp.isfinite(v), v, 0.0)


def clean_rows(x: jax.Array, bad: jax.Array) -> jax.Array:
  """``x`` with bad rows zeroed, skipping the pass when no row is bad."""
  return jax.lax.cond(jnp.any(bad), lambda v: jnp.where(bad[:, None], 0, v),
                      lambda v: v, x)


def sort_scores(dist: jax.Array, k: int) -> jax.Array:
  """Krum scores: per row, the sum of its k smallest distances to other rows."""
  n = dist.shape[0]
  off = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, dist)
  return jnp.sum(jnp.sort(off, axis=1)[:, :k], axis=1)

# ----------------------------------------------------------------------------
# Small helpers over (n,) / (n, n) arrays.


def smallest_mask(values: jax.Array, k: int) -> jax.Array:
  """Boolean mask of the k smallest entries of a vector (lowest index on ties)."""
  n = values.shape[-1]
  order = jnp.argsort(values, axis=-1, stable=True)
  ranks = jnp.argsort(order, axis=-1, stable=True)
  del n
  return ranks < k


def subsets(n: int, size: int) -> np.ndarray:
  """All subsets of ``size`` of range(n) as a (C(n, size), size) index array."""
  return np.array(list(itertools.combinations(range(n), size)), dtype=np.int32)


# ----------------------------------------------------------------------------
# Reductions over rows and over a vector.

# Above this many rows, sums over rows are matvecs instead of unrolled adds.
MAX_UNROLLED_ROWS = 64


def row_sum(x: Array, h: int, weights: Optional[Array] = None) -> Array:
  """sum_{i < h} w_i x_i for an (n, d) matrix x (w_i = 1 without weights).

  Unrolled row adds: faster on XLA:CPU than a matvec ``w @ x[:h]`` (which
  copies the slice), and much faster under ``jax.vmap`` (seeds), where the
  matvec becomes a batched dot_general. Beyond ``MAX_UNROLLED_ROWS`` rows a
  matvec keeps the program small.

  Args:
    x: (n, d) matrix.
    h: number of leading rows to sum, h <= n.
    weights: optional (>= h,) row weights.

  Returns:
    (d,) vector.
  """
  if h > MAX_UNROLLED_ROWS:
    w = jnp.ones((h,), x.dtype) if weights is None else weights[:h].astype(x.dtype)
    return jnp.dot(w, x[:h], precision=HIGHEST)
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
                   precision=HIGHEST)
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
                         precision=HIGHEST))


def sum_of_squares(v: Array) -> Array:
  """sum(v**2) of a (d,) vector (``vector_sum`` of the squares)."""
  return vector_sum(jnp.square(v))
