"""optax adapters: a robust aggregation rule as an ``optax.experimental.aggregating.Aggregator``.

``robust_aggregate`` turns any rule (a name such as "nnm+trimmed_mean", a rule
from the registries, or ``aggregators.compose(...)``) into an aggregator over
stacked updates (a pytree whose leaves have a leading worker axis n), usable
alone or inside ``optax.experimental.aggregating.process(pre, aggregator, post)``::

  agg = robust_aggregate("nnm+trimmed_mean", f=4)
  opt = optax.experimental.aggregating.process(optax.identity(), agg, optax.sgd(0.1))
  state = opt.init(params)                          # unstacked params
  updates, state = opt.update(stacked_grads, state) # stacked -> one update

The state holds the key of randomized rules (split every step, never reused)
and the previous aggregate, the starting point of ``centered_clipping``.

References:
  optax.experimental aggregation API (``Aggregator``, ``process``).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import jax.flatten_util
from optax.experimental import aggregating as optax_aggregating

from byzjax import aggregators
from byzjax._rules import Rule
from byzjax.tree import ravel_stacked
from byzjax.types import Array, Key


class RobustAggregateState(NamedTuple):
  """State of ``robust_aggregate``.

  Attributes:
    key: typed PRNG key, split at every update.
    previous: the last aggregate as a flat (d,) vector (zeros at first).
  """

  key: Key
  previous: Array


def robust_aggregate(rule: Union[str, Rule, aggregators.Composed], *,
                     f: Optional[int] = None, key: Optional[Key] = None,
                     num_workers: Optional[int] = None
                     ) -> optax_aggregating.Aggregator:
  """A robust rule as an optax aggregator over stacked updates.

  Args:
    rule: a name ("krum", "nnm+trimmed_mean"), a registered rule, or a
      ``Composed`` rule (which already fixes f).
    f: number of Byzantine workers (required unless ``rule`` is ``Composed``).
    key: typed key for randomized rules (bucketing); default key(0).
    num_workers: when given, every bound is checked now.

  Returns:
    ``optax.experimental.aggregating.Aggregator``: ``init(params)`` takes unstacked
    params; ``update(stacked_updates, state, params=None)`` returns one
    aggregated update with the shapes of params.
  """
  if not isinstance(rule, aggregators.Composed):
    if f is None:
      raise ValueError("robust_aggregate needs f unless rule is a Composed rule")
    rule = aggregators.compose(rule, f=f, n=num_workers)
  elif num_workers is not None:
    rule.validate(num_workers)
  base_key = jax.random.key(0) if key is None else key

  def init(params) -> RobustAggregateState:
    flat, _ = jax.flatten_util.ravel_pytree(params)
    return RobustAggregateState(key=base_key, previous=jnp.zeros_like(flat))

  def update(updates, state: RobustAggregateState, params=None):
    del params
    x, unravel = ravel_stacked(updates)
    key, sub = jax.random.split(state.key)
    center = state.previous.astype(x.dtype) if rule.uses_center else None
    out = rule(x, key=sub if rule.randomized else None, center=center)
    return unravel(out), RobustAggregateState(key=key,
                                              previous=out.astype(state.previous.dtype))

  return optax_aggregating.Aggregator(init, update)
