"""Published numbers to compare with, stored exactly as the papers print them.

Each table is kept as the verbatim text of the paper (tab-separated, "±"
between mean and standard deviation, the paper's own zero padding) and parsed
into numbers keyed by byzjax registry names, so that a reproduction can show
the paper's cell beside its own.

References:
  Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan. "Fixing by Mixing: A
  Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023, Table 2.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

from byzjax.registry import did_you_mean

# Names the paper prints -> byzjax registry names (Section 6, Appendix 14).
RULE_NAMES: Dict[str, str] = {
    "Krum": "krum",
    "GM": "geometric_median",
    "CWMed": "median",
    "CWTM": "trimmed_mean",
    "MDA": "mda",
    "MultiKrum": "multi_krum",
    "MeaMed": "meamed",
}
PRE_NAMES: Dict[str, str] = {"Bucketing": "bucketing", "NNM": "nnm"}
ATTACK_NAMES: Dict[str, str] = {
    "ALIE": "optimized_alie",   # optimized as in Shejwalkar & Houmansadr
    "FOE": "optimized_foe",     # (Appendix 14.3)
    "LF": "label_flip",
    "SF": "sign_flip",
    "Mimic": "mimic",
}

# Table 2, verbatim (block markers dropped): maximum test accuracy (%) over
# T = 800 steps on MNIST, alpha = 0.1, n = 17, f = 4, robust D-SHB, seeds 1-5.
# Note the paper prints identical rows for Bucketing + CWMed and Bucketing +
# CWTM: with f = 4 and buckets of s = 2 the two rules coincide (Appendix 14.1).
_TABLE2_TEXT = """\
Aggregation	ALIE	FOE	LF	SF	Mimic	Worst Case
Krum	10.19 ± 00.61	10.28 ± 00.57	12.76 ± 06.25	51.17 ± 06.14	86.78 ± 07.04	10.19 ± 00.61
Bucketing + Krum	44.78 ± 06.18	36.10 ± 15.70	56.21 ± 19.49	47.54 ± 11.74	94.92 ± 03.93	36.10 ± 15.70
NNM + Krum	78.30 ± 07.78	70.07 ± 04.39	93.07 ± 05.24	82.44 ± 02.86	97.69 ± 00.77	70.07 ± 04.39
GM	92.01 ± 04.35	65.61 ± 12.17	93.94 ± 03.70	57.86 ± 10.42	96.85 ± 01.57	57.86 ± 10.42
Bucketing + GM	39.83 ± 11.35	44.73 ± 16.47	96.22 ± 02.83	91.30 ± 03.91	97.68 ± 00.91	39.83 ± 11.35
NNM + GM	81.26 ± 08.91	75.27 ± 02.69	94.23 ± 03.20	86.33 ± 03.73	97.17 ± 01.09	75.27 ± 02.69
CWMed	68.74 ± 06.99	19.48 ± 10.97	33.34 ± 17.02	27.96 ± 09.97	64.01 ± 12.77	19.48 ± 10.97
Bucketing + CWMed	55.86 ± 10.00	42.80 ± 21.25	70.16 ± 11.65	50.96 ± 16.52	94.43 ± 03.48	42.80 ± 21.25
NNM + CWMed	80.52 ± 07.45	75.20 ± 08.80	93.42 ± 02.98	85.10 ± 06.05	97.38 ± 00.70	75.20 ± 08.80
CWTM	76.16 ± 07.68	69.96 ± 16.57	36.87 ± 21.43	27.45 ± 08.83	89.83 ± 02.83	27.45 ± 08.83
Bucketing + CWTM	55.86 ± 10.00	42.80 ± 21.25	70.16 ± 11.65	50.96 ± 16.52	94.43 ± 03.48	42.80 ± 21.25
NNM + CWTM	79.04 ± 09.19	79.91 ± 03.94	94.75 ± 02.22	84.78 ± 05.78	96.02 ± 03.25	79.04 ± 09.19
"""
_TABLE2_BASELINE = "98.03 ± 0.70"  # D-SHB, f = 0 (caption of Table 2)


class Cell(NamedTuple):
  """A published mean ± std in percent, with its text as printed.

  Attributes:
    mean: the mean over seeds.
    std: the standard deviation over seeds.
    text: the cell with two decimals, "78.30 ± 7.78" (the paper pads its
      stds to two integer digits, "78.30 ± 07.78"; the digits are the same).
  """

  mean: float
  std: float
  text: str


@dataclasses.dataclass(frozen=True)
class PaperTable:
  """A published table of mean ± std test accuracies (%).

  Attributes:
    name: the key in ``TABLES``.
    source: citation and table number.
    metric: what the cells report ("max_accuracy").
    cells: ``cells[aggregator][attack]``, registry names (e.g.
      ``cells["nnm+krum"]["optimized_alie"]``).
    worst_case: the paper's worst-case column, per aggregator.
    baseline: the fault-free reference (label, cell), or None.
    conditions: the run settings the table was measured under; a grid's
      table gets the paper's numbers only where its runs match them.
    printed_rows: aggregator registry name -> the row label as printed.
  """

  name: str
  source: str
  metric: str
  cells: Mapping[str, Mapping[str, Cell]]
  worst_case: Mapping[str, Cell]
  baseline: Optional[Tuple[str, Cell]]
  conditions: Mapping[str, Any]
  printed_rows: Mapping[str, str]

  def cell(self, aggregator: str, attack: str) -> Optional[Cell]:
    """The paper's cell, or None where the paper has none."""
    return self.cells.get(aggregator, {}).get(attack)

  def matches(self, settings: Mapping[str, Any]) -> bool:
    """Whether run settings (a ``RunConfig.to_dict()``) match ``conditions``."""
    return all(settings.get(k) == v for k, v in self.conditions.items())


