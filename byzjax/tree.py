"""Stacked pytrees (a leading worker axis on every leaf) <-> (n, d) matrices."""

from __future__ import annotations

from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from byzjax.types import Array, PyTree


def ravel_stacked(tree: PyTree) -> Tuple[Array, Callable[[Array], PyTree]]:
  """Flattens a stacked pytree into an (n, d) matrix.

  Row i is ``jax.flatten_util.ravel_pytree`` of worker i's slice (leaves in
  ``tree_flatten`` order, each raveled), in the leaves' common dtype.

  Args:
    tree: pytree whose leaves all have the same leading size n.

  Returns:
    ``(x, unravel)``: x of shape (n, d), and ``unravel`` mapping a (d,) vector
    back to one (unstacked) pytree with the original leaf shapes and dtypes.

  Raises:
    ValueError: if the tree has no leaves or the leading sizes differ.
  """
  leaves, treedef = jax.tree.flatten(tree)
  if not leaves:
    raise ValueError("ravel_stacked needs a pytree with at least one leaf")
  sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f"every leaf needs the same leading worker axis, got "
                     f"shapes {[leaf.shape for leaf in leaves]}")
  (n,) = sizes
  dtype = jnp.result_type(*leaves)
  x = jnp.concatenate([leaf.reshape(n, -1).astype(dtype) for leaf in leaves], axis=1)
  shapes = [leaf.shape[1:] for leaf in leaves]
  dtypes = [leaf.dtype for leaf in leaves]
  splits = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]

  def unravel(v: Array) -> PyTree:
    parts = jnp.split(v, splits)
    return jax.tree.unflatten(treedef, [p.reshape(s).astype(t)
                                        for p, s, t in zip(parts, shapes, dtypes)])

  return x, unravel
