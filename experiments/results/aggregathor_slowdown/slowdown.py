"""The slowdown of Multi-Krum and AggregaThor without attack, measured.

Theorems 1(ii) and 2(ii) of the AggregaThor report (Damaskinos et al., SysML
2019): without Byzantine workers, a rule that averages m~ of the n gradients
converges at the rate of SGD with m~ estimators instead of n, a slowdown
(in ratio with averaging) of Omega(sqrt(m~ / n)), with m~ = n - f - 2 for
Multi-Krum and n - 2f - 2 for AggregaThor (Bulyan over Multi-Krum).

The report's argument is about the noise of the update: an average of m
i.i.d. gradients has variance sigma^2 / m. This script measures that noise
directly, from the saved runs of ``experiments/aggregathor_slowdown.py``
(nothing is trained here), and sets the accuracy curves beside it:

* kappa_hat_t of eq. (26) of Allouah et al. (logged every round) is
  ||R_t - s_t|| / sqrt((1/n) sum_i ||g_i - s_t||^2), s_t the mean of the n
  gradients. For the average R_t of m of n i.i.d. gradients of variance
  sigma^2, E||R_t - s_t||^2 = sigma^2 (1/m - 1/n), R_t - s_t is uncorrelated
  with s_t's own noise, and the denominator's square has expectation
  sigma^2 (n - 1) / n, so kappa_hat^2 = n (1/m - 1/n) / (n - 1): the rule
  behaves as SGD with m_eff = n / (1 + (n - 1) kappa_hat^2) estimators
  (= m for a random subset; the rounds' mean of kappa_hat_t^2 is used). The
  measured slowdown sqrt(m_eff / n) is set beside the theorem's sqrt(m~ / n).
  (Multi-Krum's and Bulyan's choices are not random subsets, so m_eff need
  not equal m~.)
* test accuracy at rounds 10, 20 and 50, the mean accuracy over the
  evaluations up to round 100 (a lower-variance summary of early speed) and
  the final accuracy, mean ± population std over the seeds;
* the rounds to first reach 90% and 95% test accuracy (mean over seeds; the
  runs are evaluated every 10 rounds) and averaging's rounds divided by the
  rule's.

  python experiments/results/aggregathor_slowdown/slowdown.py \
      [--main DIR] [--seeds S [S ...]] [--out FILE]

--seeds: only these of the grid's seeds (e.g. the complete ones while another
is being trained). Defaults: every seed, this folder, and slowdown.md in it.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from byzjax import experiments as ex

HERE = os.path.dirname(os.path.abspath(__file__))
AT_ROUNDS = (10, 20, 50)
EARLY = 100  # the mean accuracy over the evaluations at rounds <= EARLY
TARGETS = (0.90, 0.95)


def m_tilde(rule: str, n: int, f: int) -> int:
  """The number of gradients the theorems say the rule averages (m~)."""
  if rule == "mean":
    return n
  if rule == "multi_krum":
    return n - f - 2
  if rule == "bulyan":
    return n - 2 * f - 2
  raise ValueError(f"rule must be mean, multi_krum or bulyan, got {rule!r}")


def rounds_to(result, target: float) -> float:
  """The first evaluated round with test accuracy >= ``target`` (inf if never)."""
  acc = np.asarray(result.test_accuracy, np.float64)
  hit = np.flatnonzero(acc >= target)
  return float(np.asarray(result.eval_steps)[hit[0]]) if hit.size else np.inf


def early_mean(result, upto: int = EARLY) -> float:
  """Mean test accuracy over the evaluations at rounds 1..``upto``."""
  steps = np.asarray(result.eval_steps)
  acc = np.asarray(result.test_accuracy, np.float64)
  return float(acc[(steps > 0) & (steps <= upto)].mean())


def mean_kappa_sq(result) -> float:
  """The rounds' mean of kappa_hat_t^2."""
  return float(np.nanmean(np.asarray(result.kappa_hat, np.float64) ** 2))


def effective_estimators(result) -> float:
  """m_eff = n / (1 + (n - 1) mean_t kappa_hat_t^2) (the module docstring)."""
  n = result.config.n
  return n / (1.0 + (n - 1) * mean_kappa_sq(result))


