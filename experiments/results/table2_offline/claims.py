"""The claims of Table 2 (Allouah et al. 2023, Section 6.2), read off the saved runs.

Section 6.2 of "Fixing by Mixing" reads Table 2 (maximum test accuracy, MNIST,
alpha = 0.1, n = 17, f = 4, five attacks, mean ± std over seeds 1-5) as:

* NNM "always displays the best worst case": in each block (Krum, GM, CWMed,
  CWTM), the worst case over the attacks of NNM + rule is above those of
  Bucketing + rule and of the vanilla rule;
* for Krum, CWMed and CWTM, NNM "outputs the maximal accuracy under all
  attacks"; for GM "the other techniques can outperform our method in some
  settings (e.g., ALIE, SF)";
* "the lowest accuracy NNM yields across attacks and aggregation rules is
  70.07% with Krum", "all worst case accuracies of NNM are within the range
  70-79%", and Bucketing's are "almost equally poor for all aggregation rules
  (36.1%, 39.83%, and 42.80%)".

This script checks each on the runs of ``experiments/table2_offline.py``
beside the same reading of the paper's own table (nothing is trained): on the
means over the seeds, and the first claim on each seed alone. It also counts
the attack cells whose published mean lies within our mean ± 2 sample std /
sqrt(k) over our k seeds (the ``*`` of ``table.md``).

  python experiments/results/table2_offline/claims.py \
      [--main DIR] [--seeds S [S ...]] [--out FILE]

--seeds: only these of the grid's seeds (e.g. the complete ones while another
is being trained). Defaults: every seed, this folder, and claims.md in it.
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from byzjax import experiments as ex
from byzjax import paper_results

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = ("krum", "geometric_median", "median", "trimmed_mean")
PRES = ("nnm", "bucketing", "")  # NNM + rule, Bucketing + rule, the rule
FAULT_FREE = "fault-free"
GRID_ATTACKS = "grid_attacks"  # table2_offline_grid_attacks.py's folder

Means = Mapping[str, Mapping[str, float]]  # aggregator -> attack -> accuracy (%)


def aggregator(pre: str, rule: str) -> str:
  """The registry name of ``pre + rule`` ("" for the vanilla rule)."""
  return f"{pre}+{rule}" if pre else rule


def worst_case(means: Means, name: str) -> Tuple[float, str]:
  """(least accuracy over the attacks, that attack) of aggregator ``name``;
  the first attack in the table's order on ties."""
  row = means[name]
  attack = min(row, key=lambda a: row[a])
  return row[attack], attack


def best_worst_case(means: Means, rule: str) -> bool:
  """Whether NNM + rule's worst case is strictly above Bucketing + rule's and
  the vanilla rule's."""
  nnm, bucketing, vanilla = (worst_case(means, aggregator(p, rule))[0]
                             for p in PRES)
  return nnm > bucketing and nnm > vanilla


def beaten_cells(means: Means, rule: str) -> List[Tuple[str, str]]:
  """(attack, winner) for every attack under which Bucketing + rule or the
  vanilla rule is strictly above NNM + rule (the higher of the two)."""
  nnm = means[aggregator("nnm", rule)]
  out = []
  for attack in nnm:
    others = {p: means[aggregator(p, rule)][attack] for p in PRES[1:]}
    winner = max(others, key=lambda p: others[p])
    if others[winner] > nnm[attack]:
      out.append((attack, aggregator(winner, rule)))
  return out


def within_band(values: Sequence[float], paper_mean: float) -> bool:
  """Whether ``paper_mean`` lies within mean ± 2 sample std / sqrt(k) of our
  k values (k >= 2)."""
  v = np.asarray(values, np.float64)
  half = 2.0 * np.std(v, ddof=1) / np.sqrt(v.size)
  return bool(abs(v.mean() - paper_mean) <= half)


