"""optax adapters: robust aggregation as an optax aggregator, and worker transforms.

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

Worker transforms (``worker_momentum``, ``per_worker_clip``, ``per_worker_l2``,
chained by ``worker_pipeline``) are optax ``GradientTransformation``s over
stacked updates with stacked state: what each honest worker does to its own
gradient before sending it (D-SHB's local momentum), or, applied on the server
to the received vectors, the CGE paper's gradient averaging.

References:
  optax.experimental aggregation API (``Aggregator``, ``process``).
  Allouah et al., "Fixing by Mixing", AISTATS 2023, Algorithm 3.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import jax.flatten_util
import numpy as np
import optax
from optax.experimental import aggregating as optax_aggregating

from byzjax import aggregators
from byzjax.rule import Rule
from byzjax.tree import ravel_stacked
from byzjax.types import Array, Key, PyTree


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


# ---------------------------------------------------------------------------
# Worker transforms: optax GradientTransformations over stacked updates.
#
# Each acts on a "stacked" pytree (every leaf has a leading worker axis n; an
# (n, d) matrix is such a pytree) and keeps any state stacked the same way, so
# worker i only ever sees row i. ``init`` takes a stacked pytree of the same
# shapes as the updates (e.g. ``jnp.zeros((n, d))``).


class WorkerMomentumState(NamedTuple):
  """State of ``worker_momentum``: one momentum per worker (stacked)."""

  momentum: PyTree


def _check_unit(name: str, value: float, *, what: str) -> float:
  value = float(value)
  if not 0.0 <= value < 1.0:
    raise ValueError(f"{what}: {name} must be in [0, 1), got {name}={value}")
  return value


def worker_momentum(beta: float) -> optax.GradientTransformation:
  """Heavy-ball momentum per worker: m_i <- beta m_i + (1 - beta) g_i.

  With m_i = 0 at the start (Algorithm 3's m_0 = 0). beta = 0 returns the
  gradients unchanged. Applied on the server to the received vectors, the
  same transform is the CGE paper's gradient averaging
  h_i <- alpha h_i + (1 - alpha) g_i (Section 3.5).

  Args:
    beta: momentum coefficient in [0, 1) (0.9 in Allouah et al., Table 3).

  Returns:
    An optax ``GradientTransformation`` over stacked updates.

  References:
    Allouah et al., "Fixing by Mixing", AISTATS 2023, Algorithm 3, eq. (3);
    Gupta, Liu, Vaidya, CGE paper, Section 3.5, eq. (25).
  """
  beta = _check_unit("beta", beta, what="worker_momentum")

  def init(stacked):
    return WorkerMomentumState(jax.tree.map(jnp.zeros_like, stacked))

  def update(updates, state, params=None):
    del params
    momentum = jax.tree.map(lambda m, g: beta * m + (1.0 - beta) * g,
                            state.momentum, updates)
    return momentum, WorkerMomentumState(momentum)

  return optax.GradientTransformation(init, update)


def _per_worker_sq_norms(stacked) -> Array:
  """(n,) squared l2 norms of each worker's slice, over all leaves."""
  leaves = jax.tree.leaves(stacked)
  return sum(jnp.sum(jnp.square(leaf.reshape(leaf.shape[0], -1)), axis=1)
             for leaf in leaves)


def per_worker_clip(max_norm: float) -> optax.GradientTransformation:
  """Clips each worker's update to l2 norm at most ``max_norm``.

  g_i <- g_i min(1, max_norm / ||g_i||), the norm taken over the worker's
  whole update (all leaves), as ``torch.nn.utils.clip_grad_norm_`` on each
  worker's gradient in the papers' code.

  Args:
    max_norm: the clipping threshold, > 0 (2 for MNIST, 5 for CIFAR-10 in
      Allouah et al., Table 3).

  Returns:
    A stateless optax ``GradientTransformation`` over stacked updates.

  References:
    Allouah et al., "Fixing by Mixing", AISTATS 2023, Table 3 (gradient
    clipping).
  """
  max_norm = float(max_norm)
  if not max_norm > 0 or not np.isfinite(max_norm):
    raise ValueError(f"per_worker_clip: max_norm must be finite and > 0, got "
                     f"max_norm={max_norm}")

  def update(updates, state, params=None):
    del params
    norm = jnp.sqrt(_per_worker_sq_norms(updates))
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-30))

    def clip(leaf):
      s = scale.reshape((-1,) + (1,) * (leaf.ndim - 1))
      return (leaf * s).astype(leaf.dtype)

    return jax.tree.map(clip, updates), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def per_worker_l2(weight: float) -> optax.GradientTransformation:
  """Adds the gradient of (weight / 2) ||theta||^2 to every worker's update.

  g_i <- g_i + weight * theta, where theta (the ``params`` argument of
  ``update``, unstacked) is the model every worker received. The papers' code
  adds this l2 term to each worker's loss, before clipping.

  Args:
    weight: l2-regularization coefficient, >= 0 (1e-4 for MNIST, 1e-2 for
      CIFAR-10 in Allouah et al., Table 3).

  Returns:
    A stateless optax ``GradientTransformation``; ``update`` needs ``params``.

  References:
    Allouah et al., "Fixing by Mixing", AISTATS 2023, Table 3.
  """
  weight = float(weight)
  if not weight >= 0 or not np.isfinite(weight):
    raise ValueError(f"per_worker_l2: weight must be finite and >= 0, got "
                     f"weight={weight}")

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("per_worker_l2 needs update(..., params=theta)")
    return jax.tree.map(lambda g, p: (g + weight * p).astype(g.dtype),
                        updates, params), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def worker_pipeline(*, weight_decay: float = 0.0,
                    clip: Optional[float] = None,
                    momentum: float = 0.0) -> optax.GradientTransformation:
  """What every honest worker does to its gradient before sending it.

  ``optax.chain(per_worker_l2, per_worker_clip, worker_momentum)``, skipping
  the stages that are off (weight_decay 0, clip None, momentum 0): l2 term,
  then clipping, then momentum, the order of the papers' code.

  Args:
    weight_decay: l2-regularization coefficient (>= 0).
    clip: per-worker clipping threshold, or None for no clipping.
    momentum: heavy-ball coefficient beta in [0, 1) (0: D-SGD).

  Returns:
    An optax ``GradientTransformation`` over stacked updates; ``update``
    takes ``params`` (the broadcast model).

  References:
    Allouah et al., "Fixing by Mixing", AISTATS 2023, Algorithm 3, Table 3.
  """
  stages = []
  if weight_decay:
    stages.append(per_worker_l2(weight_decay))
  if clip is not None:
    stages.append(per_worker_clip(clip))
  if momentum:
    stages.append(worker_momentum(momentum))
  return optax.chain(*stages) if stages else optax.identity()
