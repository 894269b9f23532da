"""What a grid's finished runs say: records, summaries, tables, tidy rows.

``Record`` is one finished run and seed; ``summarize`` turns records into
``Table``s (mean ± std over seeds per method and attack, the worst case over
attacks, baselines, the paper's numbers where a published table matches);
``format_markdown`` / ``format_latex`` / ``table_rows`` render them;
``evaluation_rows`` / ``round_rows`` are the tidy per-evaluation and per-round
rows of the CSV files. ``display``, ``describe`` and ``summary`` (from
``byzjax.grid``) say how settings are shown.

References:
  Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan. "Fixing by Mixing: A
  Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023, Table 2
  (maximum accuracy, worst case over attacks).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from typing import (Any, Dict, Iterable, Iterator, List, Mapping, NamedTuple,
                    Optional, Sequence, Tuple)

import numpy as np

from byzjax import paper_results
from byzjax.config import RunConfig
# How settings are shown, re-exported for the modules that draw results.
from byzjax.grid import (Grid, Run, check_metric, describe, display, hashable,  # noqa: F401
                         plain, short, summary)
from byzjax.train import RunResult


class Record(NamedTuple):
  """One finished run and seed.

  Attributes:
    run_id: ``Run.id``.
    kind: "grid" or "baseline".
    label: the row label.
    settings: the run's varied settings.
    overridden: fields a baseline sets itself.
    seed: the seed.
    result: the ``RunResult`` (or any object with ``eval_steps`` and
      ``test_accuracy`` for tables).
  """

  run_id: str
  kind: str
  label: str
  settings: Dict[str, Any]
  overridden: Tuple[str, ...]
  seed: int
  result: Any


def record_of(run: Run, result: RunResult) -> Record:
  return Record(run.id, run.kind, run.label, run.settings, run.overridden,
                result.seed, result)


class GridResults:
  """The finished runs of a grid, and what is made of them.

  Attributes:
    grid: the grid.
    runs: its expanded runs.
    records: one ``Record`` per run and seed, in run then seed order.
    out_dir: the output folder (or None).
  """

  def __init__(self, grid: Grid, runs: Sequence[Run], records: Sequence[Record],
               out_dir: Optional[str] = None):
    self.grid = grid
    self.runs = list(runs)
    self.records = list(records)
    self.out_dir = out_dir

  def to_dataframe(self, kind: str = "evaluations") -> Any:
    """The results as a tidy pandas DataFrame (``to_dataframe``)."""
    return to_dataframe(self, kind)

  def tables(self, *, ddof: int = 0) -> List["Table"]:
    """The grid's summary tables (one per combination of the group fields)."""
    g = self.grid
    paper = paper_results.get(g.paper) if g.paper else None
    configs = {r.id: r.config for r in self.runs}
    all_columns = None
    if g.columns in g.fields:  # a partial folder says how many are missing
      all_columns = [hashable(v) for v in g.values(g.columns)]
    return summarize(self.records, rows=g.rows, columns=g.columns,
                     metric=g.metric, worst_case=g.worst_case, paper=paper,
                     group_fields=g.group_fields, ddof=ddof,
                     configs=configs, all_columns=all_columns,
                     all_seeds=len(g.seeds))



