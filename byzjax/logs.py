"""Optional run logging: TensorBoard event files and Weights & Biases.

Off by default. ``make(["tensorboard"], log_dir=..., name=..., config=...)``
gives the object ``Experiment.run(log=...)`` writes to after every chunk of
rounds: per seed and round the loss, ||R_t - s_t||, kappa_hat_t, the
Byzantine influence, the learning rate and the attack's eta (non-finite
values, e.g. a metric a run does not compute, are skipped), and the test
accuracy at each evaluation. TensorBoard files are written with tensorboardX
(``pip install 'byzjax[tensorboard]'``; no TensorFlow), one folder per seed;
W&B runs (``pip install 'byzjax[wandb]'``) are grouped by the byzjax run,
one per seed, with the RunConfig as their config (offline with
$WANDB_MODE=offline).
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

KINDS = ("tensorboard", "wandb")
# RoundMetrics field -> tag.
TAGS = {"loss": "train/loss", "aggregate_error": "robustness/aggregate_error",
        "kappa_hat": "robustness/kappa_hat",
        "byzantine_influence": "robustness/byzantine_influence",
        "learning_rate": "train/learning_rate", "eta": "attack/eta"}
ACCURACY_TAG = "test/accuracy"
_EXTRAS = {"tensorboard": ("tensorboardX", "tensorboard"),
           "wandb": ("wandb", "wandb")}


def check(kinds: Sequence[str]) -> List[str]:
  """The kinds, checked (known, and their package installed).

  Raises:
    ValueError: an unknown kind or a missing package (with the pip command).
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  out = []
  for kind in kinds:
    if kind not in KINDS:
      raise ValueError(f"log must be one of {', '.join(KINDS)}, got {kind!r}")
    module, extra = _EXTRAS[kind]
    if importlib.util.find_spec(module) is None:
      raise ValueError(f"--log {kind} needs the package {module}: pip install "
                       f"'byzjax[{extra}]'")
    out.append(kind)
  return out


class TensorBoard:
  """Event files under ``log_dir/seed-<seed>`` (tensorboardX)."""

  def __init__(self, log_dir: str):
    self.log_dir = log_dir
    self._writers: Dict[int, Any] = {}

  def _writer(self, seed: int):
    if seed not in self._writers:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writers[seed] = SummaryWriter(
          os.path.join(self.log_dir, f"seed-{seed}"))
    return self._writers[seed]

  def write(self, seed: int, step: int, scalars: Mapping[str, float]) -> None:
    w = self._writer(seed)
    for tag, value in scalars.items():
      w.add_scalar(tag, value, step)

  def close(self) -> None:
    for w in self._writers.values():
      w.close()
    self._writers.clear()


class WandB:
  """One W&B run per seed, grouped under ``name``."""

  def __init__(self, name: str, config: Mapping[str, Any], *,
               project: Optional[str] = None, log_dir: Optional[str] = None):
    self.name, self.config = name, dict(config)
    self.project = project or os.environ.get("WANDB_PROJECT", "byzjax")
    self.log_dir = log_dir
    self._runs: Dict[int, Any] = {}

  def _run(self, seed: int):
    if seed not in self._runs:
      import wandb  # pylint: disable=g-import-not-at-top
      if self.log_dir:
        os.makedirs(self.log_dir, exist_ok=True)
      self._runs[seed] = wandb.init(
          project=self.project, group=self.name, name=f"{self.name}/seed-{seed}",
          config={**self.config, "seed": seed}, dir=self.log_dir, reinit=True)
    return self._runs[seed]

  def write(self, seed: int, step: int, scalars: Mapping[str, float]) -> None:
    self._run(seed).log(dict(scalars), step=step)

  def close(self) -> None:
    for run in self._runs.values():
      run.finish()
    self._runs.clear()


class Logs:
  """Several loggers as one; what ``Experiment.run(log=...)`` takes."""

  def __init__(self, loggers: Sequence[Any]):
    self.loggers = list(loggers)

  def chunk(self, seeds: Sequence[int], first_round: int,
            metrics: Mapping[str, np.ndarray], accuracy: np.ndarray) -> None:
    """Rounds ``first_round + 1 ..`` of each seed, then the evaluation.

    Args:
      seeds: the seeds of this call, in order.
      first_round: rounds done before this chunk.
      metrics: RoundMetrics field -> (seeds, rounds) array.
      accuracy: (seeds,) test accuracy after the chunk.
    """
    for i, seed in enumerate(seeds):
      series = {tag: np.asarray(metrics[field])[i] for field, tag in TAGS.items()}
      rounds = len(series[TAGS["loss"]])
      for j in range(rounds):
        scalars = {tag: float(v[j]) for tag, v in series.items()
                   if math.isfinite(v[j])}
        if j == rounds - 1:  # the evaluation after the chunk, same step
          scalars[ACCURACY_TAG] = float(accuracy[i])
        for logger in self.loggers:
          logger.write(seed, first_round + j + 1, scalars)

  def evaluation(self, seed: int, step: int, accuracy: float) -> None:
    for logger in self.loggers:
      logger.write(seed, step, {ACCURACY_TAG: accuracy})

  def close(self) -> None:
    for logger in self.loggers:
      logger.close()


def make(kinds: Sequence[str], *, log_dir: str, name: str,
         config: Mapping[str, Any], project: Optional[str] = None
        ) -> Optional[Logs]:
  """The loggers of ``kinds`` for one run (None when ``kinds`` is empty).

  Args:
    kinds: "tensorboard" and/or "wandb".
    log_dir: this run's folder (TensorBoard's event files, W&B's files).
    name: the run's name (W&B's group).
    config: its settings (W&B's config).
    project: the W&B project (default $WANDB_PROJECT or "byzjax").
  """
  kinds = check(kinds)
  loggers = []
  for kind in kinds:
    if kind == "tensorboard":
      loggers.append(TensorBoard(log_dir))
    else:
      loggers.append(WandB(name, config, project=project,
                           log_dir=os.path.join(log_dir, "wandb")))
  return Logs(loggers) if loggers else None
