"""The CGE paper's fraction-of-faults and batch-size experiment (Figures 4-11), read off the saved runs.

Section 3.4.1 of Gupta, Liu, Vaidya (D-SGD on MNIST, n = 10 agents, LeNet;
the figures are curves with no printed numbers) makes three claims about
Multi-KRUM (m = 2) and CGE under f = 1-4 faulty agents and batch sizes
k = 16 and 64, which this script measures from the runs of
``experiments/cge_fraction.py`` (nothing is trained):

1. "the learning process for both the gradient-filters deteriorates with
   increase in the fraction of faults" (Figures 8-11): for each filter, k and
   fault type, the accuracy at f = 1 minus at f = 4, and in how many of the
   three steps f -> f + 1 the mean accuracy falls;
2. "the increase in the batch-size improves the fault-tolerance for any given
   fraction of faults" (Figures 4-11): for each filter, f and fault type, the
   accuracy at k = 64 minus at k = 16;
3. Section 3.5: under coordinate-wise faults CGE's training loss "is littered
   with spikes even in the later stages", and "the magnitude of these spikes
   attenuates significantly" from k = 16 to k = 64 (Figure 8(b) against
   10(b)): the largest training loss after round ``SETTLED`` (the honest
   agents' minibatch loss, logged every round), beside the fault-free run's at
   the same k (a smaller batch's loss is noisier without any fault).

Accuracy is read two ways: the final test accuracy (the grid's metric), and
the late accuracy, the mean of the evaluations in the last ``LATE`` rounds,
which a single dive of an erratic curve moves less. Claims 1 and 2 are
counted on the late accuracy's mean over the seeds.

  python experiments/results/cge_fraction/fraction.py \
      [--main DIR] [--mean DIR] [--seeds S [S ...]] [--out FILE]

CGE takes the paper's eq. (7) step (the sum of the kept gradients) in
``cge_fraction.py``; the filter "CGE (mean)" is ``cge_fraction_mean.py``'s
ablation (CGE averaging them), read from ``--mean`` (default ``cge_mean/``).
--seeds: only these of the grid's seeds (e.g. the complete ones while another
is being trained). Defaults: every seed, this folder, and fraction.md in it.
Also draws the paper's Figures 8-11 (``figures``) into DIR/plots.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from byzjax import experiments as ex
from byzjax import plots

HERE = os.path.dirname(os.path.abspath(__file__))


def _faults_script():
  """cge_faults/faults.py, whose loss measure and ablation names this script
  shares."""
  path = os.path.join(HERE, os.pardir, "cge_faults", "faults.py")
  spec = importlib.util.spec_from_file_location("cge_faults_faults", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


_FAULTS = _faults_script()
# The loss measure, and the suffix and names of the mean-CGE ablation's filters.
settled_max_loss, MEAN, display = _FAULTS.settled_max_loss, _FAULTS.MEAN, _FAULTS.display
LATE = 200  # late accuracy: the mean of the evaluations at rounds >= T - LATE
SETTLED = 100  # rounds after which the loss maximum is read (faults.py's)
FILTERS = ("multi_krum", "cge", "cge" + MEAN)
TIE = 0.0005  # differences of late accuracy within 0.05 points count as equal
SPIKE_FAULT = "coordinate_wise"
FAULT_FREE = "fault-free"

Key = Tuple[str, int, int, str]  # (filter, f, batch size, fault)


def late_accuracy(result, late: int = LATE) -> float:
  """The mean test accuracy (a fraction) of the evaluations at rounds >=
  last evaluated round - ``late``."""
  steps = np.asarray(result.eval_steps)
  acc = np.asarray(result.test_accuracy, np.float64)
  return float(acc[steps >= steps[-1] - late].mean())


# The fault-free baselines: averaging the n gradients, and summing them (the
# paper's eq. (3), at the step size of eq. (7)).
AVERAGING, SUM = ex.CGE_FAULT_FREE.label, ex.CGE_FAULT_FREE_SUM.label


def cells_of(records, suffix: str = "") -> Dict[Key, List]:
  """(filter + suffix, f, k, fault) -> the seeds' results; the fault-free
  baseline labelled L of batch size k under (FAULT_FREE, 0, k, L)."""
  cells: Dict[Key, Dict[int, object]] = {}
  for r in records:
    s = r.settings
    if r.kind == "baseline":
      key = (FAULT_FREE, 0, int(s["batch_size"]), r.label)
    else:
      key = (s["aggregator"] + suffix, int(s["f"]), int(s["batch_size"]),
             s["attack"])
    cells.setdefault(key, {}).setdefault(r.seed, r.result)
  return {k: [v[s] for s in sorted(v)] for k, v in cells.items()}


def _mean(results: Optional[Sequence], measure) -> float:
  return float(np.mean([measure(r) for r in results])) if results else float("nan")


def signs(differences: Sequence[float]) -> str:
  """How many differences are positive, negative, and within ``TIE`` of 0."""
  d = np.asarray(differences, np.float64)
  return (f"{int(np.sum(d > TIE))} up, {int(np.sum(d < -TIE))} down, "
          f"{int(np.sum(np.abs(d) <= TIE))} within {100 * TIE:.2f} points")


def falls(means: Sequence[float]) -> int:
  """In how many consecutive steps of ``means`` the value falls."""
  m = np.asarray(means, np.float64)
  return int(np.sum(m[1:] < m[:-1]))


def load_cells(main: str, mean: Optional[str] = None,
               seeds: Optional[Sequence[int]] = None):
  """(the main grid's results, the cells of both folders): ``mean``, the
  folder of ``cge_fraction_mean.py``, adds the filter "cge_mean" when it
  holds results."""
  results = ex.load_grid_results(main, seeds=seeds)
  cells = cells_of(results.records)
  if mean and os.path.isfile(os.path.join(mean, ex.GRID_FILE)):
    cells.update(cells_of(ex.load_grid_results(mean, seeds=seeds).records, MEAN))
  return results, cells


def report(main: str, mean: Optional[str] = None,
           seeds: Optional[Sequence[int]] = None) -> str:
  """The fraction and batch-size tables and claims as Markdown (``mean``:
  the ablation's folder, see ``load_cells``; ``seeds``: only these of the
  grid's seeds; default all)."""
  if not os.path.isfile(os.path.join(main, ex.GRID_FILE)):
    raise SystemExit(f"no cge_fraction results in {main}")
  results, cells = load_cells(main, mean, seeds)
  grid_keys = [k for k in cells if k[0] != FAULT_FREE]
  if not grid_keys:
    raise SystemExit(f"{main}: no run of a filter is saved yet")
  filters = [a for a in FILTERS if any(k[0] == a for k in grid_keys)]
  fs = sorted({k[1] for k in grid_keys})
  ks = sorted({k[2] for k in grid_keys})
  faults = [a for a in ex.CGE_FAULTS if any(k[3] == a for k in grid_keys)]
  seeds = sorted({r.seed for r in results.records})
  agg = display
  att = lambda a: ex.display("attack", a)
  config = next(r for r in results.records if r.kind == "grid").result.config
  late = lambda r: late_accuracy(r, LATE)
  final = lambda r: ex.metric_value(r, "final_accuracy")

  def stat(res, measure):
    if not res:
      return "-"
    n = f" ({len(res)})" if len(res) < len(seeds) else ""
    return ex.format_stat(ex.stat_of([measure(r) for r in res])) + n

  def header(second, *extra):
    """A table's header lines: filter, ``second``, the faults, ``extra``."""
    names = ["filter", second] + [att(a) for a in faults] + list(extra)
    return ["| " + " | ".join(names) + " |",
            "| :-- | " + " | ".join("--:" for _ in names[1:]) + " |"]

  def points(x):
    return "-" if not np.isfinite(x) else f"{100 * x:+.1f}"

  out = ["# CGE paper, fraction of faults and batch size (Figures 4-11), measured",
         "", f"n = {config.n} agents, D-SGD, {config.steps} rounds, "
         f"evaluation every {config.eval_every}; seeds "
         f"{', '.join(map(str, seeds))}; cells: mean ± population std over the "
         "seeds (a cell lists how many it has when fewer). Late accuracy: the "
         f"mean of the evaluations in the last {LATE} rounds."]

  for title, measure in (("Final test accuracy (%)", final),
                         (f"Late test accuracy (%), last {LATE} rounds", late)):
    for k in ks:
      out += ["", f"## {title}, batch size k = {k}", "",
              *header("f", "worst case")]
      for a in filters:
        for f in fs:
          row = [stat(cells.get((a, f, k, t)), measure) for t in faults]
          mean = {t: _mean(cells.get((a, f, k, t)), measure) for t in faults}
          done = [t for t in faults if np.isfinite(mean[t])]
          worst = min(done, key=mean.get) if done else None
          worst_text = (f"{100 * mean[worst]:.2f} ({att(worst)})"
                        if worst else "-")
          out.append(f"| {agg(a)} | {f} | " + " | ".join(row)
                     + f" | {worst_text} |")
      bases = [(label, cells.get((FAULT_FREE, 0, k, label)))
               for label in (AVERAGING, SUM)]
      out += [""] + [f"{label}, k = {k}: {stat(base, measure)}  "
                     for label, base in bases if base]

  # Claim 1: deterioration with f.
  series = []
  if len(fs) >= 2:
    out += ["", "## Claim 1: accuracy against the fraction of faults", "",
            f"Late accuracy at f = {fs[0]} minus at f = {fs[-1]} (points; "
            "positive: it deteriorates), and in brackets in how many of the "
            f"{len(fs) - 1} steps f -> f + 1 the mean falls.", "",
            *header("k")]
    for a in filters:
      for k in ks:
        row = []
        for t in faults:
          means = [_mean(cells.get((a, f, k, t)), late) for f in fs]
          if not np.all(np.isfinite(means)):
            row.append("-")
            continue
          drop, steps = means[0] - means[-1], falls(means)
          series.append((a, k, t, drop, steps))
          row.append(f"{100 * drop:+.1f} ({steps})")
        out.append(f"| {agg(a)} | {k} | " + " | ".join(row) + " |")

  # Claim 2: the larger batch.
  gains = []
  if len(ks) >= 2:
    small, large = ks[0], ks[-1]
    out += ["", f"## Claim 2: batch size k = {large} against k = {small}", "",
            f"Late accuracy at k = {large} minus at k = {small} (points; "
            "positive: the larger batch is better).", "",
            *header("f")]
    for a in filters:
      for f in fs:
        row = []
        for t in faults:
          gain = (_mean(cells.get((a, f, large, t)), late)
                  - _mean(cells.get((a, f, small, t)), late))
          if np.isfinite(gain):
            gains.append((a, f, t, gain))
          row.append(points(gain))
        out.append(f"| {agg(a)} | {f} | " + " | ".join(row) + " |")

  # Claim 3: loss spikes under coordinate-wise faults.
  out += ["", f"## Claim 3: largest training loss after round {SETTLED}, "
          f"{att(SPIKE_FAULT)} faults", "",
          "The honest agents' mean minibatch loss; mean over the seeds of each "
          "run's maximum (nan: a seed's loss was NaN from round "
          f"{SETTLED} on, i.e. it diverged); the fault-free runs' at the same "
          "k in the last rows.",
          "", "| filter | " + " | ".join(f"f = {f}, k = {k}" for f in fs
                                         for k in ks) + " |",
          "| :-- | " + " | ".join("--:" for _ in fs for _ in ks) + " |"]
  max_loss = lambda r: settled_max_loss(r, SETTLED)
  spike = lambda a, f, k: _mean(cells.get((a, f, k, SPIKE_FAULT)), max_loss)
  fmt = lambda x: "-" if not np.isfinite(x) else f"{x:.2f}"
  for a in filters:
    out.append(f"| {agg(a)} | " + " | ".join(fmt(spike(a, f, k)) for f in fs
                                             for k in ks) + " |")
  free = {k: _mean(cells.get((FAULT_FREE, 0, k, AVERAGING)), max_loss)
          for k in ks}
  for label in (AVERAGING, SUM):
    if any(cells.get((FAULT_FREE, 0, k, label)) for k in ks):
      out.append(f"| {label} | " + " | ".join(
          fmt(_mean(cells.get((FAULT_FREE, 0, k, label)), max_loss))
          for _ in fs for k in ks) + " |")

  # The claims, counted.
  out += ["", "## The claims, counted", ""]
  if series:
    steps = sum(n for *_, n in series)
    out.append(f"- Claim 1, the late accuracy at f = {fs[0]} minus at f = "
               f"{fs[-1]} over the {len(series)} (filter, k, fault) series: "
               f"{signs([d for *_, d, _ in series])} (up: it deteriorates); "
               f"it falls in {steps} of {len(series) * (len(fs) - 1)} steps "
               "f -> f + 1.")
    for a in filters:
      mine = [d for b, _, _, d, _ in series if b == a]
      if not mine:
        continue
      out.append(f"  - {agg(a)}: {signs(mine)}; from {100 * min(mine):+.1f} "
                 f"to {100 * max(mine):+.1f} points.")
  if gains:
    out.append(f"- Claim 2, the late accuracy at k = {ks[-1]} minus at k = "
               f"{ks[0]} over the {len(gains)} (filter, f, fault) cells: "
               f"{signs([g for *_, g in gains])} (up: the larger batch is "
               f"better); from {100 * min(g for *_, g in gains):+.1f} to "
               f"{100 * max(g for *_, g in gains):+.1f} points.")
    for a in filters:
      for f in fs:
        mine = [g for b, c, _, g in gains if b == a and c == f]
        if mine:
          out.append(f"  - {agg(a)}, f = {f}: {signs(mine)} (mean "
                     f"{100 * np.mean(mine):+.1f} points).")
  for cge in (a for a in filters if a.startswith("cge")):
    if len(ks) < 2:
      break
    pairs = [(f, spike(cge, f, ks[0]), spike(cge, f, ks[-1])) for f in fs]
    pairs = [p for p in pairs if np.isfinite(p[1]) and np.isfinite(p[2])]
    if pairs:
      lower = sum(b < a for _, a, b in pairs)
      text = ", ".join(f"f = {f}: {a:.2f} -> {b:.2f}" for f, a, b in pairs)
      out.append(f"- Claim 3: {agg(cge)}'s largest loss after round {SETTLED} "
                 f"under {att(SPIKE_FAULT)} faults is lower at k = {ks[-1]} "
                 f"than at k = {ks[0]} for {lower} of {len(pairs)} values of f "
                 f"({text}; fault-free averaging {fmt(free[ks[0]])} -> "
                 f"{fmt(free[ks[-1]])}).")
  return "\n".join(out) + "\n"


# The paper's figure for each (filter, batch size): Figures 8-11.
PAPER_FIGURES = {("cge", 16): 8, ("multi_krum", 16): 9, ("cge", 64): 10,
                 ("multi_krum", 64): 11, ("cge" + MEAN, 16): 8,
                 ("cge" + MEAN, 64): 10}


def figure(cells: Dict[Key, List], a: str, k: int):
  """The paper's figure for filter ``a`` and batch size ``k`` (Figures
  8-11): a row per fault type, the honest agents' training loss (per round,
  log scale) and the test accuracy (per evaluation), one line per f (mean over
  the seeds; a run whose loss diverged to NaN leaves a gap in its loss curve),
  the fault-free run at the same batch size dashed. Returns the figure."""
  plt = plots.pyplot()
  keys = [key for key in cells if key[0] == a and key[2] == k]
  fs = sorted({key[1] for key in keys})
  faults = [t for t in ex.CGE_FAULTS if any(key[3] == t for key in keys)]
  fig, axes = plt.subplots(len(faults), 2, figsize=(8.5, 2.1 * len(faults) + 0.8),
                           sharex=True, squeeze=False, layout="constrained")
  lines_of = lambda t: [(f"f = {f}", f"C{i}", "-", cells.get((a, f, k, t)))
                        for i, f in enumerate(fs)] + [
                            ("fault-free", "k", "--",
                             cells.get((FAULT_FREE, 0, k, AVERAGING)))]
  for row, t in zip(axes, faults):
    for label, colour, style, results in lines_of(t):
      if not results:
        continue
      loss = np.mean([np.asarray(r.loss, np.float64) for r in results], 0)
      row[0].plot(np.arange(1, len(loss) + 1), loss, color=colour, ls=style,
                  lw=0.7, label=label)
      acc = np.mean([np.asarray(r.test_accuracy, np.float64) for r in results], 0)
      row[1].plot(results[0].eval_steps, 100 * acc, color=colour, ls=style,
                  lw=1.2, label=label)
    row[0].set_yscale("log")
    row[0].set_ylabel(f"{ex.display('attack', t)}\ntraining loss")
    row[1].set_ylabel("test accuracy (%)")
    row[1].set_ylim(0, 100)
    for ax in row:
      ax.grid(alpha=0.3)
  for ax in axes[-1]:
    ax.set_xlabel("round")
  handles, labels = axes[0][1].get_legend_handles_labels()
  fig.legend(handles, labels, loc="outside lower center", ncol=len(labels),
             frameon=False)
  number = PAPER_FIGURES.get((a, k))
  seeds = sorted({r.seed for key in keys for r in cells[key]})
  fig.suptitle(f"{display(a)}, batch size k = {k}"
               + (f" (the paper's Figure {number})" if number else "")
               + f"; mean over seeds {', '.join(map(str, seeds))}", fontsize=10)
  return fig


def figures(main: str, folder: Optional[str] = None,
            seeds: Optional[Sequence[int]] = None,
            mean: Optional[str] = None) -> List[str]:
  """``figure`` for every filter and batch size of the runs saved in
  ``main`` and ``mean`` (see ``load_cells``; ``seeds``: only these; default
  all), as PNGs in ``folder`` (default ``main``/plots). Returns the paths
  written."""
  _, cells = load_cells(main, mean, seeds)
  folder = folder or os.path.join(main, "plots")
  os.makedirs(folder, exist_ok=True)
  written = []
  for a, k in sorted({(key[0], key[2]) for key in cells if key[0] != FAULT_FREE},
                     key=lambda x: (x[1], FILTERS.index(x[0]))):
    name = f"fraction_{a.replace(MEAN, '_mean')}_k{k}.png"  # cge_mean: no ':'
    written.append(plots.save(figure(cells, a, k), os.path.join(folder, name)))
  return written


def _report_and_figures(main: str, mean: Optional[str] = None,
                        seeds: Optional[Sequence[int]] = None) -> str:
  """``report``, then ``figures`` drawn into ``main``/plots."""
  text = report(main, mean, seeds)
  for path in figures(main, seeds=seeds, mean=mean):
    print("wrote", path)
  return text


def main(argv=None) -> int:
  return ex.report_main(_report_and_figures, __doc__,
                        os.path.join(HERE, "fraction.md"), argv, main=HERE,
                        mean=os.path.join(HERE, "cge_mean"))


if __name__ == "__main__":
  raise SystemExit(main())
