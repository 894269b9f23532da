"""The ``Rule`` wrapper shared by aggregators and pre-aggregators.

A rule is written once, over ``Rows`` (see ``_kernels.Rows``), and called either
on an (n, d) array (the public contract) or on the ``Rows`` produced by an
earlier stage of ``compose``, which lets a distance-based rule after NNM or
bucketing work on n x n distances without materializing the mixed rows.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax

from byzjax import _validate
from byzjax._kernels import Rows


class Rule:
  """A registered aggregation or pre-aggregation rule.

  Calling it on an (n, d) array validates ``f`` and the hyperparameters (a
  ``ValueError`` naming the value and the bound, raised in Python before any
  compilation), then runs it. Aggregators return a (d,) vector, pre-aggregators
  an (n', d) array.

  Attributes:
    name: the registry name.
    kind: "aggregator" or "preaggregator".
    randomized: True when the rule takes a ``key``.
    uses_center: True when the rule takes a ``center`` (the previous aggregate).
  """

  def __init__(self, impl: Callable[..., Any], *, name: str, kind: str,
               check: Callable[..., Optional[int]], randomized: bool = False,
               uses_center: bool = False):
    functools.update_wrapper(self, impl)
    self.impl = impl
    self.name = name
    self.kind = kind
    self.check = check
    self.randomized = randomized
    self.uses_center = uses_center

  def validate(self, n: int, *, f: int, **hyper: Any) -> int:
    """Checks (n, f, hyper) and returns the number of rows the rule outputs."""
    f = _validate.check_f(self.name, n, f) if self.name != "mean" else \
        _validate.check_int("f", f, low=0, what="mean: ")
    out = self.check(n, f=f, **hyper)
    return n if out is None else out

  def run(self, rows: Rows, *, f: int, key: Optional[jax.Array] = None,
          center: Optional[jax.Array] = None, **hyper: Any):
    """Runs on ``Rows`` (no validation): returns a (d,) array or new ``Rows``."""
    extra = {}
    if self.randomized:
      if key is None:
        raise ValueError(f"{self.name} is randomized: pass key=jax.random.key(...)")
      extra["key"] = key
    if self.uses_center and center is not None:
      extra["center"] = center
    return self.impl(rows, f=f, **extra, **hyper)

  def __call__(self, x: jax.Array, *, f: int, key: Optional[jax.Array] = None,
               **hyper: Any) -> jax.Array:
    n, _ = _validate.check_matrix(self.name, x)
    self.validate(n, f=f, **{k: v for k, v in hyper.items() if k != "center"})
    out = self.run(Rows(x), f=f, key=key, **hyper)
    return out.materialize() if isinstance(out, Rows) else out

  def __repr__(self) -> str:
    return f"<byzjax {self.kind} {self.name!r}>"


def no_hyper(n: int, *, f: int) -> None:
  """The check of a rule without hyperparameters."""
  del n, f
