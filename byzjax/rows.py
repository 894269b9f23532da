"""Rows: the lazily mixed and scaled rows every rule receives.

A rule is written once, over ``Rows``, and works both on a plain (n, d) matrix
and after linear pre-aggregations (NNM, bucketing, clipping, ARC), which
return new ``Rows`` without touching the data: only an (m, n) mixing matrix
and the (m, m) distances change. A rule author reads the geometry
(``sq_norms``, ``dist``, ``bad``) and returns either a (d,) vector built with
``combine`` / ``select`` (distance-based rules read the data once more) or
works on ``materialize()`` / ``row_list()`` (coordinate-wise rules).

A row is "bad" when its squared norm is not finite (inf, NaN or overflow): it
is infinitely far from every other row, is zeroed before any weighted sum,
and every mixed row that uses it is bad too (NaN when materialized).

For affine combinations a, b of the rows (weights summing to 1),
||(a - b) X||^2 = -1/2 (a - b)^T D (a - b), D the squared distances: mixed
rows' distances need no pass over the data.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from byzjax.kernels import (HIGHEST, MAX_UNROLLED_PAIR_ROWS, clean_rows,
                             compute_dtype, finite_or_zero, mask_bad, pairwise_sq_distances,
                             partitioned_rows, row_sq_distances, sorted_rows,
                             sq_distances_and_norms, tree_sum)


class Mix(NamedTuple):
  """Derived rows ``a @ parent`` for an (m', m) matrix ``a`` whose rows sum to 1."""

  a: jax.Array


class Scale(NamedTuple):
  """Derived rows ``s_i * parent_i`` for an (m,) vector ``s``."""

  s: jax.Array


Op = Union[Mix, Scale]


class Rows:
  """The rows ``mix @ x`` of a worker matrix ``x``, with lazily computed geometry.

  Pre-aggregations that are linear in the rows (NNM, bucketing, clipping, ARC)
  return new ``Rows`` without touching the (n, d) data: only the (m, n) mixing
  matrix and the (m, m) distances change. Distance-based rules then read the
  distances and return one weight per row; the data is read again only for
  one final weighted sum (``combine``). Coordinate-wise rules call
  ``materialize``.

  A row is "bad" when its squared norm is not finite (inf, NaN or overflow):
  it is infinitely far from every other row, is zeroed before any weighted
  sum, and every mixed row that uses it is bad too (NaN when materialized).

  ``Rows(x)`` wraps an (n, d) array; ``mixed`` and ``scaled`` derive new
  rows (``op`` records how, a ``Mix`` or a ``Scale``). Geometry is computed
  once per ``Rows`` and cached while one rule or composition is traced.

  Args:
    x: the (n, d) worker matrix (of the original rows).
    mix: the (m, n) matrix that gives these rows from ``x`` (None: ``x``).
    parent: the rows these derive from.
    op: how they derive from ``parent``.
  """

  def __init__(self, x: jax.Array, *, mix: Optional[jax.Array] = None,
               parent: Optional["Rows"] = None, op: Optional[Op] = None):
    self.x = x
    self.mix = mix
    self._parent = parent
    self._op = op
    self._cache: dict = {}

  # --- shape -----------------------------------------------------------------
  @property
  def num_rows(self) -> int:
    return self.x.shape[0] if self.mix is None else self.mix.shape[0]

  @property
  def dim(self) -> int:
    return self.x.shape[1]

  @property
  def dtype(self):
    return self.x.dtype

  @property
  def cdtype(self):
    return compute_dtype(self.x.dtype)

  def _cached(self, name, fn):
    if name not in self._cache:
      self._cache[name] = fn()
    return self._cache[name]

  # --- geometry ----------------------------------------------------------------
  def sq_norms(self) -> jax.Array:
    """(m,) squared norms, +inf for bad rows."""
    return self._cached("sq_norms", self._sq_norms)

  def bad(self) -> jax.Array:
    """(m,) True where the row is bad (non-finite)."""
    return self._cached("bad", self._bad)

  def dist(self) -> jax.Array:
    """(m, m) squared distances; +inf to and from bad rows; zero diagonal."""
    return self._cached("dist", self._dist)

  def _sq_norms(self):
    if self._parent is None:
      n2 = row_sq_distances(self.x.astype(self.cdtype))
      return jnp.where(jnp.isfinite(n2), n2, jnp.inf)
    op = self._op
    p = self._parent
    pn = finite_or_zero(p.sq_norms())
    if isinstance(op, Scale):
      out = jnp.square(op.s) * pn
    else:
      a = jnp.where(p.bad()[None, :], 0.0, op.a)
      k_diag = jnp.einsum("ai,ij,aj->a", a, finite_or_zero(p.dist()), a)
      out = jnp.maximum(a @ pn - 0.5 * k_diag, 0.0)
    return jnp.where(self.bad(), jnp.inf, out)

  def _bad(self):
    if self._parent is None:
      return ~jnp.isfinite(self.sq_norms())
    op = self._op
    pbad = self._parent.bad()
    if isinstance(op, Scale):
      return pbad
    return jnp.any((op.a != 0) & pbad[None, :], axis=1)

  def _dist(self):
    if self._parent is None:
      if "sq_norms" in self._cache:
        dist = pairwise_sq_distances(self.x, self._cache["sq_norms"])
      else:  # the norms in the same pass as the distances where it can
        dist, n2 = sq_distances_and_norms(self.x)
        self._cache["sq_norms"] = jnp.where(jnp.isfinite(n2), n2, jnp.inf)
      return mask_bad(dist, self.bad())
    op = self._op
    p = self._parent
    pd = finite_or_zero(p.dist())
    if isinstance(op, Scale):
      s = op.s
      pn = finite_or_zero(p.sq_norms())
      sn = s * pn
      # s_a s_b D_ab + (s_a - s_b)(s_a N_a - s_b N_b): exact when s_a = s_b.
      out = (s[:, None] * s[None, :] * pd
             + (s[:, None] - s[None, :]) * (sn[:, None] - sn[None, :]))
    else:
      # For affine rows (weights summing to 1), ||(a - b) @ x||^2 equals
      # -1/2 (a - b)^T D (a - b): distances need no pass over the data.
      a = jnp.where(p.bad()[None, :], 0.0, op.a)
      k = a @ pd @ a.T
      kd = jnp.diagonal(k)
      out = k - 0.5 * (kd[:, None] + kd[None, :])
    return mask_bad(out, self.bad())

  def sq_distances_to(self, z: jax.Array) -> jax.Array:
    """(m,) squared distances ||row_i - z||^2 in the compute dtype.

    NaN or inf where a row is not finite (no masking: see ``bad``).
    """
    x = self.materialize().astype(self.cdtype)
    return row_sq_distances(x, z.astype(self.cdtype))

  def sorted(self) -> List[jax.Array]:
    """The rows sorted per coordinate: m (d,) arrays, ascending, compute dtype.

    NaN counts as +inf (the largest value), so it never poisons a comparison;
    the sorting network consumes mixed rows as unrolled weighted sums.
    Order statistics (median, trimmed mean) index into this list; unused
    outputs cost nothing (dead-code elimination).
    """
    if self.mix is None:  # sort in the input dtype (exact), compute in cdtype
      return [r.astype(self.cdtype) for r in sorted_rows(self.x)]
    return sorted_rows(self.row_list())

  def partitioned(self, kth) -> List[jax.Array]:
    """The rows partitioned per coordinate around the ranks ``kth``.

    m (d,) arrays in the compute dtype: row k holds the k-th smallest value of
    each coordinate for every k in ``kth`` (NaN counts as +inf), and the rows
    between two such ranks hold the values of those ranks. Cheaper than
    ``sorted`` for many rows; the same as ``sorted`` for few.
    """
    if self.mix is None:
      return [r.astype(self.cdtype) for r in partitioned_rows(self.x, kth)]
    return partitioned_rows(self.row_list(), kth)

  # --- data ----------------------------------------------------------------------
  @property
  def root(self) -> "Rows":
    """The rows of the original matrix that this one derives from."""
    root = self
    while root._parent is not None:
      root = root._parent
    return root

  def clean_x(self) -> jax.Array:
    """The original rows in the compute dtype, bad original rows zeroed."""
    root = self.root
    return root._cached("clean_x", lambda: clean_rows(
        root.x.astype(root.cdtype), root.bad()))

  def materialize(self) -> jax.Array:
    """The (m, d) rows in the input dtype; mixed rows that are bad are NaN."""
    if self.mix is None:
      return self.x
    if isinstance(self._op, Scale) and self._parent.mix is None:
      # One fused elementwise pass: row scaling needs no matrix product.
      s, bad = self._op.s, self.bad()
      return self._cached("rows", lambda: jnp.where(
          bad[:, None], jnp.nan, self.x.astype(self.cdtype) * s[:, None]
      ).astype(self.dtype))
    def build():
      root = self.root
      mix, bad_in, bad_out = self.mix.astype(self.cdtype), root.bad(), self.bad()

      def clean(x):
        y = jnp.dot(mix, jnp.where(bad_in[:, None], 0.0, x), precision=HIGHEST)
        return jnp.where(bad_out[:, None], jnp.nan, y)

      # The cleaning passes run only when some row is bad.
      y = jax.lax.cond(jnp.any(bad_in), clean,
                       lambda x: jnp.dot(mix, x, precision=HIGHEST),
                       root.x.astype(self.cdtype))
      return y.astype(self.dtype)
    return self._cached("rows", build)

  def row_list(self) -> List[jax.Array]:
    """The m rows as (d,) arrays in the compute dtype (bad mixed rows NaN).

    Mixed rows of a few original rows are unrolled weighted sums, for a
    consumer that fuses them into one loop (a sorting network): NNM then
    trimmed mean never builds the mixed (m, d) array.
    """
    root = self.root
    n = root.num_rows
    if self.mix is None or n > MAX_UNROLLED_PAIR_ROWS or isinstance(self._op, Scale):
      y = self.materialize()
      return [y[i].astype(self.cdtype) for i in range(y.shape[0])]
    bad_in, bad_out = root.bad(), self.bad()
    mix = self.mix.astype(self.cdtype)
    xs = [jnp.where(bad_in[j], 0.0, root.x[j].astype(self.cdtype)) for j in range(n)]
    return [jnp.where(bad_out[a], jnp.nan, tree_sum([mix[a, j] * xs[j] for j in range(n)]))
            for a in range(self.num_rows)]

  def combine(self, weights: jax.Array, dtype=None) -> jax.Array:
    """``weights @ rows`` as a (d,) vector (bad rows zeroed).

    For small n, unrolled weighted row adds with the bad-row mask inside one
    fused loop: no cleaned copy of the data and one pass over it.

    Args:
      weights: (m,) weights of the rows.
      dtype: the output dtype; default the input dtype.
    """
    dtype = self.dtype if dtype is None else dtype
    w = weights.astype(self.cdtype)
    if self.mix is not None:
      w = w @ self.mix.astype(self.cdtype)
    root = self.root
    n = root.x.shape[0]
    if n > MAX_UNROLLED_PAIR_ROWS:
      return jnp.dot(w, self.clean_x(), precision=HIGHEST).astype(dtype)
    bad = root.bad()
    terms = [jnp.where(bad[i], 0.0, w[i] * root.x[i].astype(self.cdtype))
             for i in range(n)]
    return tree_sum(terms).astype(dtype)

  def select(self, index: jax.Array) -> jax.Array:
    """Row ``index`` exactly (a gather when no pre-aggregation was applied)."""
    if self.mix is None:
      return jax.lax.dynamic_index_in_dim(self.x, index, keepdims=False)
    return self.combine(jax.nn.one_hot(index, self.num_rows, dtype=self.cdtype))

  def take(self, indices: jax.Array) -> jax.Array:
    """Rows ``indices`` as a (k, d) array (bad rows NaN)."""
    if self.mix is None:
      rows = jnp.take(self.x, indices, axis=0)
      return jnp.where(self.bad()[indices][:, None], jnp.nan, rows)
    onehot = jax.nn.one_hot(indices, self.num_rows, dtype=self.cdtype)
    return self.mixed(onehot).materialize()

  # --- derived rows --------------------------------------------------------------
  def mixed(self, a: jax.Array) -> "Rows":
    """Rows ``a @ self`` for an (m', m) matrix whose rows each sum to 1."""
    a = a.astype(self.cdtype)
    mix = a if self.mix is None else a @ self.mix.astype(self.cdtype)
    return Rows(self.x, mix=mix, parent=self, op=Mix(a))

  def scaled(self, s: jax.Array) -> "Rows":
    """Rows ``s_i * row_i``."""
    s = s.astype(self.cdtype)
    mix = jnp.diag(s) if self.mix is None else s[:, None] * self.mix
    return Rows(self.x, mix=mix, parent=self, op=Scale(s))