def _cells(records) -> Dict[Tuple[str, int], List]:
  """(rule, declared f) -> the seeds' results; averaging's runs, identical
  for every declared f, are kept once per seed."""
  cells: Dict[Tuple[str, int], Dict[int, object]] = {}
  for r in records:
    rule = r.settings["aggregator"]
    key = (rule, 0 if rule == "mean" else int(r.settings["declared_f"]))
    cells.setdefault(key, {}).setdefault(r.seed, r.result)
  return {k: [v[s] for s in sorted(v)] for k, v in cells.items()}


def _rounds(values: Sequence[float]) -> str:
  v = np.asarray(values, np.float64)
  if np.isinf(v).any():
    return f"never ({int(np.isinf(v).sum())} of {v.size})"
  return f"{v.mean():.0f}"


def report(main: str, seeds: Optional[Sequence[int]] = None) -> str:
  """The slowdown tables as Markdown (see the module docstring)."""
  if not os.path.isfile(os.path.join(main, ex.GRID_FILE)):
    raise SystemExit(f"no aggregathor_slowdown results in {main}")
  results = ex.load_grid_results(main, seeds=seeds)
  cells = _cells(results.records)
  if ("mean", 0) not in cells:
    raise SystemExit(f"{main}: averaging's runs are not saved yet")
  base = cells[("mean", 0)]
  n = base[0].config.n
  seeds = sorted({r.seed for r in results.records})
  order = sorted(cells, key=lambda k: (["mean", "multi_krum", "bulyan"].index(
      k[0]), k[1]))
  name = lambda rule: {"mean": "Averaging", "bulyan": "AggregaThor"}.get(
      rule, ex.display("aggregator", rule))
  out = ["# AggregaThor's slowdown without attack, measured", "",
         f"n = {n} workers, none Byzantine; seeds {', '.join(map(str, seeds))}"
         f" (a cell lists how many it has when fewer); cells: mean ± "
         f"population std over the seeds.", "",
         "## The update's noise: measured sqrt(m_eff / n) beside the "
         "theorems' sqrt(m~ / n)", "",
         "| rule | declared f | m~ | sqrt(m~ / n) | mean kappa_hat^2 | m_eff | "
         "sqrt(m_eff / n) |",
         "| :-- | --: | --: | --: | --: | --: | --: |"]
  for rule, f in order:
    res = cells[(rule, f)]
    m = m_tilde(rule, n, f)
    k2 = [mean_kappa_sq(r) for r in res]
    m_eff = [effective_estimators(r) for r in res]
    out.append(f"| {name(rule)} | {f if rule != 'mean' else '-'} | {m} | "
               f"{np.sqrt(m / n):.3f} | {np.mean(k2):.4f} | "
               f"{np.mean(m_eff):.1f} | {np.sqrt(np.mean(m_eff) / n):.3f} |")
  head = ([f"acc. @ {t}" for t in AT_ROUNDS] + [f"mean acc. <= {EARLY}",
          "final acc."] + [f"rounds to {100 * t:.0f}% (avg. / rule)"
                           for t in TARGETS])
  out += ["", "## Test accuracy (%) and rounds to a target", "",
          "| rule | declared f | " + " | ".join(head) + " |",
          "| :-- | --: | " + " | ".join("--:" for _ in head) + " |"]
  base_rounds = {t: np.mean([rounds_to(r, t) for r in base]) for t in TARGETS}
  for rule, f in order:
    res = cells[(rule, f)]
    row = [ex.format_stat(ex.stat_of(
        [ex.metric_value(r, f"accuracy_at:{t}") for r in res]))
           for t in AT_ROUNDS]
    row += [ex.format_stat(ex.stat_of([early_mean(r) for r in res])),
            ex.format_stat(ex.stat_of(
                [ex.metric_value(r, "final_accuracy") for r in res]))]
    for t in TARGETS:
      rounds = [rounds_to(r, t) for r in res]
      shown = rule != "mean" and np.isfinite(base_rounds[t] + np.mean(rounds))
      row.append(_rounds(rounds) + (
          f" ({base_rounds[t] / np.mean(rounds):.2f})" if shown else ""))
    seeds_note = f" ({len(res)} seeds)" if len(res) < len(seeds) else ""
    out.append(f"| {name(rule)}{seeds_note} | "
               f"{f if rule != 'mean' else '-'} | " + " | ".join(row) + " |")
  return "\n".join(out) + "\n"


def main(argv=None) -> int:
  return ex.report_main(report, __doc__, os.path.join(HERE, "slowdown.md"),
                        argv, main=HERE)


if __name__ == "__main__":
  raise SystemExit(main())
