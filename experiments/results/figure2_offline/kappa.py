"""Figure 2 of "Fixing by Mixing" offline: kappa_hat_t, NNM against Bucketing.

Figure 2 of Allouah et al. plots kappa_hat_t of eq. (26), ||R_t - m_bar_t|| /
sqrt((1/|H|) sum_H ||m_i - m_bar_t||^2), for NNM and Bucketing each followed
by Krum, GM, CWMed and CWTM, under ALIE and FOE (n = 17, f = 2, alpha = 1),
and claims "the NNM curves are consistently below Bucketing's". This script
measures that claim on the runs of ``experiments/figure2_offline.py`` (f = 2
and f = 4; nothing is trained), per (f, rule, attack):

* the median over rounds of kappa_hat_t, for NNM and for Bucketing (mean
  over the seeds of each seed's median);
* the share of rounds in which NNM's kappa_hat_t is below Bucketing's: of
  the mean curves over the seeds (those of ``plots/kappa*.png``), and seed
  by seed (each seed's two runs; the lowest and highest share). The mean
  curves are smoother than any seed's, so where one is lower on average,
  its share of the mean curves' rounds grows with the number of seeds.
* NNM's largest kappa_hat_t over every round and seed beside sqrt(kappa),
  the (f, kappa)-robustness it is proven to have (Lemma 1 with Table 1;
  ``aggregators.robustness_coefficient``), which it can never exceed;
* the final test accuracy of both (mean ± population std over the seeds);
* the rounds whose aggregate is the honest mean, up to rounding or GM's
  Weiszfeld tolerance (kappa_hat_t < 1e-4), with the attack's eta in them and how often its
  line search chose eta = 0 (the Byzantine rows then are the honest mean).

  python experiments/results/figure2_offline/kappa.py \
      [--main DIR] [--seeds S [S ...]] [--out FILE]

--seeds: only these of the grid's seeds (e.g. the complete ones while another
is being trained). Defaults: every seed, this folder, and kappa.md in it.
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from byzjax import aggregators
from byzjax import experiments as ex

HERE = os.path.dirname(os.path.abspath(__file__))
PRES = ("nnm", "bucketing")


def _curves(runs) -> np.ndarray:
  """(seeds, rounds) kappa_hat_t, non-finite entries as NaN."""
  k = np.asarray([r.result.kappa_hat for r in runs], np.float64)
  return np.where(np.isfinite(k), k, np.nan)


def _cells(records) -> Dict[Tuple[int, str, str, str], List]:
  """(f, pre-aggregation, rule, attack) -> the seeds' records, seed order."""
  cells: Dict[Tuple[int, str, str, str], Dict[int, object]] = {}
  for r in records:
    pre, rule = r.settings["aggregator"].split("+", 1)
    key = (r.settings["f"], pre, rule, r.settings["attack"])
    cells.setdefault(key, {}).setdefault(r.seed, r)
  return {k: [v[s] for s in sorted(v)] for k, v in cells.items()}


# kappa_hat_t below it: the aggregate is the honest mean, up to rounding
# (Krum) or the tolerance of GM's Weiszfeld iterations; the report prints
# the gap around it.
TINY = 1e-4


def _span(values, fmt: str = "g") -> str:
  lo, hi = np.min(values), np.max(values)
  return f"{lo:{fmt}}" if lo == hi else f"{lo:{fmt}}-{hi:{fmt}}"


def _honest_mean_rounds(cells, keys) -> List[str]:
  """The rows of the table of rounds with kappa_hat_t < TINY."""
  rows = []
  for f, rule, attack in keys:
    for pre in PRES:
      runs = cells[(f, pre, rule, attack)]
      k = _curves(runs)
      eta = np.asarray([r.result.eta for r in runs], np.float64)
      tiny = k < TINY
      if not tiny.any() and rule != "krum":
        continue
      searched = not np.isnan(eta).all()  # NaN: not an optimized attack
      largest = f"{np.max(eta[tiny]):.1e}" if searched and tiny.any() else "-"
      rows.append(
          f"| {f} | {ex.display('aggregator', pre)} + "
          f"{ex.display('aggregator', rule)} | {ex.display('attack', attack)} | "
          f"{_span([int(t.sum()) for t in tiny])} | "
          f"{_span(k[tiny], '.1e') if tiny.any() else '-'} | {largest} | "
          f"{_span([int(np.sum(e == 0)) for e in eta]) if searched else '-'} |")
  return rows


def _share_below(a: np.ndarray, b: np.ndarray) -> float:
  """The share of the rounds, of those where both are finite, with a < b."""
  both = np.isfinite(a) & np.isfinite(b)
  return float(np.mean(a[both] < b[both])) if both.any() else math.nan


def _accuracy(runs) -> str:
  """Final test accuracy (%), mean ± population std over the seeds."""
  return ex.format_stat(ex.stat_of([r.result.final_accuracy for r in runs]))


