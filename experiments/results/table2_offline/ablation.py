"""What each protocol choice of the offline Table 2 does, choice by choice.

``experiments/table2_offline.py`` follows the protocol of the authors'
group's code where the paper is silent. This script sets each choice beside
its reversal, on the cells the choice can move, from saved results only
(nothing is trained here):

* evaluation every 5 rounds (the protocol) against every 50: read off the
  runs of ``table2_offline`` themselves (evaluating does not touch training:
  the every-50 maximum is the maximum over the evaluations at multiples of
  50);
* the greedy line search of the optimized ALIE / FOE against the grid search
  (``table2_offline_grid_attacks``: attacks ``optimized_*_grid``);
* byzjax's per-class Dirichlet split against the per-worker split the paper
  cites (``table2_offline_dirichlet_per_worker``);
* attackers with their own randomness against attackers that know the
  server's Bucketing permutation, LF sent raw against LF through the worker
  momentum, Mimic's 100-step warm-up against 1 step
  (``table2_offline_ablation``: ``attack_args`` of each reversal).

Each table: maximum test accuracy (%) of seed-by-seed means, protocol /
reverted, and the difference; worst cases over the attacks present.

  python experiments/results/table2_offline/ablation.py \
      [--main DIR] [--grid-attacks DIR] [--ablation DIR] [--v1 DIR] \
      [--per-worker DIR] [--seeds S [S ...]] [--out FILE]

--seeds: only these of the main grid's seeds. Defaults: every seed, this
folder, its ``grid_attacks/``, ``ablation/`` and ``dirichlet_per_worker/``
(``table2_offline_dirichlet_per_worker``: the split the paper cites)
subfolders and ``../table2_offline_v1`` (the first protocol, set beside this
one's worst cases); missing folders are skipped and said so.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from byzjax import experiments as ex
from byzjax import paper_results

HERE = os.path.dirname(os.path.abspath(__file__))
EVERY = 50  # the reverted evaluation period (rounds)


def _key(record) -> Tuple[str, str, str]:
  s = record.settings
  args = s.get("attack_args", record.result.config.attack_args)
  return (s.get("aggregator", record.result.config.aggregator),
          s.get("attack", record.result.config.attack),
          json.dumps(ex.plain(args or {}), sort_keys=True))


def max_every(result, every: int) -> float:
  """Maximum test accuracy over the evaluations at multiples of ``every``
  (and the last round), as if the run had been evaluated only there."""
  steps = np.asarray(result.eval_steps)
  acc = np.asarray(result.test_accuracy, np.float64)
  keep = (steps % every == 0) | (steps == steps.max())
  return float(acc[keep].max())


def _means(records, value, seeds: Optional[Set[int]] = None
           ) -> Dict[Tuple[str, str, str], Tuple[float, int]]:
  """(aggregator, attack, attack_args) -> (mean of ``value`` in %, seeds);
  only the records of ``seeds`` when given."""
  cells: Dict[Tuple[str, str, str], List[float]] = {}
  for r in records:
    if r.kind == "grid" and (seeds is None or r.seed in seeds):
      cells.setdefault(_key(r), []).append(100.0 * value(r.result))
  return {k: (float(np.mean(v)), len(v)) for k, v in cells.items()}


def _table(title: str, rows: Sequence[str], columns: Sequence[str],
           ours: Dict[Tuple[str, str], float],
           reverted: Dict[Tuple[str, str], float], note: str) -> str:
  """Markdown: one cell per (row, column) present in both, 'a / b (+d)'."""
  disp = lambda field, v: ex.display(field, v)
  head = ["aggregator \\ attack"] + [disp("attack", c) for c in columns] + [
      "worst case"]
  lines = [f"### {title}", "", note, "",
           "| " + " | ".join(head) + " |",
           "| :-- | " + " | ".join("--:" for _ in head[1:]) + " |"]
  for row in rows:
    cells, worst_a, worst_b = [], [], []
    for col in columns:
      a, b = ours.get((row, col)), reverted.get((row, col))
      if a is None or b is None:
        cells.append("")
        continue
      cells.append(f"{a:.2f} / {b:.2f} ({b - a:+.2f})")
      worst_a.append(a)
      worst_b.append(b)
    if not worst_a:
      continue
    wa, wb = min(worst_a), min(worst_b)
    over = (f"; {len(worst_a)} of {len(columns)}"
            if len(worst_a) < len(columns) else "")
    lines.append(f"| {disp('aggregator', row)} | " + " | ".join(cells)
                 + f" | {wa:.2f} / {wb:.2f} ({wb - wa:+.2f}{over}) |")
  if len(lines) == 6:
    lines = lines[:4] + ["(no runs saved yet)"]
  return "\n".join(lines) + "\n"


def _load(folder: Optional[str], what: str, missing: List[str],
          seeds: Optional[Sequence[int]] = None):
  if folder is None or not os.path.isfile(os.path.join(folder, ex.GRID_FILE)):
    missing.append(f"{what}: no results in {os.path.relpath(folder) if folder else folder}")
    return None
  return ex.load_grid_results(folder, seeds=seeds)


def _v1_table(base, v1) -> str:
  """Worst cases of each method on the seeds both folders hold: this protocol
  beside the first one (``table2_offline_v1``) and the paper's."""
  paper = paper_results.get("fixing_by_mixing_table2")
  common = sorted({r.seed for r in v1.records} & {r.seed for r in base.records})
  best = lambda r: ex.metric_value(r, "max_accuracy")

  def worst(records):
    cells = {(k[0], k[1]): v[0] for k, v in _means(records, best, set(common)).items()}
    out = {}
    for (row, col), v in cells.items():
      if row not in out or v < out[row][0]:
        out[row] = (v, col)
    return out

  now, first = worst(base.records), worst(v1.records)
  lines = [f"### The first protocol (v1) beside this one, worst cases, seed(s) "
           f"{', '.join(map(str, common))}", "",
           "v1: the grid-search ALIE / FOE knowing the server's permutation, LF "
           "through the worker momentum, evaluation every 50 rounds "
           "(`../table2_offline_v1/`).", "",
           "| rule | now (attack) | v1 (attack) | paper (5 seeds) |",
           "| :-- | --: | --: | --: |"]
  cell = lambda w: f"{w[0]:.2f} ({ex.display('attack', w[1])})"
  for row in (r for r in paper.cells if r in now and r in first):
    low = min(paper.cells[row], key=lambda a: paper.cells[row][a].mean)
    p = paper.cells[row][low]
    lines.append(f"| {ex.display('aggregator', row)} | {cell(now[row])} | "
                 f"{cell(first[row])} | {p.mean:.2f} ± {p.std:.2f} |")
  return "\n".join(lines) + "\n"