def _per_seed(records) -> Tuple[Dict[str, Dict[str, Dict[int, float]]], Dict[int, float]]:
  """aggregator -> attack -> seed -> max accuracy (%), and the fault-free
  baseline's seed -> max accuracy."""
  cells: Dict[str, Dict[str, Dict[int, float]]] = {}
  base: Dict[int, float] = {}
  for r in records:
    acc = 100.0 * r.result.max_accuracy
    if r.kind == "baseline":
      base[r.seed] = acc
    else:
      cells.setdefault(r.settings["aggregator"], {}).setdefault(
          r.settings["attack"], {})[r.seed] = acc
  return cells, base


def _attack(name: str) -> str:
  """The attack as the paper prints it ("ALIE" for optimized_alie)."""
  printed = {v: k for k, v in paper_results.ATTACK_NAMES.items()}
  return printed.get(name) or ex.display("attack", name)


def _fmt(value: float, attack: str = "") -> str:
  return f"{value:.2f}" + (f" ({_attack(attack)})" if attack else "")


def _display(name: str) -> str:
  return paper_results.get("fixing_by_mixing_table2").printed_rows.get(name, name)


def _and(names) -> str:
  """"A", "A and B", "A, B and C"."""
  names = list(names)
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _stronger_attacks(main: str, cells, names: Sequence[str],
                      attacks: Sequence[str], seeds: Sequence[int]) -> List[str]:
  """The first claim again with the grid-search ALIE and FOE of
  ``main/grid_attacks`` (``table2_offline_grid_attacks.py``) added to the
  paper's five attacks, on the seeds both folders hold in full."""
  folder = os.path.join(main, GRID_ATTACKS)
  if not os.path.isfile(os.path.join(folder, ex.GRID_FILE)):
    return []
  strong, _ = _per_seed(ex.load_grid_results(folder).records)
  extra = sorted({a for n in names for a in strong.get(n, {})})
  both = [s for s in seeds if extra and all(
      s in strong.get(n, {}).get(a, {}) for n in names for a in extra)]
  if not both:
    return []
  every = list(attacks) + extra
  merged = {n: {a: {s: (cells[n][a] if a in attacks else strong[n][a])[s] for s in both}
                for a in every} for n in names}
  means = {n: {a: float(np.mean(list(merged[n][a].values()))) for a in every}
           for n in names}
  out = ["", "## With the grid-search ALIE and FOE added (a stronger attack; ours)", "",
         f"Worst case over the paper's five attacks and {_and(map(_attack, extra))} "
         f"(`{GRID_ATTACKS}/`: eta the best of 21 values in [0, 10] every step), "
         f"seeds {', '.join(map(str, both))}.", "",
         "| rule | NNM + rule | Bucketing + rule | rule | holds | seeds where it holds |",
         "| :-- | --: | --: | --: | :-- | :-- |"]
  for rule in RULES:
    worst = [worst_case(means, aggregator(p, rule)) for p in PRES]
    held = [s for s in both if best_worst_case(
        {n: {a: merged[n][a][s] for a in every} for n in names}, rule)]
    out.append(f"| {_display(rule)} | " + " | ".join(_fmt(*w) for w in worst)
               + f" | {'yes' if best_worst_case(means, rule) else 'NO'} | "
               + f"{len(held)} of {len(both)}"
               + (f" ({', '.join(map(str, held))})" if held and len(held) < len(both) else "")
               + " |")
  return out


