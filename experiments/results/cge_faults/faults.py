"""The CGE paper's fault-type experiment (Figures 2-3), read off the saved runs.

Section 3.4.1 of Gupta, Liu, Vaidya makes three claims about D-SGD on MNIST
with n = 10 agents, f = 1 faulty, batch k = 16 (the figures are curves with
no printed numbers): every filter converges under every fault type; CGE's
fault tolerance is consistently good across the five types; under
coordinate-wise faults every filter's curves are erratic, with large spikes
in the training loss and dives in the test precision. This script measures
each from the runs of ``experiments/cge_faults.py`` (nothing is trained):

* the final test accuracy (mean ± population std over the seeds) and each
  filter's worst case over the fault types;
* the largest dive of the test accuracy: max over evaluations t of
  (best accuracy before t) - (accuracy at t), in points, and how many
  evaluations fall more than ``DIVE`` points below the best before them;
* the largest training loss after round ``SETTLED`` (the honest agents'
  minibatch loss, logged every round), beside the fault-free run's: a spike
  shows as a maximum far above it.

  python experiments/results/cge_faults/faults.py \
      [--main DIR] [--mean DIR] [--seeds S [S ...]] [--out FILE]

CGE runs the paper's eq. (7) step (the sum of the kept gradients) in
``cge_faults.py``; the row "CGE (mean)" is ``cge_faults_mean.py``'s ablation
(CGE averaging them, byzjax's default), read from ``--mean`` (default
``cge_mean/``). --seeds: only these of the grid's seeds (e.g. the complete
ones while another is being trained). Defaults: every seed, this folder, and
faults.md in it.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from byzjax import experiments as ex

HERE = os.path.dirname(os.path.abspath(__file__))
DIVE = 0.10  # a dive: an evaluation this far (accuracy) below the best before it
SETTLED = 100  # rounds after which the loss maximum is read
FAULT_FREE = "fault-free"
# The suffix of the mean-CGE ablation's filters (cge_mean/); not "_mean",
# which "trimmed_mean" ends with.
MEAN = ":mean"
ALGORITHMS = {"dsgd": "D-SGD", "dshb": "D-SHB", "dgd": "D-GD"}


def dives(result) -> Tuple[float, int]:
  """(largest dive, number of evaluations more than DIVE below the best before).

  The dive at evaluation t is max(acc_0..acc_{t-1}) - acc_t (0 at t = 0 and
  when the accuracy rises); accuracies are fractions.
  """
  acc = np.asarray(result.test_accuracy, np.float64)
  if acc.size < 2:
    return 0.0, 0
  drop = np.maximum.accumulate(acc)[:-1] - acc[1:]
  return float(max(drop.max(), 0.0)), int(np.sum(drop > DIVE))


def settled_max_loss(result, after: int = SETTLED) -> float:
  """The largest per-round training loss after round ``after``; NaN if none,
  or if the loss was NaN in every round after it (a diverged run)."""
  loss = np.asarray(result.loss, np.float64)[after:]
  return float(np.nanmax(loss)) if np.any(~np.isnan(loss)) else float("nan")


def display(a: str) -> str:
  """A filter's name in the tables: "CGE (mean)" for the ablation's CGE."""
  if a.endswith(MEAN):
    return ex.display("aggregator", a.removesuffix(MEAN)) + " (mean)"
  return ex.display("aggregator", a)


def _cells(records, suffix: str = "") -> Dict[Tuple[str, str], List]:
  """(filter + suffix, fault) -> the seeds' results; each fault-free baseline
  under (FAULT_FREE, its label)."""
  cells: Dict[Tuple[str, str], Dict[int, object]] = {}
  for r in records:
    if r.kind == "baseline":
      key = (FAULT_FREE, r.label)
    else:
      key = (r.settings["aggregator"] + suffix, r.settings["attack"])
    cells.setdefault(key, {}).setdefault(r.seed, r.result)
  return {k: [v[s] for s in sorted(v)] for k, v in cells.items()}


def report(main: str, mean: Optional[str] = None,
           seeds: Optional[Sequence[int]] = None) -> str:
  """The fault-type tables as Markdown (see the module docstring); ``mean``:
  the folder of ``cge_faults_mean.py`` (CGE averaging its kept gradients),
  shown as the row "CGE (mean)" when it holds results."""
  if not os.path.isfile(os.path.join(main, ex.GRID_FILE)):
    raise SystemExit(f"no cge_faults results in {main}")
  results = ex.load_grid_results(main, seeds=seeds)
  cells = _cells(results.records)
  if mean and os.path.isfile(os.path.join(mean, ex.GRID_FILE)):
    cells.update(_cells(ex.load_grid_results(mean, seeds=seeds).records, MEAN))
  order = [a for f in ex.CGE_FILTERS for a in (f, f + MEAN)]
  filters = [a for a in order if any(k[0] == a for k in cells)]
  faults = [a for a in ex.CGE_FAULTS if any(k[1] == a for k in cells)]
  if not filters:
    raise SystemExit(f"{main}: no run of a CGE filter is saved yet")
  seeds = sorted({r.seed for r in results.records})
  agg = display
  att = lambda a: ex.display("attack", a)
  bases = [(label, res) for (kind, label), res in cells.items()
           if kind == FAULT_FREE]

  def table(title, fmt, note=""):
    out = ["", f"## {title}", ""] + ([note, ""] if note else [])
    out.append("| filter \\ fault | " + " | ".join(att(f) for f in faults)
               + " |")
    out.append("| :-- | " + " | ".join("--:" for _ in faults) + " |")
    for a in filters:
      row = [fmt(cells[(a, f)]) if (a, f) in cells else "-" for f in faults]
      out.append(f"| {agg(a)} | " + " | ".join(row) + " |")
    return out

  config = next(r for r in results.records if r.kind == "grid").result.config
  algorithm = ALGORITHMS.get(config.algorithm, config.algorithm)
  out = ["# CGE paper, fault types (Figures 2-3), measured", "",
         f"n = {config.n} agents, f = {config.f} faulty, batch "
         f"{config.batch_size}, {algorithm}, {config.steps} rounds; seeds "
         f"{', '.join(map(str, seeds))}; cells: mean ± population std over "
         "the seeds (a cell lists how many it has when fewer)."]

  def final(res):
    n = f" ({len(res)})" if len(res) < len(seeds) else ""
    return ex.format_stat(ex.stat_of(
        [ex.metric_value(r, "final_accuracy") for r in res])) + n

  out += table("Final test accuracy (%)", final)
  out += ["", "| filter | worst case (fault) |", "| :-- | --: |"]
  for a in filters:
    done = [f for f in faults if (a, f) in cells]
    if done:
      mean = {f: np.mean([ex.metric_value(r, "final_accuracy")
                          for r in cells[(a, f)]]) for f in done}
      worst = min(done, key=mean.get)
      out.append(f"| {agg(a)} | {100 * mean[worst]:.2f} ({att(worst)}) |")
  out += [""] + [f"{label}: {final(res)}  " for label, res in bases]

  def dive(res):
    d = [dives(r) for r in res]
    return (f"{100 * np.mean([x[0] for x in d]):.1f} "
            f"({np.mean([x[1] for x in d]):.1f})")

  out += table(f"Largest test-accuracy dive (points) and, in brackets, the "
               f"evaluations more than {100 * DIVE:.0f} points below the best "
               "before them", dive,
               f"Mean over the seeds; evaluations every {config.eval_every} "
               "rounds.")
  out += [""] + [f"{label}: {dive(res)}  " for label, res in bases]

  def loss(res):
    return f"{np.mean([settled_max_loss(r) for r in res]):.3f}"

  out += table(f"Largest training loss after round {SETTLED}", loss,
               "The honest agents' mean minibatch loss, mean over the seeds "
               "of each run's maximum (nan: a seed's loss was NaN from round "
               f"{SETTLED} on, i.e. it diverged).")
  out += [""] + [f"{label}: {loss(res)}  " for label, res in bases]
  return "\n".join(out) + "\n"


def main(argv=None) -> int:
  return ex.report_main(report, __doc__, os.path.join(HERE, "faults.md"),
                        argv, main=HERE, mean=os.path.join(HERE, "cge_mean"))


if __name__ == "__main__":
  raise SystemExit(main())