def report(main: str, grid_attacks: Optional[str], ablation: Optional[str],
           v1: Optional[str] = None, per_worker: Optional[str] = None,
           seeds: Optional[Sequence[int]] = None) -> str:
  """The ablation tables as Markdown (see the module docstring; ``seeds``:
  only these seeds of ``main``, and the reversals beside them seed by
  seed)."""
  missing: List[str] = []
  base = _load(main, "table2_offline", missing, seeds)
  if base is None:
    raise SystemExit(f"no table2_offline results in {main}")
  rows = list(dict.fromkeys(r.settings["aggregator"] for r in base.records
                            if r.kind == "grid"))
  by_cell = lambda means: {(k[0], k[1]): v[0] for k, v in means.items()}
  best = lambda r: ex.metric_value(r, "max_accuracy")
  protocol = by_cell(_means(base.records, best))
  # A reversal trained on fewer seeds is set beside the protocol's runs of
  # the same seeds (seed-by-seed).
  paired = lambda other: by_cell(_means(base.records, best,
                                        {r.seed for r in other.records}))
  seeds = sorted({r.seed for r in base.records})
  out = ["# Offline Table 2: each protocol choice beside its reversal",
         "", f"Seeds {', '.join(map(str, seeds))} of table2_offline (means over "
         f"the seeds each cell has; a reversal trained on fewer seeds beside "
         f"the protocol's runs of the same seeds); cells: protocol / reverted "
         f"(reverted - "
         f"protocol), maximum test accuracy (%).", ""]
  columns = list(dict.fromkeys(r.settings["attack"] for r in base.records
                               if r.kind == "grid"))
  every = by_cell(_means(base.records, lambda r: max_every(r, EVERY)))
  out.append(_table(
      f"Evaluation every 5 rounds / every {EVERY}", rows, columns, protocol,
      every, f"Read off the same runs: the maximum over the evaluations at "
      f"multiples of {EVERY} (and round T) instead of every 5."))
  grid = _load(grid_attacks, "table2_offline_grid_attacks", missing)
  if grid is not None:
    searched = by_cell(_means(grid.records, best))
    renamed = {(a, c.removesuffix("_grid")): v for (a, c), v in searched.items()}
    out.append(_table(
        "Greedy line search / grid search (21 etas in [0, 10])", rows,
        ["optimized_alie", "optimized_foe"], paired(grid), renamed,
        "The optimized ALIE and FOE choosing eta each round by the authors' "
        "greedy line search (protocol) or by the best of a fixed grid."))
  abl = _load(ablation, "table2_offline_ablation", missing)
  if abl is not None:
    means = _means(abl.records, best)
    for args, title, note in (
        ('{"knows_server_randomness": true}',
         "Own randomness / the server's Bucketing permutation",
         "The optimized attacks simulate Bucketing with a permutation of "
         "their own (protocol) or with the server's."),
        ('{"momentum": true}', "LF sent raw / through the worker momentum",
         "Label flipping sends the flipped gradient raw (protocol) or passes "
         "it through the worker momentum."),
        ('{"warmup": 1}', "Mimic warm-up 100 rounds / 1 round",
         "Mimic learns its direction for 100 rounds (protocol) or 1.")):
      reverted = {(k[0], k[1]): v[0] for k, v in means.items() if k[2] == args}
      cols = list(dict.fromkeys(c for _, c in reverted))
      out.append(_table(title, rows, cols, paired(abl), reverted, note))
  split = _load(per_worker, "table2_offline_dirichlet_per_worker", missing)
  if split is not None:
    out.append(_table(
        "Per-class Dirichlet split / the per-worker split the paper cites",
        rows, columns, paired(split), by_cell(_means(split.records, best)),
        "byzjax's per-class split (each class divided over the workers by "
        "Dir(alpha): disjoint shards of unequal size; protocol) or Hsu et "
        "al.'s per-worker class proportions Dir(alpha 1_10) with equal-size "
        "shards, as the authors' code draws them "
        "(`split=\"dirichlet_per_worker\"`)."))
  first = _load(v1, "table2_offline_v1", missing)
  if first is not None:
    out.append(_v1_table(base, first))
  if missing:
    out.append("Not yet available: " + "; ".join(missing) + ".")
  return "\n".join(out)


def main(argv=None) -> int:
  return ex.report_main(report, __doc__, os.path.join(HERE, "ablation.md"),
                        argv, main=HERE,
                        grid_attacks=os.path.join(HERE, "grid_attacks"),
                        ablation=os.path.join(HERE, "ablation"),
                        v1=os.path.join(HERE, os.pardir, "table2_offline_v1"),
                        per_worker=os.path.join(HERE, "dirichlet_per_worker"))


if __name__ == "__main__":
  raise SystemExit(main())
