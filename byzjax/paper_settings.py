"""The papers' hyperparameters as ``RunConfig`` presets and grid helpers.

``fixing_by_mixing_mnist`` / ``fixing_by_mixing_cifar10``: robust D-SHB with
Table 3 of Allouah et al. (2023); ``cge_mnist``: the CGE paper's D-SGD; the
methods, attacks and baseline of Table 2; ``Grid.adjust`` functions for the
papers' Krum, Multi-Krum and CGE variants.

References:
  Allouah et al., "Fixing by Mixing", AISTATS 2023 (Section 6, Table 3,
  Appendix 14). Gupta, Liu, Vaidya, "Comparative Gradient Elimination"
  (Section 3). Damaskinos et al., "AggregaThor", SysML 2019.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Sequence

from byzjax import paper_results
from byzjax.config import RunConfig, build_rule
from byzjax.grid import Baseline

__all__ = [
    "CGE_FAULTS", "CGE_FAULT_FREE", "CGE_FAULT_FREE_SUM", "CGE_FILTERS",
    "FBM_ATTACKS", "FBM_BASELINE", "FBM_PRE", "FBM_RULES",
    "aggregathor_multi_krum", "cge_mnist", "cge_paper_rules",
    "fixing_by_mixing_cifar10", "fixing_by_mixing_krum",
    "fixing_by_mixing_mnist", "methods", "rows_into_last_stage",
    "with_stage_args",
]


def rows_into_last_stage(config: RunConfig) -> int:
  """How many rows reach the aggregator after the pre-aggregations.

  E.g. 17 for "nnm+krum", 9 for "bucketing+krum" (n = 17, f = 4: buckets of
  s = 2).
  """
  rule = build_rule(config)
  m = config.n
  for stage, hyper in rule.stages[:-1]:
    m = stage.validate(m, f=rule.f, **hyper)
  return m


def with_stage_args(config: RunConfig, **per_stage: Mapping[str, Any]
                   ) -> RunConfig:
  """Adds hyperparameters to the stages of ``config.aggregator`` present.

  Stages the aggregator does not use are skipped, and values already set
  are kept, so one call serves every method of a grid:
  ``with_stage_args(c, multi_krum={"m": 2})``.

  Args:
    config: the run configuration.
    **per_stage: stage name -> hyperparameters.

  Returns:
    The configuration with the hyperparameters added.
  """
  stages = config.aggregator.split("+")
  args = {k: dict(v) for k, v in config.aggregator_args.items()}
  changed = False
  for stage, hyper in per_stage.items():
    if stage in stages:
      for k, v in hyper.items():
        if k not in args.setdefault(stage, {}):
          args[stage][k] = v
          changed = True
  return config.replace(aggregator_args=args) if changed else config


def fixing_by_mixing_krum(config: RunConfig) -> RunConfig:
  """Krum and Multi-Krum as in Allouah et al. 2023 (a ``Grid.adjust``).

  Their Krum scores a vector by its n - f nearest vectors, itself included,
  i.e. ``neighbours = m - f - 1`` for the m rows reaching the rule (m = n,
  or the number of buckets after Bucketing); Multi-Krum averages the m - f
  best. Other rules are left as they are.

  References:
    Allouah et al., "Fixing by Mixing", AISTATS 2023, Proposition 3.
  """
  last = config.aggregator.split("+")[-1]
  if last not in ("krum", "multi_krum"):
    return config
  m = rows_into_last_stage(config)
  hyper = {"neighbours": m - config.rule_f - 1}
  if last == "multi_krum":
    hyper["m"] = m - config.rule_f
  return with_stage_args(config, **{last: hyper})


def cge_paper_rules(config: RunConfig) -> RunConfig:
  """The CGE paper's filters (a ``Grid.adjust``): CGE takes its eq. (7) step,
  the SUM of the n - f kept gradients (``reduction="sum"``), and Multi-KRUM
  averages the m = 2 gradients of least score. Other rules are left as they
  are (GeoMed, MoM, CWTM and Multi-KRUM return a gradient-sized vector in the
  paper too).

  References:
    Gupta, Liu, Vaidya, "Comparative Gradient Elimination", eq. (7) and
    Section 3.2.
  """
  return with_stage_args(config, multi_krum={"m": 2}, cge={"reduction": "sum"})


def aggregathor_multi_krum(config: RunConfig) -> RunConfig:
  """Multi-Krum with m = n - f - 2, as AggregaThor uses it (a ``Grid.adjust``).

  References:
    Damaskinos et al., "AggregaThor", SysML 2019 (supplementary, Section 2:
    m-tilde = n - f - 2).
  """
  return with_stage_args(config, multi_krum={"m": config.n - config.rule_f - 2})


# The robust rules and pre-aggregations of Allouah et al. (Table 2 order).
FBM_RULES = ("krum", "geometric_median", "median", "trimmed_mean")


FBM_PRE = ("", "bucketing", "nnm")


FBM_ATTACKS = tuple(paper_results.ATTACK_NAMES.values())


FBM_BASELINE = Baseline("D-SHB (f = 0)", {"f": 0, "aggregator": "mean"})


def methods(rules: Sequence[str], pre: Sequence[str] = FBM_PRE) -> List[str]:
  """Each rule alone and after each pre-aggregation, rule by rule.

  ``methods(["krum"])`` is ``["krum", "bucketing+krum", "nnm+krum"]``.
  """
  return [f"{p}+{r}" if p else r for r in rules for p in pre]


def fixing_by_mixing_mnist(**changes: Any) -> RunConfig:
  """Robust D-SHB on MNIST with the hyperparameters of Allouah et al.

  Table 3 / Section 6.1: the CNN C(20)-R-M-C(20)-R-M-L(500)-R-L(10), T =
  800, b = 25, gamma_t = 0.75 / (1 + floor(t / 50)), beta = 0.9, clipping
  2, l2 1e-4; n = 17, f = 4, Dirichlet alpha = 0.1. Where the paper is
  silent, the choices of the authors' group's code (LPD-EPFL's
  ``reproduce.py``): the test accuracy every 5 rounds (``evaluation-delta``),
  the optimized attacks' greedy line search, label flipping as the raw
  flipped gradient, the mimic heuristic's 100-step learning phase. Kept from
  Table 3 where the code differs: the second convolution's 20 channels (the
  code's ``simples-conv`` has 50: ``model="lenet"``); kept from byzjax: the
  disjoint per-class Dirichlet split (the code's per-worker draws:
  ``split="dirichlet_per_worker"``).

  Args:
    **changes: fields to change.

  Returns:
    The configuration.
  """
  base = RunConfig(
      dataset="mnist", model="mnist_cnn", n=17, f=4, split="dirichlet",
      alpha=0.1, algorithm="dshb", steps=800, batch_size=25,
      learning_rate=0.75, schedule="inverse_step", decay_every=50,
      momentum=0.9, clip=2.0, weight_decay=1e-4, eval_every=5)
  return base.replace(**changes)


def fixing_by_mixing_cifar10(**changes: Any) -> RunConfig:
  """Robust D-SHB on CIFAR-10 with the hyperparameters of Allouah et al.

  Table 3: the CIFAR-10 CNN, T = 2000, b = 50, gamma = 0.25 then 0.025 after
  step 1500, beta = 0.9, clipping 5, l2 1e-2; n = 17; training images
  mirrored horizontally with probability 1/2 (Appendix 14.2, and the
  authors' code's ``RandomHorizontalFlip``). Table 3's other momentum,
  beta = 0.99, is that of Figure 28 only (f = 4, alpha = 10):
  ``momentum=0.99``.

  Args:
    **changes: fields to change.

  Returns:
    The configuration.
  """
  base = RunConfig(
      dataset="cifar10", model="cifar_cnn", n=17, f=2, split="dirichlet",
      alpha=1.0, algorithm="dshb", steps=2000, batch_size=50,
      learning_rate=0.25, schedule="multistep", milestones=(1500,),
      decay_factor=0.1, momentum=0.9, clip=5.0, weight_decay=1e-2,
      eval_every=50, hflip=True)
  return base.replace(**changes)


def cge_mnist(**changes: Any) -> RunConfig:
  """D-SGD on MNIST as in the CGE paper's experiments (Section 3.1).

  n = 10 agents, each sampling its own i.i.d. data (``byzantine_data``: the
  faulty agents hold data too), LeNet, constant step size 0.1, no momentum,
  clipping or l2 (none is mentioned). The paper gives no number of steps;
  we use T = 1000, evaluated every 50.

  Args:
    **changes: fields to change.

  Returns:
    The configuration.

  References:
    Gupta, Liu, Vaidya, "Comparative Gradient Elimination", Section 3.
  """
  base = RunConfig(
      dataset="mnist", model="lenet", n=10, f=1, split="iid", alpha=None,
      byzantine_data=True, algorithm="dsgd", steps=1000, batch_size=16,
      learning_rate=0.1, schedule="constant", momentum=0.0, clip=None,
      weight_decay=0.0, eval_every=50)
  return base.replace(**changes)


CGE_FILTERS = ("geometric_median", "median_of_means", "trimmed_mean",
               "multi_krum", "cge")


CGE_FAULTS = ("gradient_reverse", "coordinate_wise", "norm_confusing",
              "label_flip", "gaussian")


CGE_FAULT_FREE = Baseline("fault-free (f = 0, mean)", {"f": 0, "aggregator": "mean"})


# The paper's fault-free D-SGD, eq. (3): the sum of the n gradients (CGE with
# f = 0 under ``cge_paper_rules``), at the same step size 0.1.
CGE_FAULT_FREE_SUM = Baseline("fault-free (f = 0, sum, eq. 3)",
                              {"f": 0, "aggregator": "cge"})