def parse_cell(text: str) -> Cell:
  """Parses "78.30 ± 07.78" into ``Cell(78.3, 7.78)``.

  Raises:
    ValueError: the text is not "mean ± std".
  """
  match = re.fullmatch(r"\s*([0-9.]+)\s*±\s*([0-9.]+)\s*", text)
  if not match:
    raise ValueError(f"expected 'mean ± std', got {text!r}")
  mean, std = float(match.group(1)), float(match.group(2))
  return Cell(mean, std, f"{mean:.2f} ± {std:.2f}")


def registry_name(printed: str) -> str:
  """Maps a printed method ("NNM + Krum") to its registry name ("nnm+krum").

  Raises:
    ValueError: a name the paper's vocabulary does not contain.
  """
  parts = [p.strip() for p in printed.split("+")]
  names = []
  for i, part in enumerate(parts):
    table = RULE_NAMES if i == len(parts) - 1 else PRE_NAMES
    if part not in table:
      hint = did_you_mean(part, list(table), style="paren")
      raise ValueError(f"unknown printed name {part!r} in {printed!r}{hint}; "
                       f"valid: {', '.join(table)}")
    names.append(table[part])
  return "+".join(names)


def _parse_table(text: str) -> Tuple[Dict[str, Dict[str, Cell]],
                                     Dict[str, Cell], Dict[str, str]]:
  lines = [line.split("\t") for line in text.strip().splitlines()]
  header = lines[0]
  attacks = [ATTACK_NAMES[a] for a in header[1:-1]]
  cells, worst, printed = {}, {}, {}
  for row in lines[1:]:
    if len(row) != len(header):
      raise ValueError(f"row {row[0]!r} has {len(row)} cells, expected "
                       f"{len(header)}")
    name = registry_name(row[0])
    printed[name] = row[0]
    cells[name] = {a: parse_cell(t) for a, t in zip(attacks, row[1:-1])}
    worst[name] = parse_cell(row[-1])
  return cells, worst, printed


def _table2() -> PaperTable:
  cells, worst, printed = _parse_table(_TABLE2_TEXT)
  return PaperTable(
      name="fixing_by_mixing_table2",
      source="Allouah et al., Fixing by Mixing, AISTATS 2023, Table 2",
      metric="max_accuracy", cells=cells, worst_case=worst,
      baseline=("D-SHB (f = 0)", parse_cell(_TABLE2_BASELINE)),
      conditions={"n": 17, "f": 4, "alpha": 0.1}, printed_rows=printed)


TABLES: Dict[str, PaperTable] = {t.name: t for t in (_table2(),)}


def get(name: str) -> PaperTable:
  """The published table ``name`` (a key of ``TABLES``).

  Raises:
    ValueError: an unknown name, listing the valid ones.
  """
  if name not in TABLES:
    hint = did_you_mean(name, list(TABLES), style="paren")
    raise ValueError(f"unknown paper table {name!r}{hint}; valid: "
                     f"{', '.join(TABLES)}")
  return TABLES[name]


def names() -> List[str]:
  """The stored tables' names."""
  return sorted(TABLES)