def report(main: str, seeds: Optional[Sequence[int]] = None) -> str:
  """The kappa_hat_t tables as Markdown (see the module docstring)."""
  if not os.path.isfile(os.path.join(main, ex.GRID_FILE)):
    raise SystemExit(f"no figure2_offline results in {main}")
  results = ex.load_grid_results(main, seeds=seeds)
  cells = _cells(results.records)
  seeds = sorted({r.seed for r in results.records})
  keys = sorted({(f, rule, attack) for (f, _, rule, attack) in cells
                 if all((f, p, rule, attack) in cells for p in PRES)},
                key=lambda k: (k[0], ex.FBM_RULES.index(k[1])
                               if k[1] in ex.FBM_RULES else 99, k[2]))
  if not keys:
    raise SystemExit(f"{main}: no rule has both its NNM and Bucketing run yet")
  lines = [
      "# Figure 2 of Fixing by Mixing, offline MNIST: kappa_hat_t, measured",
      "",
      f"n = 17, alpha = 1, robust D-SHB, seeds {', '.join(map(str, seeds))}; "
      "kappa_hat_t of eq. (26) every round (a cell with fewer seeds than the "
      "folder says how many it has).",
      "",
      "| f | rule | attack | NNM median kappa_hat_t | Bucketing median "
      "kappa_hat_t | rounds NNM below (mean curves) | rounds NNM below "
      "(per seed) | NNM max kappa_hat_t | NNM sqrt(kappa) "
      "| NNM final acc. % | Bucketing final acc. % |",
      "| --: | :-- | :-- | --: | --: | --: | --: | --: | --: | --: | --: |"]
  every = np.concatenate([_curves(runs).ravel() for runs in cells.values()])
  gap = (np.nanmax(every[every < TINY], initial=0.0),
         np.nanmin(every[every >= TINY], initial=np.inf))
  below_all, per_seed_all, exceeded = [], [], []
  for f, rule, attack in keys:
    nnm, buck = (cells[(f, p, rule, attack)] for p in PRES)
    k_nnm, k_buck = _curves(nnm), _curves(buck)
    med_nnm = float(np.mean(np.nanmedian(k_nnm, axis=1)))
    med_buck = float(np.mean(np.nanmedian(k_buck, axis=1)))
    below = _share_below(np.nanmean(k_nnm, axis=0), np.nanmean(k_buck, axis=0))
    below_all.append(below)
    by_seed = {r.seed: r for r in buck}
    per_seed = [100 * _share_below(_curves([r])[0], _curves([by_seed[r.seed]])[0])
                for r in nnm if r.seed in by_seed]
    per_seed_all += per_seed
    top = float(np.nanmax(k_nnm))
    c = nnm[0].result.config
    kappa = aggregators.robustness_coefficient(
        c.aggregator, n=c.n, f=c.rule_f, aggregator_args=c.aggregator_args)
    bound = math.sqrt(kappa) if kappa is not None else math.nan
    if kappa is not None and top > bound:
      exceeded.append((f, rule, attack))
    count = "" if len(nnm) == len(seeds) else f" ({len(nnm)} seeds)"
    lines.append(
        f"| {f} | {ex.display('aggregator', rule)} | "
        f"{ex.display('attack', attack)}{count} | {med_nnm:.3f} | "
        f"{med_buck:.3f} | {100 * below:.1f}% | {_span(per_seed, '.1f')}% | "
        f"{top:.3f} | "
        f"{'-' if kappa is None else f'{bound:.2f}'} | "
        f"{_accuracy(nnm)} | {_accuracy(buck)} |")
  lines += [
      "",
      f"NNM below Bucketing in {100 * min(below_all):.1f}-"
      f"{100 * max(below_all):.1f}% of the rounds over the {len(keys)} "
      f"(f, rule, attack) cells (mean curves over the seeds); seed by seed "
      f"in {_span(per_seed_all, '.1f')}%.",
      "NNM's kappa_hat_t above its proven sqrt(kappa) in "
      + (", ".join(f"f = {f} {rule} {attack}" for f, rule, attack in exceeded)
         if exceeded else "no round of any seed") + ".",
      "",
      f"## Rounds whose aggregate is the honest mean (kappa_hat_t < {TINY:g})",
      "",
      "Every Krum run, and any other with such a round; per run (seed): how "
      "many such rounds, kappa_hat_t and the attack's largest eta in them, "
      "and in how many of the rounds the attack chose eta = 0. Over all "
      f"runs, no kappa_hat_t lies between {gap[0]:.1e} (the largest below "
      f"{TINY:g}) and {gap[1]:.1e} (the smallest above).",
      "",
      "| f | defence | attack | rounds per run | kappa_hat_t there | largest "
      "eta there | rounds with eta = 0 per run |",
      "| --: | :-- | :-- | --: | --: | --: | --: |",
      *_honest_mean_rounds(cells, keys)]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  return ex.report_main(report, __doc__, os.path.join(HERE, "kappa.md"),
                        argv, main=HERE)


if __name__ == "__main__":
  raise SystemExit(main())