def report(main: str, seeds: Optional[Sequence[int]] = None) -> str:
  """The claims as Markdown (see the module docstring)."""
  if not os.path.isfile(os.path.join(main, ex.GRID_FILE)):
    raise SystemExit(f"no table2_offline results in {main}")
  paper = paper_results.get("fixing_by_mixing_table2")
  cells, base = _per_seed(ex.load_grid_results(main, seeds=seeds).records)
  attacks = list(paper.cells["krum"])
  names = [aggregator(p, r) for r in RULES for p in PRES]
  missing = [(n, a) for n in names for a in attacks if not cells.get(n, {}).get(a)]
  if missing:
    raise SystemExit(f"{len(missing)} Table 2 cells have no saved run yet, e.g. "
                     f"{missing[0]}")
  seeds = sorted({s for n in names for a in attacks for s in cells[n][a]})
  complete = [s for s in seeds if all(s in cells[n][a] for n in names for a in attacks)]
  ours = {n: {a: float(np.mean(list(cells[n][a].values()))) for a in attacks}
          for n in names}
  published = {n: {a: paper.cells[n][a].mean for a in attacks} for n in names}

  out = [f"# Table 2's claims, checked on seeds {', '.join(map(str, seeds))}",
         "",
         "Maximum test accuracy (%), mean over the seeds (the paper: over its "
         "seeds 1-5); worst case = the attack of least mean.", "",
         "## NNM has the best worst case in every block", "",
         "| rule | NNM + rule | Bucketing + rule | rule | holds | paper: NNM / "
         "Bucketing / rule | holds | seeds where it holds |",
         "| :-- | --: | --: | --: | :-- | --: | :-- | :-- |"]
  for rule in RULES:
    ours_w = [worst_case(ours, aggregator(p, rule)) for p in PRES]
    paper_w = [worst_case(published, aggregator(p, rule))[0] for p in PRES]
    held = [s for s in complete if best_worst_case(
        {n: {a: cells[n][a][s] for a in attacks} for n in names}, rule)]
    out.append(
        f"| {_display(rule)} | " + " | ".join(_fmt(*w) for w in ours_w)
        + f" | {'yes' if best_worst_case(ours, rule) else 'NO'} | "
        + " / ".join(f"{w:.2f}" for w in paper_w)
        + f" | {'yes' if best_worst_case(published, rule) else 'NO'} | "
        + f"{len(held)} of {len(complete)}"
        + (f" ({', '.join(map(str, held))})" if held and len(held) < len(complete) else "")
        + " |")

  out += ["", "## Cells where another technique is above NNM in its block", "",
          "| rule | ours | paper |", "| :-- | :-- | :-- |"]
  for rule in RULES:
    row = []
    for means in (ours, published):
      beaten = beaten_cells(means, rule)
      row.append(", ".join(f"{_fmt(means[w][a], a)}: {_display(w)}"
                           for a, w in beaten) or "none")
    out.append(f"| {_display(rule)} | {row[0]} | {row[1]} |")

  out += ["", "## NNM's and Bucketing's worst cases across the rules", ""]
  for pre, label in (("nnm", "NNM"), ("bucketing", "Bucketing")):
    for means, who in ((ours, "ours"), (published, "paper")):
      w = {r: worst_case(means, aggregator(pre, r))[0] for r in RULES}
      lowest = min(w.values())
      low = [r for r in RULES if abs(w[r] - lowest) <= 1e-9]  # ties named together
      out.append(f"- {label}, {who}: {lowest:.2f}-{max(w.values()):.2f}, "
                 f"lowest with {_and(map(_display, low))}")

  inside, outside = 0, []
  if len(seeds) >= 2:
    for n in names:
      for a in attacks:
        if within_band(list(cells[n][a].values()), paper.cells[n][a].mean):
          inside += 1
        else:
          outside.append(f"{_display(n)}, {_attack(a)}: {ours[n][a]:.2f} "
                         f"(paper {paper.cells[n][a].text})")
    out += ["", "## The paper's mean within our mean ± 2 sample std / sqrt(k)", "",
            f"{inside} of {inside + len(outside)} attack cells; outside:", ""]
    out += [f"- {line}" for line in outside]
  out += _stronger_attacks(main, cells, names, attacks, seeds)
  if base:
    label, cell = paper.baseline
    v = list(base.values())
    out += ["", f"{FAULT_FREE} ({label}): {np.mean(v):.2f} ± {np.std(v):.2f} "
            f"over {len(v)} seed(s) (paper {cell.text})"]
  return "\n".join(out) + "\n"


if __name__ == "__main__":
  raise SystemExit(ex.report_main(report, __doc__, os.path.join(HERE, "claims.md"),
                                  main=HERE))
