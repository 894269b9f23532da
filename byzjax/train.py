"""Robust distributed training: D-SGD, D-SHB and D-GD, one jitted round at a time.

One round of robust D-SHB (Allouah et al. 2023, Algorithm 3) is one pure
function ``round(state, data) -> (state, metrics)``:

  1. every honest worker draws a minibatch from its own shard (D-GD: takes its
     whole shard) and computes its gradient at the broadcast model theta;
  2. worker transforms: l2 term, per-worker clipping, heavy-ball momentum
     m_i <- beta m_i + (1 - beta) g_i (``transforms.worker_pipeline``);
  3. the attack replaces the last f rows (omniscient attacks see the honest
     rows and simulate the server's defence);
  4. optionally, the server's gradient averaging per sender (CGE paper);
  5. pre-aggregations and the robust aggregation F give R_t;
  6. the server's optax optimizer (SGD with the paper's schedule) updates theta.

Rounds run under ``lax.scan`` between evaluations; the test accuracy is
computed inside the same jitted program. Several seeds run together under
``jax.vmap`` on accelerators and one after another on the CPU.

Two measured choices make the CPU path fast (benchmarks/results/
xla_cpu_notes.md): per-worker gradients are computed by separate calls
traced into the round (``Execution(per_worker="loop")``) rather than
``jax.vmap`` over workers (XLA:CPU's convolutions slow down sharply at large
batch); and the models' convolutions use a VJP in forward form
(``models.conv_valid``). On GPU/TPU the default is ``jax.vmap`` over workers
and seeds.

Diagnostics no peer reports, per round: the distance ||R_t - s_t|| of the
aggregate from the mean s_t of the honest vectors, and the Byzantine
influence: the directional derivative of R_t along the Byzantine rows
(forward-mode, one ``jax.jvp``), averaged over coordinates. For rules that
select or average rows (Krum, Multi-Krum, MDA, CGE, NNM+...) it is the total
weight of the Byzantine rows in R_t: 1 when Krum selects a Byzantine row, the
Byzantine fraction of the average for Multi-Krum; for the trimmed mean, the
share of kept values that come from Byzantine rows.

References:
  Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan. "Fixing by Mixing: A
  Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023
  (Algorithms 1 and 3, Appendix 14). Gupta, Liu, Vaidya, "Comparative
  Gradient Elimination", Sections 3.3 and 3.5.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from typing import (Any, Callable, Dict, List, NamedTuple, Optional, Protocol,
                    Sequence, Tuple)

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from byzjax import aggregators
from byzjax import data as data_lib
from byzjax import logs
from byzjax import models
from byzjax import progress as progress_lib
from byzjax import transforms
from byzjax import sharding
from byzjax import workers as workers_lib
from byzjax.config import (ALGORITHMS, SCHEDULES, Execution, RunConfig,
                           build_attack, build_rule, validate)
from byzjax.kernels import (distributed_layout, row_mean, row_sq_deviations,
                             sum_of_squares, vector_sum)
from byzjax.types import Array, Key, PyTree


# Test images per forward call during evaluation.
_EVAL_CHUNK = 500


def make_schedule(config: RunConfig) -> optax.Schedule:
  """The server's learning-rate schedule gamma_t (t = 0, 1, ...).

  References:
    Allouah et al., "Fixing by Mixing", Table 3: MNIST gamma_t = 0.75 / (1 +
    floor(t / 50)); CIFAR-10 0.25, then 0.025 after step 1500.
  """
  lr = float(config.learning_rate)
  if config.schedule == "constant":
    return optax.constant_schedule(lr)
  if config.schedule == "inverse_step":
    every = config.decay_every
    return lambda t: lr / (1.0 + jnp.floor_divide(t, every))
  boundaries = {int(m): float(config.decay_factor) for m in config.milestones}
  return optax.piecewise_constant_schedule(lr, boundaries)


# ---------------------------------------------------------------------------
# State, metrics, results.


class TrainState(NamedTuple):
  """Everything a run carries from one round to the next.

  Attributes:
    params: the model theta, flattened to a (d,) vector.
    model_state: non-trainable model collections (batch-norm statistics).
    opt_state: the server optimizer's state.
    worker_state: the worker transforms' state, stacked over all n workers.
    received_state: gradient-averaging state (stacked over n), or empty.
    attack_state: the attack's state.
    previous: the last aggregate R_{t-1} (start of centered clipping).
    key: typed PRNG key, split every round.
    step: rounds done (int32).
  """

  params: Array
  model_state: PyTree
  opt_state: PyTree
  worker_state: PyTree
  received_state: PyTree
  attack_state: PyTree
  previous: Array
  key: Key
  step: Array


class RoundMetrics(NamedTuple):
  """What one round reports (scalars; stacked over rounds by ``lax.scan``).

  Attributes:
    loss: mean minibatch loss of the honest workers (before the update).
    aggregate_error: ||R_t - s_t||, s_t the mean of the honest vectors.
    kappa_hat: the empirical robustness coefficient of eq. (26) of Allouah et
      al. 2023, kappa_hat_t = ||R_t - s_t|| / sqrt((1/|H|) sum_{i in H}
      ||m_i - s_t||^2), m_i the honest vectors the rule received (momentums in
      D-SHB): (f, kappa)-robustness bounds kappa_hat_t^2 by kappa. NaN when
      the honest vectors are all equal (f = 0 and one honest worker, ...).
    byzantine_influence: mean over coordinates of the derivative of R_t
      along the Byzantine rows (their weight in R_t for rules that select or
      average rows); 0 when f = 0, NaN without ``diagnostics``.
    learning_rate: gamma_t.
    eta: the eta chosen by an optimized attack (NaN for other attacks).
  """

  loss: Array
  aggregate_error: Array
  kappa_hat: Array
  byzantine_influence: Array
  learning_rate: Array
  eta: Array


@dataclasses.dataclass
class RunResult:
  """The record of one run (one seed).

  Attributes:
    config: the run's configuration (``seeds`` holds this run's seed only).
    seed: the seed.
    eval_steps: rounds at which the test accuracy was measured (0, k, ..., T).
    test_accuracy: accuracy (in [0, 1]) at those rounds.
    loss, aggregate_error, kappa_hat, byzantine_influence, learning_rate, eta:
      per round, see ``RoundMetrics``.
    compile_seconds: time spent compiling (shared by the seeds of a call).
    train_seconds: time spent running, excluding compilation.
    execution: how it was computed (``Experiment.execution_record``): the
      strategies, the seeds computed in the same program and the mesh. Never
      part of what a run computes, but float rounding may depend on it (on
      GPUs, a seed vectorized with others rounds differently than alone).
  """

  config: RunConfig
  seed: int
  eval_steps: List[int]
  test_accuracy: List[float]
  loss: List[float]
  aggregate_error: List[float]
  kappa_hat: List[float]
  byzantine_influence: List[float]
  learning_rate: List[float]
  eta: List[float]
  compile_seconds: float = 0.0
  train_seconds: float = 0.0
  execution: Dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def max_accuracy(self) -> float:
    """Maximum test accuracy over the run (what Table 2 reports)."""
    return float(np.nanmax(self.test_accuracy))

  @property
  def final_accuracy(self) -> float:
    """Test accuracy after the last round."""
    return float(self.test_accuracy[-1])

  def to_dict(self) -> Dict[str, Any]:
    """A JSON-ready dict (with max and final accuracy)."""
    out = dataclasses.asdict(self)
    out["config"] = self.config.to_dict()
    out["max_accuracy"] = self.max_accuracy
    out["final_accuracy"] = self.final_accuracy
    return out

  @classmethod
  def from_dict(cls, values: Dict[str, Any]) -> "RunResult":
    """Inverse of ``to_dict``."""
    values = {k: v for k, v in values.items()
              if k not in ("max_accuracy", "final_accuracy")}
    values["config"] = RunConfig.from_dict(values["config"])
    if "kappa_hat" not in values:  # saved before kappa_hat was recorded
      values["kappa_hat"] = [float("nan")] * len(values["loss"])
    return cls(**values)


class Data(NamedTuple):
  """Device arrays a run reads (passed to the jitted program, not baked in).

  Attributes:
    workers: the per-worker shards (index arrays for one seed, or stacked
      over seeds with a leading axis).
    test_x: test images.
    test_y: test labels.
  """

  workers: workers_lib.WorkerData
  test_x: Array
  test_y: Array


class Batch(NamedTuple):
  """One round's samples of every data holder.

  Attributes:
    images: (holders, b, H, W, C).
    labels: (holders, b).
    mask: (holders, b) float weights of valid samples (D-GD, whose "batch" is
      the whole padded shard), or None (every sample counts).
  """

  images: Array
  labels: Array
  mask: Optional[Array]


class Programs(NamedTuple):
  """The jitted programs of a run (``Experiment.programs``) and their inputs.

  Attributes:
    inputs: (state, data) pairs: one for vectorized seeds, one per seed else.
    chunk: ``chunk(k)`` -> a jitted ``(state, data) -> (state, metrics,
      accuracy)`` running k rounds then a test evaluation.
    evaluate: a jitted ``(state, data) -> accuracy``.
    batched: the seeds are vectorized (outputs have a leading seed axis).
  """

  inputs: List[Tuple["TrainState", "Data"]]
  chunk: Callable[[int], Callable[..., Any]]
  evaluate: Callable[..., Any]
  batched: bool
  seeds: List[Tuple[int, ...]]


class Checkpoints(Protocol):
  """Where ``Experiment.run`` saves runs in progress (``checkpoints.OrbaxCheckpoints``).

  ``seeds`` names one program input (one seed, or the vectorized seeds);
  ``history`` is the curves so far: ``{"accuracies": (E, ...) array,
  "metrics": RoundMetrics of (..., T) arrays}``.
  """

  def due(self) -> bool:
    """Whether to save now."""

  def save(self, seeds: Sequence[int], chunks_done: int, state: Any,
           history: Any) -> None:
    """Saves after ``chunks_done`` evaluation chunks."""

  def restore(self, seeds: Sequence[int], like_state: Any,
              like_history: Callable[[int], Any]
             ) -> Optional[Tuple[int, Any, Any]]:
    """(chunks done, state, history) of the last save, or None."""

  def discard(self, seeds: Sequence[int]) -> None:
    """Forgets the checkpoints of finished seeds."""


# ---------------------------------------------------------------------------
# The experiment: data, model, defence and attack, and the jitted round.


def _stack(trees: Sequence[PyTree]) -> PyTree:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _pack_seeds(ds: data_lib.Dataset, config: RunConfig) -> workers_lib.WorkerData:
  """Per-seed splits, padded to one shape and stacked on a leading seed axis."""
  holders = config.n if config.byzantine_data else config.honest
  min_size = 1 if config.algorithm == "dgd" else config.batch_size
  dirichlet = data_lib.reads_alpha(config.split)
  alpha = config.alpha if dirichlet else None
  limit = len(ds.train_y) // holders
  if dirichlet and min_size > limit:
    raise ValueError(
        f"batch_size={config.batch_size} exceeds the {limit} samples per worker"
        f" that {len(ds.train_y)} training samples allow for {holders} "
        f"workers; lower batch_size or use fewer workers")
  packs = []
  for seed in config.seeds:
    parts = data_lib.split(ds.train_y, num_workers=holders, scheme=config.split,
                           alpha=alpha, seed=seed,
                           min_size=min_size if dirichlet else 1)
    packs.append(workers_lib.pack(ds.train_x, ds.train_y, parts))
  min_count = min(p.min_count for p in packs)
  if config.algorithm != "dgd" and config.batch_size > min_count:
    raise ValueError(f"batch_size={config.batch_size} is larger than the "
                     f"smallest worker shard ({min_count} samples); lower "
                     f"batch_size or change the split")
  width = max(p.index.shape[1] for p in packs)
  index = jnp.stack([jnp.pad(p.index, ((0, 0), (0, width - p.index.shape[1])),
                             mode="edge") for p in packs])
  counts = jnp.stack([p.counts for p in packs])
  return workers_lib.WorkerData(x=packs[0].x, y=packs[0].y, index=index,
                                counts=counts, min_count=min_count)


def _seed_slice(workers: workers_lib.WorkerData, i: int) -> workers_lib.WorkerData:
  return dataclasses.replace(workers, index=workers.index[i],
                             counts=workers.counts[i])


def _unchanged(updates, state, params=None):
  del params
  return updates, state


class Experiment:
  """A validated run setup: data on device, model, defence, attack, round.

  Build once, then ``run()``. Every stage of the round is a public pure
  function that benchmarks, notebooks and tests can use alone: ``sample``,
  ``worker_gradients``, ``byzantine_inputs``, ``defence``, ``round``,
  ``chunk``, ``evaluate`` (plus ``init`` and ``data``).

  Args:
    config: the run configuration (validated first).
    dataset: an already loaded ``data.Dataset`` (default: loaded by name).
    execution: how to compute it (default ``Execution()``: the fastest
      strategies for the backend).
  """

  def __init__(self, config: RunConfig, *,
               dataset: Optional[data_lib.Dataset] = None,
               execution: Optional[Execution] = None):
    self.rule, self.attack = validate(config)
    self.config = c = config
    execution = execution or Execution()
    self.layout = sharding.make_layout(execution.device_list(),
                                       runs=execution.runs,
                                       num_seeds=len(c.seeds))
    self.execution = execution.resolved(
        jax.default_backend(), sharded=self.layout is not None,
        runs=self.layout.runs if self.layout is not None else 1)
    ds = dataset if dataset is not None else data_lib.load(
        c.dataset, data_dir=c.data_dir, seed=c.data_seed,
        test_fraction=c.test_fraction)
    self.num_classes = ds.num_classes
    self.model = models.build_model(c.model, num_classes=ds.num_classes,
                                    input_shape=ds.train_x.shape[1:],
                                    **c.model_args)
    self.workers = _pack_seeds(ds, c)
    self.test_x = jnp.asarray(ds.test_x, jnp.float32)
    self.test_y = jnp.asarray(ds.test_y, jnp.int32)
    params, _ = jax.eval_shape(self.model.init, jax.random.key(0))
    flat, self.unravel = jax.flatten_util.ravel_pytree(
        jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params))
    self.dim = flat.shape[0]
    self.schedule = make_schedule(c)
    self.server = optax.sgd(self.schedule)
    self.pipeline = transforms.worker_pipeline(
        weight_decay=c.weight_decay, clip=c.clip, momentum=c.beta)
    self._stateless = transforms.worker_pipeline(  # l2 and clipping only
        weight_decay=c.weight_decay, clip=c.clip)
    self.averaging = transforms.worker_momentum(c.gradient_averaging)

  # --- data and state ---------------------------------------------------------
  def data(self, seed_index: Optional[int] = None) -> Data:
    """The device arrays for one seed (or all seeds stacked, when None)."""
    workers = self.workers if seed_index is None else _seed_slice(
        self.workers, seed_index)
    return Data(workers=workers, test_x=self.test_x, test_y=self.test_y)

  def init(self, seed: int) -> TrainState:
    """The state before round 1 for ``seed`` (model init from key(seed))."""
    key = jax.random.key(seed)
    k_model, k_attack, key = jax.random.split(key, 3)
    params, model_state = self.model.init(k_model)
    flat, _ = jax.flatten_util.ravel_pytree(params)
    rows = jnp.zeros((self.config.n, self.dim), flat.dtype)
    return TrainState(
        params=flat, model_state=model_state,
        opt_state=self.server.init(flat),
        worker_state=self.pipeline.init(rows),
        received_state=self.averaging.init(rows),
        attack_state=self.attack.init(rows, key=k_attack),
        previous=jnp.zeros_like(flat), key=key,
        step=jnp.zeros((), jnp.int32))

  # --- the stages of a round ----------------------------------------------------
  def sample(self, key: Key, workers: workers_lib.WorkerData) -> Batch:
    """Every data holder's samples for one round (D-GD: its whole shard)."""
    if self.config.algorithm == "dgd":
      index = workers.index
      mask = (jnp.arange(index.shape[1])[None, :]
              < workers.counts[:, None]).astype(jnp.float32)
      images = workers.x[index]
      if self.config.hflip:
        images = workers_lib.random_hflip(key, images)
      return Batch(images, workers.y[index], mask)
    k_sample, k_flip = jax.random.split(key)
    images, labels = workers_lib.sample_batches(
        k_sample, workers, batch_size=self.config.batch_size)
    if self.config.hflip:
      images = workers_lib.random_hflip(k_flip, images)
    return Batch(images, labels, None)

  def _worker_gradient(self, params: Array, model_state: PyTree, images: Array,
                       labels: Array, mask: Optional[Array], key: Key):
    """Loss, flat gradient and new model state of one worker's batch."""
    model = self.model

    def loss_fn(theta):
      logits, new_state = model.apply(
          self.unravel(theta), model_state, images, train=True,
          key=key if model.uses_dropout else None)
      per_example = optax.softmax_cross_entropy_with_integer_labels(
          logits, labels)
      if mask is None:
        return jnp.mean(per_example), new_state
      return jnp.sum(per_example * mask) / jnp.sum(mask), new_state

    (loss, new_state), grad = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return loss, grad, new_state

  def worker_gradients(self, params: Array, model_state: PyTree, batch: Batch,
                       keys: Key):
    """Per-worker (loss, flat gradient, model state), stacked over the workers
    of ``batch`` (``keys``: one dropout key each)."""
    fn = functools.partial(self._worker_gradient, params, model_state)
    images, labels, mask = batch
    if self.execution.per_worker == "vmap":
      return jax.vmap(fn)(images, labels, mask, keys)
    outs = [fn(images[i], labels[i], None if mask is None else mask[i], keys[i])
            for i in range(images.shape[0])]
    return _stack(outs)

  def byzantine_inputs(self, state: TrainState, batch: Batch, keys: Key,
                       honest_grads: Array) -> Array:
    """What the attack asks for in the Byzantine rows (``Attack.inputs``), (f, d).

    "none": zeros. "gradients": the Byzantine workers' honest gradients (with
    ``byzantine_data``, on their own batches; without, worker j copies honest
    worker j mod (n - f)). "flipped_gradients": gradients on labels C - 1 - l
    (with ``byzantine_data``, each on its own batch; without, every Byzantine
    row is the mean of the honest workers' gradients on their flipped
    batches, the authors' label flipping). When the attack sends these rows
    without the worker momentum (``Attack.momentum`` False), each gradient gets
    the l2 term and the clipping of an honest one first (the authors' code
    clips every flipped gradient, then averages).
    """
    c = self.config
    h, f = c.honest, c.f
    if not f:
      return jnp.zeros((0, self.dim))
    kind = self.attack.inputs
    if kind == "none":
      return jnp.zeros((f, self.dim), honest_grads.dtype)
    flip = kind == "flipped_gradients"
    stateless = self._stateless.update if not self.attack.momentum else _unchanged
    prepare = lambda g: stateless(g, self._stateless.init(g), state.params)[0]
    relabel = (lambda y: workers_lib.flip_labels(y, self.num_classes)) if flip \
        else (lambda y: y)
    mask = batch.mask
    if c.byzantine_data:
      own = Batch(batch.images[h:], relabel(batch.labels[h:]),
                  None if mask is None else mask[h:])
      _, g, _ = self.worker_gradients(state.params, state.model_state, own,
                                      keys[h:])
      return prepare(g)
    if not flip:
      return prepare(honest_grads[jnp.arange(f) % h])
    flipped = Batch(batch.images[:h], relabel(batch.labels[:h]),
                    None if mask is None else mask[:h])
    _, g, _ = self.worker_gradients(state.params, state.model_state, flipped,
                                    keys[:h])
    return jnp.broadcast_to(row_mean(prepare(g), h), (f, self.dim))

  def defence(self, key: Key, previous: Array) -> aggregators.Defence:
    """The server's defence with this round's key and previous aggregate."""
    return self.rule.bind(key, previous)

  def round(self, state: TrainState, data: Data
           ) -> Tuple[TrainState, RoundMetrics]:
    """One robust round (pure; jit it, or scan it)."""
    with distributed_layout(self.layout is not None):
      return self._round(state, data)

  def _round(self, state: TrainState, data: Data
            ) -> Tuple[TrainState, RoundMetrics]:
    c = self.config
    h, f = c.honest, c.f
    key, k_batch, k_drop, k_rule = jax.random.split(state.key, 4)
    batch = self.sample(k_batch, data.workers)
    holders = batch.images.shape[0]
    drop_keys = jax.random.split(k_drop, holders)
    layout = self.layout
    workers_axis = lambda a: None if a is None else sharding.constrain(
        a, layout, sharding.WORKERS)
    honest = Batch(workers_axis(batch.images[:h]), workers_axis(batch.labels[:h]),
                   workers_axis(None if batch.mask is None else batch.mask[:h]))
    losses, grads, model_states = self.worker_gradients(
        state.params, state.model_state, honest, drop_keys[:h])
    model_state = jax.tree.map(lambda s: jnp.mean(s, axis=0), model_states)
    own = self.byzantine_inputs(state, batch, drop_keys, grads)
    rows = jnp.concatenate([grads, own], axis=0) if f else grads
    # Coordinate-sharded from here on: all n rows of a slice of coordinates.
    rows = sharding.constrain(rows, layout, None, sharding.WORKERS)
    sent, worker_state = self.pipeline.update(rows, state.worker_state,
                                              state.params)
    if f and not self.attack.momentum:  # the attack's inputs are sent as computed
      sent = jnp.concatenate([sent[:h], own.astype(sent.dtype)], axis=0)
    defence = self.defence(k_rule, state.previous)
    attack_state = state.attack_state
    if f:
      sent, attack_state = self.attack.update(sent, attack_state,
                                              aggregate=defence)
    received, received_state = self.averaging.update(sent, state.received_state)
    out = defence(received)
    if c.diagnostics and f:
      # The derivative from the rows behind a barrier: XLA can neither merge
      # the derivative's own aggregate with ``out`` nor fuse the two, so
      # ``out`` rounds as without diagnostics (jax.jvp's primal output did
      # not: GM's differed from round 3).
      tangent = jnp.zeros_like(received).at[h:].set(1.0)
      _, d_out = jax.jvp(defence, (jax.lax.optimization_barrier(received),),
                         (tangent,))
      influence = vector_sum(d_out) / self.dim
    else:
      influence = jnp.zeros(()) if c.diagnostics else jnp.asarray(jnp.nan)
    honest_mean = row_mean(received, h)
    error_sq = sum_of_squares(out - honest_mean)
    spread = vector_sum(row_sq_deviations(received, honest_mean, h)) / h
    kappa_hat = jnp.where(spread > 0, jnp.sqrt(error_sq / spread), jnp.nan)
    updates, opt_state = self.server.update(out, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    reported = self.attack.metrics(attack_state) if f else {}
    metrics = RoundMetrics(
        loss=jnp.mean(losses), aggregate_error=jnp.sqrt(error_sq),
        kappa_hat=kappa_hat, byzantine_influence=influence,
        learning_rate=jnp.asarray(self.schedule(state.step), jnp.float32),
        eta=jnp.asarray(reported.get("eta", jnp.nan), jnp.float32))
    new_state = TrainState(
        params=params, model_state=model_state, opt_state=opt_state,
        worker_state=worker_state, received_state=received_state,
        attack_state=attack_state, previous=out, key=key,
        step=state.step + 1)
    return new_state, metrics

  def evaluate(self, params: Array, model_state: PyTree, data: Data) -> Array:
    """Test accuracy of the flat params (inference mode), a scalar in [0, 1]."""
    m = data.test_x.shape[0]
    chunks = -(-m // _EVAL_CHUNK)
    pad = chunks * _EVAL_CHUNK - m
    x = jnp.pad(data.test_x, ((0, pad),) + ((0, 0),) * (data.test_x.ndim - 1))
    y = jnp.pad(data.test_y, (0, pad), constant_values=-1)
    x = x.reshape((chunks, _EVAL_CHUNK) + x.shape[1:])
    y = y.reshape(chunks, _EVAL_CHUNK)
    model_params = self.unravel(params)

    def correct(chunk):
      xb, yb = chunk
      logits, _ = self.model.apply(model_params, model_state, xb)
      return jnp.sum(jnp.argmax(logits, axis=-1) == yb)

    hits = jax.lax.map(correct, (x, y))
    return jnp.sum(hits) / m

  def _state_shardings(self, state: TrainState) -> PyTree:
    """Shardings of a seed-stacked state: seeds over "runs"; the
    stacked per-worker (n, d) states (momentums, averaging) coordinate-sharded
    over "workers", like the rows they update (a 1/D share per device)."""
    # Stored arrays must split evenly (jax refuses uneven shards): a d that
    # the "workers" axis does not divide keeps these states whole per device
    # (the computation is still laid out coordinate-sharded inside XLA).
    layout = self.layout
    runs = layout.sharding(sharding.RUNS)
    per_worker = layout.sharding(sharding.RUNS, None, sharding.WORKERS) if (
        self.dim % layout.workers == 0) else runs
    specs = jax.tree.map(lambda _: runs, state)
    stacked = lambda tree: jax.tree.map(
        lambda a: per_worker if a.ndim == 3 else runs, tree)
    return specs._replace(worker_state=stacked(state.worker_state),
                          received_state=stacked(state.received_state))

  def _place(self, state: TrainState, data: Data) -> Tuple[TrainState, Data]:
    """Seed-stacked state and data as global arrays on the layout's mesh:
    the seed axis split over "runs", the shared arrays replicated."""
    layout = self.layout

    def place(leaf, where):
      if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        raw = sharding.global_array(jax.random.key_data(leaf), where)
        return jax.random.wrap_key_data(raw, impl=jax.random.key_impl(leaf))
      return sharding.global_array(leaf, where)

    state = jax.tree.map(place, state, self._state_shardings(state))
    w = data.workers
    whole, runs = layout.sharding(), layout.sharding(sharding.RUNS)
    workers = dataclasses.replace(
        w, x=place(w.x, whole), y=place(w.y, whole),
        index=place(w.index, runs), counts=place(w.counts, runs))
    return state, Data(workers=workers, test_x=place(data.test_x, whole),
                       test_y=place(data.test_y, whole))

  def chunk(self, state: TrainState, data: Data, num_rounds: int):
    """``num_rounds`` rounds under ``lax.scan``, then a test evaluation."""
    state, metrics = jax.lax.scan(lambda s, _: self.round(s, data), state,
                                  None, length=num_rounds)
    return state, metrics, self.evaluate(state.params, state.model_state, data)

  # --- running -----------------------------------------------------------------
  def programs(self, seeds: Optional[Sequence[int]] = None) -> "Programs":
    """The jitted programs ``run`` compiles, and their inputs.

    Seeds are vectorized (``Execution.seed_batching`` "vmap": one input, the
    states stacked on a leading seed axis, split over the mesh's "runs" axis
    and padded to a whole number of seeds per shard) or run one after another
    (one input per seed).

    Args:
      seeds: a subset of ``config.seeds`` (default: all).

    Returns:
      ``Programs``.
    """
    c = self.config
    seeds = list(c.seeds if seeds is None else seeds)
    missing = [s for s in seeds if s not in c.seeds]
    if missing:
      raise ValueError(f"seeds {missing} are not seeds of the config "
                       f"{list(c.seeds)}")
    index = [c.seeds.index(s) for s in seeds]
    evaluate = lambda s, d: self.evaluate(s.params, s.model_state, d)
    layout = self.layout
    batched = self.execution.seed_batching == "vmap"
    if batched:
      axes = Data(workers=dataclasses.replace(self.workers, x=None, y=None,
                                              index=0, counts=0),
                  test_x=None, test_y=None)
      spmd = sharding.RUNS if layout is not None else None
      chunk = lambda s, d, k: jax.vmap(
          functools.partial(self.chunk, num_rounds=k), in_axes=(0, axes),
          spmd_axis_name=spmd)(s, d)
      evaluate = jax.vmap(evaluate, in_axes=(0, axes), spmd_axis_name=spmd)
      padded = list(index)
      if layout is not None:  # a whole number of seeds per "runs" shard
        padded += [index[-1]] * (-len(index) % layout.runs)
      rows = np.asarray(padded)
      workers = dataclasses.replace(self.workers,
                                    index=self.workers.index[rows],
                                    counts=self.workers.counts[rows])
      state = _stack([self.init(c.seeds[i]) for i in padded])
      data = Data(workers=workers, test_x=self.test_x, test_y=self.test_y)
      if layout is not None:
        state, data = self._place(state, data)
      inputs = [(state, data)]
      input_seeds = [tuple(seeds)]
    else:
      chunk = lambda s, d, k: self.chunk(s, d, k)
      inputs = [(self.init(s), self.data(i)) for s, i in zip(seeds, index)]
      input_seeds = [(s,) for s in seeds]
    if layout is not None:
      state_out = self._state_shardings(inputs[0][0])
      replicated = layout.sharding()
      jit_chunk = lambda fn: jax.jit(fn, out_shardings=(state_out, replicated,
                                                        replicated))
      jit_eval = jax.jit(evaluate, out_shardings=replicated)
    else:
      jit_chunk, jit_eval = jax.jit, jax.jit(evaluate)
    return Programs(inputs=inputs,
                    chunk=lambda k: jit_chunk(functools.partial(chunk, k=k)),
                    evaluate=jit_eval, batched=batched, seeds=input_seeds)

  def run(self, *, seeds: Optional[Sequence[int]] = None,
          progress: progress_lib.Progress = None,
          on_result: Optional[Callable[[RunResult], None]] = None,
          checkpoints: Optional[Checkpoints] = None,
          log: Optional[Any] = None
         ) -> List[RunResult]:
    """Trains seeds of the config; returns one ``RunResult`` each, in order.

    Every chunk length is compiled once, ahead of time, and shared by the
    seeds (their data splits are padded to one shape).

    Args:
      seeds: the seeds to train, a subset of ``config.seeds`` (default: all).
        A seed's numbers do not depend on which others are trained.
      progress: None (default): a tqdm bar when a terminal or a notebook
        shows the output; True / False: a bar or none; or a callable, given
        the number of rounds just completed (summed over seeds).
      on_result: called with each ``RunResult`` as soon as its seed is done
        (sequential seeds: one at a time; vmapped seeds: all at the end), so
        that a caller can persist it at once.
      checkpoints: where to save the run in progress between evaluations
        and restart it from (``checkpoints.OrbaxCheckpoints``); a restored run ends
        with exactly the numbers of an uninterrupted one.
      log: where to write the curves as they come (``logs.make``:
        TensorBoard, W&B), or None.

    Returns:
      The results.
    """
    c = self.config
    seeds = list(c.seeds if seeds is None else seeds)
    progress, close_bar = progress_lib.resolve(
        progress, c.steps * len(seeds), f"{c.aggregator} vs {c.attack}")
    try:
      return self._run(seeds, progress, on_result, checkpoints, log)
    finally:
      close_bar()
      if log is not None:
        log.close()

  def _run(self, seeds, progress, on_result, checkpoints, log):
    c = self.config
    programs = self.programs(seeds)
    runs = programs.inputs
    lengths = chunk_lengths(c.steps, c.eval_every)
    start = time.perf_counter()
    compiled = {k: programs.chunk(k).lower(*runs[0]).compile()
                for k in sorted(set(lengths))}
    compiled_eval = programs.evaluate.lower(*runs[0]).compile()
    compile_s = time.perf_counter() - start
    results = []
    width = len(seeds) if len(runs) == 1 else 1  # rounds count once per seed
    for (state, data), input_seeds in zip(runs, programs.seeds):
      start = time.perf_counter()
      done, accuracies, metrics = 0, None, []
      restored = None
      if checkpoints is not None:
        like = lambda step, st=state, d=data: self._history_like(
            programs.evaluate, st, d, lengths[:step])
        restored = checkpoints.restore(input_seeds, state, like)
      if restored is not None:
        done, state, history = restored
        accuracies = list(history["accuracies"])
        metrics = [history["metrics"]]
        if progress is not None:
          progress(sum(lengths[:done]) * width)
      else:
        accuracies = [compiled_eval(state, data)]
        if log is not None:
          acc0 = np.atleast_1d(sharding.to_host(accuracies[0]))
          for j, seed in enumerate(input_seeds):
            log.evaluation(seed, 0, float(acc0[j]))
      for i in range(done, len(lengths)):
        k = lengths[i]
        state, m, acc = compiled[k](state, data)
        accuracies.append(acc)
        metrics.append(m)
        if log is not None:
          host = jax.tree.map(lambda a: np.asarray(sharding.to_host(a)), m)
          log.chunk(input_seeds, sum(lengths[:i]),
                    {name: np.reshape(getattr(host, name), (-1, k))
                     for name in RoundMetrics._fields},
                    np.atleast_1d(sharding.to_host(acc)))
        if progress is not None:
          jax.block_until_ready(acc)
          progress(k * width)
        if (checkpoints is not None and i + 1 < len(lengths)
            and checkpoints.due()):
          checkpoints.save(input_seeds, i + 1, state,
                           _history(accuracies, metrics))
      history = _history(accuracies, metrics)
      accuracies, metrics = history["accuracies"], history["metrics"]
      seconds = time.perf_counter() - start
      if programs.batched:  # accuracies (E, S), metrics (S, T)
        split = [(accuracies[:, i], jax.tree.map(lambda a, i=i: a[i], metrics))
                 for i in range(len(seeds))]
        seconds /= len(seeds)
      else:
        split = [(accuracies, metrics)]
      for accuracy, metric in split:
        seed = seeds[len(results)]
        result = RunResult(
            config=c.replace(seeds=(seed,)), seed=seed,
            eval_steps=[0] + np.cumsum(lengths).astype(int).tolist(),
            test_accuracy=np.asarray(accuracy, np.float64).tolist(),
            **{name: np.asarray(getattr(metric, name), np.float64).tolist()
               for name in RoundMetrics._fields},
            compile_seconds=compile_s, train_seconds=seconds,
            execution=self.execution_record(input_seeds, jax.tree.leaves(
                state)[0].shape[0] if programs.batched else 1))
        results.append(result)
        if on_result is not None:
          on_result(result)
      if checkpoints is not None:
        checkpoints.discard(input_seeds)
    return results

  def execution_record(self, seeds: Sequence[int], batch: int = 1
                      ) -> Dict[str, Any]:
    """How a program computed ``seeds`` (``RunResult.execution``).

    Args:
      seeds: the seeds of one program (one seed, or the vectorized seeds).
      batch: the program's leading seed axis (the seeds, padded to a whole
        number per "runs" shard), 1 for one seed.
    """
    layout = self.layout
    return {"per_worker": self.execution.per_worker,
            "seed_batching": self.execution.seed_batching,
            "seeds_together": [int(s) for s in seeds], "batch": int(batch),
            "mesh": None if layout is None else {
                "runs": layout.runs, "workers": layout.workers,
                "devices": int(layout.mesh.devices.size),
                "processes": jax.process_count()}}

  def _history_like(self, evaluate, state, data, done_lengths):
    """Zeros shaped like the curves after the chunks ``done_lengths``."""
    lead = jax.eval_shape(evaluate, state, data).shape  # () or (S,)
    rounds = int(sum(done_lengths))
    return {"accuracies": np.zeros((len(done_lengths) + 1,) + lead, np.float32),
            "metrics": RoundMetrics(*[np.zeros(lead + (rounds,), np.float32)
                                      for _ in RoundMetrics._fields])}


def _history(accuracies: Sequence[Any], metrics: Sequence[Any]) -> Dict[str, Any]:
  """The curves so far on the host: accuracies (E, ...), metrics (..., T)."""
  return {"accuracies": np.stack([sharding.to_host(a) for a in accuracies]),
          "metrics": jax.tree.map(lambda *xs: np.concatenate(
              [sharding.to_host(x) for x in xs], axis=-1), *metrics)}


def chunk_lengths(steps: int, every: int) -> List[int]:
  """Rounds per chunk: evaluations after every ``every`` rounds and at T."""
  lengths = [every] * (steps // every)
  if steps % every:
    lengths.append(steps % every)
  return lengths


def train(config: RunConfig, *, dataset: Optional[data_lib.Dataset] = None,
          execution: Optional[Execution] = None,
          progress: progress_lib.Progress = None,
          on_result: Optional[Callable[[RunResult], None]] = None,
          log: Sequence[str] = (), log_dir: str = os.path.join("runs", "logs")
         ) -> List[RunResult]:
  """Builds the experiment and trains every seed of ``config``.

  Args:
    config: the run configuration.
    dataset: an already loaded dataset (default: loaded by name).
    execution: how to compute it (``Execution``; never changes the numbers).
    progress: None (default): a tqdm bar when a terminal or a notebook shows
      the output; False: none; or a callable given the rounds just done.
    on_result: called with each seed's ``RunResult`` as soon as it is done.
    log: "tensorboard" and/or "wandb" (``byzjax.logs``; default none).
    log_dir: where the TensorBoard event files (one folder per seed) and
      W&B's files go.

  Returns:
    One ``RunResult`` per seed.

  References:
    Allouah et al., "Fixing by Mixing", AISTATS 2023, Algorithm 3.
  """
  exp = Experiment(config, dataset=dataset, execution=execution)
  if exp.layout is not None and sharding.is_leader():
    print(f"byzjax: {sharding.describe(exp.layout)}", file=sys.stderr)
  logger = logs.make(log, log_dir=log_dir, config=config.to_dict(),
                     name=f"{config.aggregator}-{config.attack}") if log else None
  return exp.run(progress=progress, on_result=on_result, log=logger)