def finite(obj: Any) -> Any:
  """NaN/inf -> None, so that runs.json is strict JSON."""
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {k: finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [finite(v) for v in obj]
  return obj


def write_csv(fh: io.TextIOBase, rows: Iterable[Dict[str, Any]]) -> None:
  """Writes dict rows as CSV (the header from the first row's keys)."""
  writer = None
  for row in rows:
    if writer is None:
      writer = csv.DictWriter(fh, fieldnames=list(row), lineterminator="\n")
      writer.writeheader()
    writer.writerow(row)


def csv_text(rows: Iterable[Dict[str, Any]]) -> str:
  buf = io.StringIO()
  write_csv(buf, rows)
  return buf.getvalue()


def _setting_columns(record: Record, fields: Sequence[str]) -> Dict[str, Any]:
  out = {}
  for field in fields:
    value = record.settings.get(field, "")
    out[field] = json.dumps(plain(value), sort_keys=True) if isinstance(
        value, (Mapping, list, tuple)) else value
  return out


def evaluation_rows(records: Iterable[Record], fields: Sequence[str]
                   ) -> Iterator[Dict[str, Any]]:
  """One row per test evaluation: run_id, kind, method, the varied settings,
  seed, step, test_accuracy (a generator)."""
  for r in records:
    base = {"run_id": r.run_id, "kind": r.kind, "method": r.label,
            **_setting_columns(r, fields), "seed": r.seed}
    for step, acc in zip(r.result.eval_steps, r.result.test_accuracy):
      yield {**base, "step": step, "test_accuracy": acc}


ROUND_METRICS = ("loss", "aggregate_error", "kappa_hat",
                  "byzantine_influence", "learning_rate", "eta")


def round_rows(records: Iterable[Record], fields: Sequence[str]
              ) -> Iterator[Dict[str, Any]]:
  """One row per round (1-based): run_id, kind, method, the varied settings,
  seed, round, loss, aggregate_error, kappa_hat, byzantine_influence,
  learning_rate, eta (a generator)."""
  for r in records:
    base = {"run_id": r.run_id, "kind": r.kind, "method": r.label,
            **_setting_columns(r, fields), "seed": r.seed}
    series = [getattr(r.result, m) for m in ROUND_METRICS]
    for t, values in enumerate(zip(*series), start=1):
      yield {**base, "round": t, **dict(zip(ROUND_METRICS, values))}


def to_dataframe(results: Any, kind: str = "evaluations") -> Any:
  """Tidy results for pandas / seaborn.

  Args:
    results: a ``GridResults`` (``run_grid``, ``load_grid_results``) or
      ``RunResult``s (``train.train``).
    kind: "evaluations": one row per run x seed x test evaluation (run_id,
      kind, method, the grid's varied settings, seed, step, test_accuracy);
      "rounds": one row per run x seed x round (round, loss,
      aggregate_error, kappa_hat, byzantine_influence, learning_rate, eta).
      For ``RunResult``s the settings columns are aggregator, attack, f,
      alpha (run_id is their index in the list).

  Returns:
    A ``pandas.DataFrame`` (the same columns as evaluations.csv /
    rounds.csv).
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top
  if kind not in ("evaluations", "rounds"):
    raise ValueError(f"kind must be 'evaluations' or 'rounds', got {kind!r}")
  if isinstance(results, GridResults):
    records, fields = results.records, results.grid.fields
  else:
    fields = ["aggregator", "attack", "f", "alpha"]
    records = [Record(str(i), "run", r.config.aggregator,
                      {k: getattr(r.config, k) for k in fields}, (), r.seed, r)
               for i, r in enumerate(results)]
  rows = (evaluation_rows if kind == "evaluations" else round_rows)(
      records, fields)
  return pd.DataFrame(list(rows))


class Stat(NamedTuple):
  """Mean and standard deviation over seeds (in percent for accuracies).

  Attributes:
    mean: the mean.
    std: the standard deviation (``ddof`` of ``summarize``).
    count: the number of seeds.
  """

  mean: float
  std: float
  count: int


def metric_value(result: Any, metric: str) -> float:
  """The metric of one seed's result, as a fraction in [0, 1].

  Args:
    result: a ``RunResult`` (or anything with ``eval_steps`` and
      ``test_accuracy``).
    metric: "max_accuracy", "final_accuracy" or "accuracy_at:STEP" (the
      accuracy at the last evaluation at or before round STEP, so that a
      shortened run, e.g. ``--steps 2``, reports its last evaluation).

  Returns:
    The value.

  Raises:
    ValueError: an unknown metric.
  """
  acc = np.asarray(result.test_accuracy, np.float64)
  if metric == "max_accuracy":
    return float(np.nanmax(acc))
  if metric == "final_accuracy":
    return float(acc[-1])
  check_metric(metric)
  step = int(metric.split(":")[1])
  steps = np.asarray(result.eval_steps)
  return float(acc[max(int(np.searchsorted(steps, step, side="right")) - 1, 0)])


def stat_of(values: Sequence[float], ddof: int = 0) -> Stat:
  """Mean and std (``ddof``) of fractions, in percent; see ``format_stat``."""
  v = 100.0 * np.asarray(values, np.float64)
  std = float(np.std(v, ddof=ddof)) if len(v) > ddof else float("nan")
  return Stat(float(np.mean(v)), std, len(v))


@dataclasses.dataclass
class Table:
  """One summary table: rows (methods) x columns (attacks) of ``Stat``s.

  Attributes:
    group: the settings shared by the table (the grid's other axes).
    row_field: the field of the rows ("aggregator").
    column_field: the field of the columns ("attack").
    metric: the metric summarized.
    rows: row values, in grid order.
    columns: column values, in grid order.
    cells: ``(row, column) -> Stat``.
    worst: ``row -> (column, Stat)``, the column of least mean (empty when
      the table has no worst-case column).
    baselines: ``(label, Stat)`` of the baseline runs of this group.
    seeds: the seeds summarized.
    paper: the matching ``paper_results.PaperTable``, or None.
    all_columns: every column the grid has (None: unknown); a row with
      fewer saved columns has a worst case over only those, and says so.
    ddof: the std's delta degrees of freedom (0: population, 1: sample).
    all_seeds: how many seeds each cell has when the grid is complete (None:
      unknown); a cell or baseline with fewer says "(k of K seeds)", and a
      worst case over such cells says how many.
  """

  group: Dict[str, Any]
  row_field: str
  column_field: str
  metric: str
  rows: List[Any]
  columns: List[Any]
  cells: Dict[Tuple[Any, Any], Stat]
  worst: Dict[Any, Tuple[Any, Stat]]
  baselines: List[Tuple[str, Stat]]
  seeds: List[int]
  paper: Optional[paper_results.PaperTable] = None
  all_columns: Optional[List[Any]] = None
  ddof: int = 0
  all_seeds: Optional[int] = None

  def present(self, row: Any) -> int:
    """How many columns of ``row`` hold results."""
    return sum((row, c) in self.cells for c in self.columns)

  def agrees(self, stat: Optional[Stat], paper_cell: Any) -> Optional[bool]:
    """Whether a published mean lies within our mean ± 2 standard errors
    (2 s / sqrt(k), s the sample std over our k seeds); None with fewer than
    two seeds or no published cell."""
    return agrees(stat, paper_cell, self.ddof)

  def partial(self, row: Any) -> bool:
    """The row's worst case is over fewer columns than the grid has."""
    return self.all_columns is not None and self.present(row) < len(
        self.all_columns)

  def incomplete(self, stat: Optional[Stat]) -> bool:
    """A cell (or baseline) with fewer seeds saved than the grid has."""
    return (stat is not None and self.all_seeds is not None
            and stat.count < self.all_seeds)

  def incomplete_cells(self, row: Any) -> int:
    """How many of ``row``'s cells miss seeds."""
    return sum(self.incomplete(self.cells.get((row, c))) for c in self.columns)

  @property
  def title(self) -> str:
    return describe(self.group)


def agrees(stat: Optional[Stat], paper_cell: Any, ddof: int = 0
          ) -> Optional[bool]:
  """|paper mean - our mean| <= 2 s / sqrt(k), s our sample std over k seeds
  (``stat.std`` has delta degrees of freedom ``ddof``); None when k < 2 or
  either side is missing."""
  if stat is None or paper_cell is None or stat.count < 2 or not math.isfinite(
      stat.std):
    return None
  k = stat.count
  sample = stat.std * math.sqrt((k - ddof) / (k - 1))
  return abs(paper_cell.mean - stat.mean) <= 2.0 * sample / math.sqrt(k)


OUTSIDE_MARK = "*"


def summarize(records: Sequence[Record], *, rows: str = "aggregator",
              columns: str = "attack", metric: str = "max_accuracy",
              worst_case: bool = True,
              paper: Optional[paper_results.PaperTable] = None,
              group_fields: Optional[Sequence[str]] = None, ddof: int = 0,
              configs: Optional[Mapping[str, RunConfig]] = None,
              all_columns: Optional[Sequence[Any]] = None,
              all_seeds: Optional[int] = None
             ) -> List[Table]:
  """Mean ± std over seeds of ``metric`` per (row, column), per group.

  The worst case of a row is the column whose mean is least (its mean ± std
  are shown, as in Table 2 of Allouah et al.).

  Args:
    records: finished runs (``Record``s).
    rows: the field whose values are rows.
    columns: the field whose values are columns.
    metric: see ``metric_value``.
    worst_case: add the worst case over columns.
    paper: a published table to attach where its conditions hold.
    group_fields: fields that split records into tables (default: every
      setting but ``rows`` and ``columns``).
    ddof: delta degrees of freedom of the std (0: numpy's default, the
      population std; 1: the sample std).
    configs: run id -> RunConfig, to check ``paper``'s conditions (default:
      ``record.result.config`` when present).
    all_columns: every column value the grid has, so that a row missing
      some says "worst case over 3 of 5" (default: the columns present);
      the columns then keep the grid's order.
    all_seeds: the number of seeds of the grid, so that a cell missing some
      says "(1 of 3 seeds)" (default: unknown, nothing said).

  Returns:
    One ``Table`` per distinct combination of the group fields.
  """
  grid_records = [r for r in records if r.kind == "grid"]
  if group_fields is None:
    group_fields = []
    for r in grid_records:
      for k in r.settings:
        if k not in (rows, columns) and k not in group_fields:
          group_fields.append(k)
  groups: Dict[Tuple[Any, ...], List[Record]] = {}
  for r in grid_records:
    key = tuple(hashable(r.settings.get(k)) for k in group_fields)
    groups.setdefault(key, []).append(r)
  tables = []
  for key, members in groups.items():
    group = dict(zip(group_fields, key))
    values: Dict[Tuple[Any, Any], List[float]] = {}
    row_order: List[Any] = []
    col_order: List[Any] = []
    seeds: List[int] = []
    for r in members:
      row = hashable(r.settings.get(rows, _setting(r, rows, configs)))
      col = hashable(r.settings.get(columns, _setting(r, columns, configs)))
      row_order += [row] if row not in row_order else []
      col_order += [col] if col not in col_order else []
      seeds += [r.seed] if r.seed not in seeds else []
      values.setdefault((row, col), []).append(metric_value(r.result, metric))
    cells = {k: stat_of(v, ddof) for k, v in values.items()}
    if all_columns is not None:  # the grid's order, whatever was saved first
      order = {c: i for i, c in enumerate(all_columns)}
      col_order.sort(key=lambda c: order.get(c, len(order)))
    worst = {}
    if worst_case:
      for row in row_order:
        present = [(c, cells[(row, c)]) for c in col_order if (row, c) in cells]
        if present:
          worst[row] = min(present, key=lambda item: item[1].mean)
    base_values: Dict[str, List[float]] = {}
    for r in records:
      if r.kind != "baseline":
        continue
      follows = [k for k in group_fields if k in r.settings
                 and k not in r.overridden]
      if all(hashable(r.settings[k]) == group[k] for k in follows):
        base_values.setdefault(r.label, []).append(
            metric_value(r.result, metric))
    baselines = [(label, stat_of(v, ddof)) for label, v in base_values.items()]
    attached = None
    if paper is not None and paper.metric == metric:
      config = _config_of(members[0], configs)
      if config is not None and paper.matches(config.to_dict()):
        attached = paper
    tables.append(Table(group, rows, columns, metric, row_order, col_order,
                        cells, worst, baselines, sorted(seeds), attached,
                        None if all_columns is None else list(all_columns),
                        ddof, all_seeds))
  return tables


def _config_of(record: Record, configs: Optional[Mapping[str, RunConfig]]
              ) -> Optional[RunConfig]:
  if configs and record.run_id in configs:
    return configs[record.run_id]
  return getattr(record.result, "config", None)


def _setting(record: Record, field: str,
             configs: Optional[Mapping[str, RunConfig]]) -> Any:
  config = _config_of(record, configs)
  return getattr(config, field, None) if config is not None else None


_METRIC_TEXT = {"max_accuracy": "maximum test accuracy (%)",
                "final_accuracy": "final test accuracy (%)"}


def metric_text(metric: str) -> str:
  if metric.startswith("accuracy_at:"):
    return f"test accuracy (%) after {metric.split(':')[1]} rounds"
  return _METRIC_TEXT[metric]


def format_stat(stat: Optional[Stat], of: Optional[int] = None) -> str:
  """ "78.30 ± 7.78" (empty for a missing cell); with ``of`` (the seeds a
  complete cell has) and fewer seeds: "36.77 (1 of 2 seeds)"."""
  if stat is None:
    return ""
  if stat.count < 2 or not math.isfinite(stat.std):
    text = f"{stat.mean:.2f}"
  else:
    text = f"{stat.mean:.2f} ± {stat.std:.2f}"
  if of is not None and stat.count < of:
    text += f" ({stat.count} of {of} seeds)"
  return text


def _grid_of_text(table: Table) -> Tuple[List[str], List[List[str]], List[str]]:
  """Header, body rows and notes of a table, as text cells."""
  header = [f"{table.row_field} \\ {table.column_field}"] + [
      display(table.column_field, c) for c in table.columns]
  if table.worst:
    header.append("worst case")
  body = []
  paper = table.paper
  for row in table.rows:
    line = [display(table.row_field, row)] + [
        format_stat(table.cells.get((row, c)), table.all_seeds)
        for c in table.columns]
    if table.worst:
      col, stat = table.worst.get(row, (None, None))
      over = (f"; {table.present(row)} of {len(table.all_columns)}"
              if table.partial(row) else "")
      missing = table.incomplete_cells(row)
      if missing:
        over += f"; {missing} cell(s) missing seeds"
      line.append(f"{format_stat(stat)} ({display(table.column_field, col)}"
                  f"{over})" if stat is not None else "")
    body.append(line)
    if paper is not None and row in paper.cells:
      def mark(c, stat):
        return OUTSIDE_MARK if table.agrees(stat, c) is False else ""
      line = ["  paper"] + [
          (c.text + mark(c, table.cells.get((row, col)))
           if (c := paper.cell(row, col)) is not None else "")
          for col in table.columns]
      if table.worst:
        # The printed worst case is over the paper's attacks: shown only
        # where the table has exactly those columns.
        w = paper.worst_case.get(row)
        same = set(paper.cells[row]) == set(table.columns)
        ours = table.worst.get(row, (None, None))[1]
        line.append(w.text + mark(w, ours) if w is not None and same else "")
      body.append(line)
  notes = []
  for label, stat in table.baselines:
    text = f"{label}: {format_stat(stat, table.all_seeds)}"
    if paper is not None and paper.baseline is not None:
      text += f" (paper: {paper.baseline[0]} {paper.baseline[1].text})"
    notes.append(text)
  return header, body, notes


def _caption(table: Table) -> str:
  seeds = ", ".join(map(str, table.seeds))
  std = {0: "population std", 1: "sample std"}.get(table.ddof,
                                                   f"std, ddof = {table.ddof}")
  text = (f"{metric_text(table.metric)}, mean ± {std} over "
          f"{len(table.seeds)} seed(s) ({seeds})")
  if table.worst:
    text += f"; worst case = the {table.column_field} of least mean"
    partial = [r for r in table.rows if table.partial(r)]
    if partial:
      text += (f" (\"k of {len(table.all_columns)}\": over the k "
               f"{table.column_field}s saved so far; {len(partial)} row(s) "
               f"incomplete)")
  cells = list(table.cells.values()) + [s for _, s in table.baselines]
  if any(table.incomplete(s) for s in cells):
    text += (f"; PARTIAL: \"(k of {table.all_seeds} seeds)\" marks a cell "
             f"whose other seeds are not saved yet")
  if table.paper is not None:
    text += f"; 'paper' rows: {table.paper.source}"
    if len(table.seeds) >= 2:
      text += (f"; {OUTSIDE_MARK}: the paper's mean lies outside our mean ± 2 "
               f"sample std / sqrt({len(table.seeds)})")
  return text


def format_markdown(tables: Sequence[Table], *, title: str = "") -> str:
  """The tables as Markdown (aligned, so also readable in a terminal).

  Args:
    tables: from ``summarize``.
    title: an optional first line (e.g. ``summary(grid)``).

  Returns:
    The Markdown text.
  """
  out = [f"**{title}**\n"] if title else []
  for table in tables:
    header, body, notes = _grid_of_text(table)
    if table.group:
      out.append(f"### {table.title}\n")
    out.append(_caption(table) + "\n")
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    fmt = lambda cells: "| " + " | ".join(
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    out.append(fmt(header))
    out.append("| " + " | ".join(
        ":" + "-" * (w - 1) if i == 0 else "-" * (w - 1) + ":"
        for i, w in enumerate(widths)) + " |")
    out += [fmt(line) for line in body]
    if notes:
      out.append("")
      out += [f"{note}  " for note in notes]
    out.append("")
  return "\n".join(out).rstrip() + "\n"


_TEX_ESCAPES = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%",
                "$": "\\$", "#": "\\#", "_": "\\_", "{": "\\{", "}": "\\}",
                "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
                "±": "$\\pm$"}


def tex_escape(text: str) -> str:
  """Text as LaTeX: every special character escaped, in one pass."""
  return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def format_latex(tables: Sequence[Table]) -> str:
  """The tables as LaTeX ``tabular``s (booktabs), paper rows in grey."""
  out = ["% requires \\usepackage{booktabs} and \\usepackage{xcolor}"]
  for table in tables:
    header, body, notes = _grid_of_text(table)
    out.append(f"% {_caption(table)}")
    if table.group:
      out.append(f"% {table.title}")
    out.append("\\begin{tabular}{l" + "r" * (len(header) - 1) + "}")
    out.append("\\toprule")
    out.append(" & ".join(tex_escape(h) for h in header) + " \\\\")
    out.append("\\midrule")
    for line in body:
      if line[0] == "  paper":
        cells = ["\\quad\\textcolor{gray}{paper}"] + [
            f"\\textcolor{{gray}}{{{tex_escape(c)}}}" if c else "" for c in line[1:]]
      else:
        cells = [tex_escape(c) for c in line]
      out.append(" & ".join(cells) + " \\\\")
    out.append("\\bottomrule")
    out.append("\\end{tabular}")
    out += [f"% {note}" for note in notes]
    out.append("")
  return "\n".join(out)


def table_rows(tables: Sequence[Table]) -> List[Dict[str, Any]]:
  """Tidy rows of the tables: one per cell, worst case and baseline.

  Columns: the group fields, ``row`` (method), ``column`` (attack, "worst
  case" or "baseline"), ``worst_of`` (the attack of the worst case),
  ``metric``, ``mean``, ``std``, ``seeds``, ``paper_mean``, ``paper_std``,
  ``paper_within_2se`` (``agrees``: true / false, empty when undecided).
  """
  fields = []
  for t in tables:
    fields += [k for k in t.group if k not in fields]
  out = []
  for t in tables:
    group = {k: display(k, t.group[k]) if k in t.group else "" for k in fields}
    p = t.paper

    def row(method, column, stat, paper_cell=None, worst_of=""):
      out.append({**group, "row": method, "column": column, "worst_of": worst_of,
                  "metric": t.metric, "mean": round(stat.mean, 4),
                  "std": round(stat.std, 4) if math.isfinite(stat.std) else "",
                  "seeds": stat.count,
                  "paper_mean": paper_cell.mean if paper_cell else "",
                  "paper_std": paper_cell.std if paper_cell else "",
                  "paper_within_2se": {None: "", True: "true", False: "false"}[
                      agrees(stat, paper_cell, t.ddof)]})

    for r in t.rows:
      for c in t.columns:
        if (r, c) in t.cells:
          row(display(t.row_field, r), display(t.column_field, c),
              t.cells[(r, c)], p.cell(r, c) if p else None)
      if r in t.worst:
        c, stat = t.worst[r]
        same = p is not None and set(p.cells.get(r, ())) == set(t.columns)
        row(display(t.row_field, r), "worst case", stat,
            p.worst_case.get(r) if same else None, display(t.column_field, c))
    for label, stat in t.baselines:
      row(label, "baseline", stat, p.baseline[1] if p and p.baseline else None)
  return out
