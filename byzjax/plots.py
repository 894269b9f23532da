"""Plots of grid results (PNG, matplotlib's Agg backend, no display needed).

- ``accuracy_curves``: test accuracy over rounds, mean and a ±1 std band over
  seeds, one line per attack, one panel per method (baselines dashed).
- ``aggregate_error_curves``: the distance ||R_t - s_t|| of the aggregate
  from the honest mean over rounds (mean over seeds), the diagnostic that
  shows why a method fails under an attack.
- ``kappa_curves``: the empirical robustness coefficient kappa_hat_t of eq.
  (26) of Allouah et al. over rounds, log scale, with the (f, kappa) bounds
  of Table 1 / Lemma 1 (Figure 2 of the paper): one panel per rule and attack,
  one line per pre-aggregation, when the methods are rules behind the same
  pre-aggregations; else one panel per attack, one line per method.
- ``table_heatmap``: a summary table (method x attack, worst case last) as
  a heatmap.
- ``worst_case_heatmap``: the worst case over attacks per method over two
  settings, e.g. f x alpha (as ByzFL's heatmaps).

``plot_grid`` draws all that applies to a grid's results; ``pyplot`` and
``save`` (atomic) serve figures of one's own, e.g. the result scripts'.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from byzjax import aggregators
from byzjax import results as res
from byzjax.files import atomic_open


def pyplot():
  """matplotlib.pyplot on the Agg backend (PNGs, no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg", force=True)
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _panels(count: int, *, width: float = 3.4, height: float = 2.7,
            max_cols: int = 4):
  plt = pyplot()
  cols = max(1, min(max_cols, count))
  rows = max(1, math.ceil(count / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.6),
                           squeeze=False, sharex=True, sharey=True,
                           layout="constrained")
  flat = axes.ravel()
  for ax in flat[count:]:
    ax.set_visible(False)
  for ax in flat[max(0, count - cols):count]:
    ax.xaxis.set_tick_params(labelbottom=True)  # the lowest of its column
  return fig, flat[:count]


def _columns(panels: Sequence[Any], field: str) -> int:
  """Panels per row: one rule's variants per row when the methods are
  "rule", "nnm+rule", ... rule by rule (as in Table 2), else up to 4."""
  values = [str(v) for v in panels]
  if field == "aggregator" and values:
    last = values[0].split("+")[-1]
    per_rule = sum(1 for v in values if v.split("+")[-1] == last)
    blocks = [values[i:i + per_rule] for i in range(0, len(values), per_rule)]
    if 1 < per_rule <= 4 and len(values) % per_rule == 0 and all(
        len({v.split("+")[-1] for v in b}) == 1 for b in blocks):
      return per_rule
  return min(4, max(1, len(values)))


def save(fig, path: str) -> str:
  """Saves ``fig`` at ``path`` atomically (a full disk leaves the old plot,
  not half a PNG) and closes it; returns ``path``."""
  try:
    with atomic_open(path, "wb") as fh:
      fig.savefig(fh, dpi=110, bbox_inches="tight",
                  format=os.path.splitext(path)[1][1:] or "png")
  finally:
    pyplot().close(fig)
  return path


def _setting(record: res.Record, field: str) -> Any:
  """A record's value of ``field``: varied, else from its run's config."""
  if field in record.settings:
    return record.settings[field]
  return getattr(getattr(record.result, "config", None), field, None)


def _by(records: Sequence[res.Record], field: str) -> Dict[Any, List[res.Record]]:
  out: Dict[Any, List[res.Record]] = {}
  for r in records:
    out.setdefault(res.hashable(_setting(r, field)), []).append(r)
  return out


def _mean_std(series: Sequence[Sequence[float]]) -> Tuple[np.ndarray, np.ndarray]:
  a = np.asarray(series, np.float64)
  with np.errstate(invalid="ignore"):
    return np.nanmean(a, axis=0), np.nanstd(a, axis=0)


def _group_baselines(baselines: Sequence[res.Record], group: Dict[str, Any]
                    ) -> Dict[str, List[res.Record]]:
  out: Dict[str, List[res.Record]] = {}
  for r in baselines:
    follows = [k for k in group if k in r.settings and k not in r.overridden]
    if all(res.hashable(r.settings[k]) == group[k] for k in follows):
      out.setdefault(r.label, []).append(r)
  return out


def accuracy_curves(records: Sequence[res.Record], path: str, **kwargs) -> str:
  """``accuracy_figure`` saved as a PNG at ``path``; returns ``path``."""
  return save(accuracy_figure(records, **kwargs), path)


def accuracy_figure(records: Sequence[res.Record], *,
                    rows: str = "aggregator", columns: str = "attack",
                    baselines: Sequence[res.Record] = (), title: str = ""):
  """Test accuracy over rounds: one panel per ``rows`` value, one line per
  ``columns`` value, mean over seeds with a ±1 std band.

  Args:
    records: the grid records of one group.
    rows: the field whose values get a panel each.
    columns: the field whose values get a line each.
    baselines: baseline records, drawn dashed in every panel.
    title: the figure title.

  Returns:
    The matplotlib figure.
  """
  panels = _by(records, rows)
  fig, axes = _panels(len(panels), max_cols=_columns(list(panels), rows))
  colors = {c: f"C{i}" for i, c in enumerate(_by(records, columns))}
  for ax, (row, members) in zip(axes, panels.items()):
    for col, runs in _by(members, columns).items():
      steps = runs[0].result.eval_steps
      mean, std = _mean_std([r.result.test_accuracy for r in runs])
      ax.plot(steps, 100 * mean, color=colors[col], lw=1.4,
              label=res.display(columns, col))
      ax.fill_between(steps, 100 * (mean - std), 100 * (mean + std),
                      color=colors[col], alpha=0.18, lw=0)
    for label, runs in _by_label(baselines).items():
      mean, _ = _mean_std([r.result.test_accuracy for r in runs])
      ax.plot(runs[0].result.eval_steps, 100 * mean, "k--", lw=1.0, label=label)
    ax.set_title(res.display(rows, row), fontsize=10)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
  for ax in axes:
    ax.set_xlabel("round")
  axes[0].set_ylabel("test accuracy (%)")
  _legend(fig, axes)
  if title:
    fig.suptitle(title, fontsize=11)
  return fig


def _by_label(records: Sequence[res.Record]) -> Dict[str, List[res.Record]]:
  out: Dict[str, List[res.Record]] = {}
  for r in records:
    out.setdefault(r.label, []).append(r)
  return out


def _legend(fig, axes) -> None:
  """One legend for the figure, below the panels (outside them: constrained
  layout makes room, so it never covers the axes' labels)."""
  handles, labels = [], []
  for ax in axes:
    for h, l in zip(*ax.get_legend_handles_labels()):
      if l not in labels:
        handles.append(h)
        labels.append(l)
  if handles:
    fig.legend(handles, labels, loc="outside lower center",
               ncol=min(5, len(labels)), frameon=False)


def _log_limits(curves: Sequence[np.ndarray], floor_quantile: float = 0.01
               ) -> Tuple[float, float]:
  """Limits of a log axis shared by ``curves``: up to 1.25 x the largest
  value, down to the lowest curve's level. A curve's level is its minimum,
  unless that lies below a tenth of its ``floor_quantile`` quantile: then
  half that quantile, and its rare dips (e.g. a round whose aggregate is the
  honest mean to float precision) leave the axis as lines through its lower
  edge instead of squashing every curve into a tenth of its height. A curve
  that is low throughout stays in view."""
  lows, highs = [], []
  for c in curves:
    c = np.asarray(c, np.float64)
    c = c[np.isfinite(c) & (c > 0)]
    if c.size:
      q = np.quantile(c, floor_quantile)
      lows.append(c.min() if c.min() >= q / 10 else q / 2)
      highs.append(c.max())
  if not lows:
    return 0.1, 10.0
  return min(lows) / 1.25, max(highs) * 1.25


def aggregate_error_curves(records: Sequence[res.Record], path: str,
                           **kwargs) -> str:
  """``aggregate_error_figure`` saved as a PNG at ``path``; returns ``path``."""
  return save(aggregate_error_figure(records, **kwargs), path)


def aggregate_error_figure(records: Sequence[res.Record], *,
                           rows: str = "aggregator", columns: str = "attack",
                           title: str = ""):
  """||R_t - s_t|| (distance of the aggregate from the honest mean) over
  rounds, mean over seeds, log scale: one panel per method, one line per
  attack.

  Args:
    records: the grid records of one group.
    rows: the field whose values get a panel each.
    columns: the field whose values get a line each.
    title: the figure title.

  Returns:
    The matplotlib figure.
  """
  panels = _by(records, rows)
  fig, axes = _panels(len(panels), max_cols=_columns(list(panels), rows))
  colors = {c: f"C{i}" for i, c in enumerate(_by(records, columns))}
  for ax, (row, members) in zip(axes, panels.items()):
    for col, runs in _by(members, columns).items():
      mean, _ = _mean_std([r.result.aggregate_error for r in runs])
      t = np.arange(1, len(mean) + 1)
      ok = np.isfinite(mean) & (mean > 0)
      if ok.any():
        ax.plot(t[ok], mean[ok], color=colors[col], lw=1.0,
                label=res.display(columns, col))
    ax.set_title(res.display(rows, row), fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_xlabel("round")
  values = [np.asarray(l.get_ydata(), np.float64)
            for ax in axes for l in ax.get_lines()]
  if values:
    # One log axis shared by every panel: its limits come from all of their
    # curves, so that every curve's level is in view (rare dips may leave it).
    axes[0].set_yscale("log")
    axes[0].set_ylim(*_log_limits(values))
  axes[0].set_ylabel("||R_t - honest mean||")
  _legend(fig, axes)
  if title:
    fig.suptitle(title, fontsize=11)
  return fig


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
  if window <= 1 or len(values) < window:
    return values
  kernel = np.ones(window) / window
  return np.convolve(values, kernel, mode="valid")


def kappa_curves(records: Sequence[res.Record], path: str, **kwargs) -> str:
  """``kappa_figure`` saved as a PNG at ``path``; returns ``path``."""
  return save(kappa_figure(records, **kwargs), path)


def _families(methods: Sequence[Any], field: str
              ) -> Optional[Dict[str, Dict[str, Any]]]:
  """rule -> {pre-aggregation: method} when ``methods`` are two or more rules
  each run behind the same two or more pre-aggregations ("nnm+krum",
  "bucketing+krum", "nnm+median", ...), as in Figure 2; else None."""
  if field != "aggregator" or not all(isinstance(m, str) for m in methods):
    return None
  out: Dict[str, Dict[str, Any]] = {}
  for m in methods:
    pre, _, last = m.rpartition("+")
    out.setdefault(last, {})[pre] = m
  pres = {frozenset(v) for v in out.values()}
  if len(out) < 2 or len(pres) != 1 or len(next(iter(pres))) < 2:
    return None
  return out


def kappa_figure(records: Sequence[res.Record], *, rows: str = "aggregator",
                 columns: str = "attack", smooth: int = 1, title: str = ""):
  """kappa_hat_t of eq. (26) over rounds (Figure 2 of Allouah et al.).

  kappa_hat_t^2 = ||R_t - m_bar_t||^2 / ((1/|H|) sum_H ||m_i - m_bar_t||^2):
  the error of the aggregate in units of the honest vectors' spread, mean over
  seeds, log scale. When the methods are rules each behind the same
  pre-aggregations (Figure 2: NNM and Bucketing before Krum, GM, CWMed, CWTM),
  one panel per rule and ``columns`` value (attack), one line per
  pre-aggregation, each in the same colour in every panel; otherwise one panel
  per ``columns`` value, one line per ``rows`` value (method). Also drawn: for
  each method with a proven (f, kappa)-robustness coefficient
  (``aggregators.robustness_coefficient``), sqrt(kappa) dashed in its colour,
  which kappa_hat_t never exceeds; the lower bound sqrt(f / (n - 2f)) of
  Proposition 6 (dotted: no rule does better on every input, single rounds
  may); and the honest-only level 1 (grey): an aggregate that is one honest
  vector picked at random has E[kappa_hat_t^2] = 1. The log axis is shared;
  rare dips far below the rest leave it through its lower edge
  (``_log_limits``).

  Args:
    records: the grid records of one group.
    rows: the field whose values are the methods.
    columns: the field whose values get a panel each (attacks).
    smooth: moving-average window over rounds (1: none).
    title: the figure title.

  Returns:
    The matplotlib figure (one axes per panel).
  """
  methods = _by(records, rows)
  attacks = _by(records, columns)
  families = _families(list(methods), rows)
  if families is None:
    panels = [(res.display(columns, col), _by(members, rows))
              for col, members in attacks.items()]
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    names = {m: res.display(rows, m) for m in methods}
    fig, axes = _panels(len(panels), max_cols=4)
  else:
    panels = []
    for rule, variants in families.items():
      for col, members in attacks.items():
        by_method = _by(members, rows)
        panels.append((f"{res.display(rows, rule)}, {res.display(columns, col)}",
                       {m: by_method[m] for m in variants.values()
                        if m in by_method}))
    pres = list(next(iter(families.values())))
    colors = {m: f"C{pres.index(pre) % 10}"
              for variants in families.values() for pre, m in variants.items()}
    names = {m: res.display(rows, pre) if pre else "no pre-aggregation"
             for variants in families.values() for pre, m in variants.items()}
    fig, axes = _panels(len(panels), max_cols=len(attacks), width=3.6,
                        height=2.3)
  values = []
  for ax, (panel_title, lines) in zip(axes, panels):
    bounds = set()
    for method, runs in lines.items():
      mean, _ = _mean_std([r.result.kappa_hat for r in runs])
      mean = _moving_average(mean, smooth)
      t = np.arange(1, len(mean) + 1) + (smooth - 1 if len(mean) >= smooth else 0)
      ok = np.isfinite(mean) & (mean > 0)
      if ok.any():
        ax.plot(t[ok], mean[ok], color=colors[method], lw=0.9,
                label=names[method])
        values.append(mean[ok])
      c = runs[0].result.config
      kappa = aggregators.robustness_coefficient(
          c.aggregator, n=c.n, f=c.rule_f, aggregator_args=c.aggregator_args)
      if kappa is not None:
        ax.axhline(math.sqrt(kappa), color=colors[method], ls="--", lw=0.8,
                   label=f"{names[method]}: proven sqrt(kappa)")
        values.append(np.array([math.sqrt(kappa)]))
      if 0 < c.rule_f and 2 * c.rule_f < c.n:
        bounds.add(math.sqrt(c.rule_f / (c.n - 2 * c.rule_f)))
    for b in sorted(bounds):
      ax.axhline(b, color="k", ls=":", lw=0.9,
                 label="worst-case lower bound sqrt(f/(n-2f))")
      values.append(np.array([b]))
    ax.axhline(1.0, color="0.5", lw=0.9, label="one honest vector")
    ax.set_yscale("log")
    ax.set_title(panel_title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_xlabel("round")
    if families is not None:
      ax.label_outer()
  values.append(np.array([1.0]))
  axes[0].set_ylim(*_log_limits(values))
  for ax in axes:
    if ax.get_subplotspec().is_first_col():
      ax.set_ylabel("kappa_hat_t  (eq. 26)")
  _legend(fig, axes)
  if title:
    fig.suptitle(title, fontsize=11)
  return fig


def table_heatmap(table: res.Table, path: str, **kwargs) -> str:
  """``table_figure`` saved as a PNG at ``path``; returns ``path``."""
  return save(table_figure(table, **kwargs), path)


def table_figure(table: res.Table, *, title: str = ""):
  """A summary table as a heatmap (means annotated; worst case last).

  Args:
    table: from ``experiments.summarize``.
    title: the figure title.

  Returns:
    The matplotlib figure.
  """
  plt = pyplot()
  cols = list(table.columns)
  data = np.full((len(table.rows), len(cols) + bool(table.worst)), np.nan)
  for i, r in enumerate(table.rows):
    for j, c in enumerate(cols):
      if (r, c) in table.cells:
        data[i, j] = table.cells[(r, c)].mean
    if table.worst and r in table.worst:
      data[i, -1] = table.worst[r][1].mean
  labels = [res.display(table.column_field, c) for c in cols]
  labels += ["worst case"] if table.worst else []
  fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2.4,
                                  0.42 * len(table.rows) + 1.4))
  image = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
  _annotate(ax, data)
  ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
  ax.set_yticks(range(len(table.rows)),
                [res.display(table.row_field, r) for r in table.rows])
  if table.worst:
    ax.axvline(len(cols) - 0.5, color="white", lw=2)
  fig.colorbar(image, ax=ax, label=res.metric_text(table.metric))
  ax.set_title(title or table.title or res.metric_text(table.metric),
               fontsize=10)
  return fig


def _annotate(ax, data: np.ndarray) -> None:
  for (i, j), v in np.ndenumerate(data):
    if np.isfinite(v):
      ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
              color="black" if v > 60 else "white")


def worst_case_heatmap(tables: Sequence[res.Table], path: str, **kwargs) -> str:
  """``worst_case_figure`` saved as a PNG at ``path``; returns ``path``."""
  return save(worst_case_figure(tables, **kwargs), path)


def worst_case_figure(tables: Sequence[res.Table], *, y: str,
                      x: Optional[str] = None, title: str = ""):
  """Worst case over attacks per method, over settings ``y`` (x ``x``).

  Args:
    tables: summary tables whose groups hold ``y`` (and ``x``).
    y: the setting along the vertical axis (e.g. "f").
    x: the setting along the horizontal axis (e.g. "alpha"), or None.
    title: the figure title.

  Returns:
    The matplotlib figure.
  """
  ys = list(dict.fromkeys(t.group[y] for t in tables))
  xs = list(dict.fromkeys(t.group[x] for t in tables)) if x else [None]
  methods = list(dict.fromkeys(r for t in tables for r in t.rows))
  fig, axes = _panels(len(methods), width=0.7 * len(xs) + 1.4,
                      height=0.45 * len(ys) + 1.0,
                      max_cols=_columns(methods, tables[0].row_field))
  image = None
  for ax, method in zip(axes, methods):
    data = np.full((len(ys), len(xs)), np.nan)
    for t in tables:
      if method in t.worst:
        i = ys.index(t.group[y])
        j = xs.index(t.group[x]) if x else 0
        data[i, j] = t.worst[method][1].mean
    image = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto",
                      origin="lower")
    _annotate(ax, data)
    ax.set_title(res.display(tables[0].row_field, method), fontsize=9)
    ax.set_xticks(range(len(xs)), [res.display(x, v) for v in xs] if x else [""])
    ax.set_yticks(range(len(ys)), [res.display(y, v) for v in ys])
    ax.set_xlabel(x or "")
    ax.set_ylabel(y)
    ax.label_outer()
  if image is not None:
    fig.colorbar(image, ax=list(axes), label="worst case: " +
                 res.metric_text(tables[0].metric), shrink=0.8)
  fig.suptitle(title or "worst case over attacks", fontsize=11)
  return fig


def _file_slug(group: Dict[str, Any]) -> str:
  if not group:
    return ""
  text = "_".join(f"{k}{res.short(v)}" for k, v in group.items())
  return "_" + re.sub(r"[^A-Za-z0-9.+=-]+", "-", text)


def plot_grid(results: res.GridResults, folder: str,
              tables: Optional[Sequence[res.Table]] = None) -> List[str]:
  """All plots of a grid's results into ``folder``.

  Per group of the grid's other axes (e.g. per f and alpha):
  ``accuracy<_group>.png``, ``aggregate_error<_group>.png``,
  ``kappa<_group>.png`` and ``table<_group>.png``; over groups, when the grid varies one or two
  settings besides methods and attacks: ``worst_case_heatmap.png``.

  Returns:
    The paths written.
  """
  grid = results.grid
  tables = results.tables() if tables is None else tables
  grid_records = [r for r in results.records if r.kind == "grid"]
  baselines = [r for r in results.records if r.kind == "baseline"]
  written = []
  for table in tables:
    members = [r for r in grid_records
               if all(res.hashable(r.settings.get(k)) == v
                      for k, v in table.group.items())]
    if not members:
      continue
    slug = _file_slug(table.group)
    title = f"{grid.name}: {res.summary(grid)}" + (
        f"; {table.title}" if table.group else "")
    written.append(accuracy_curves(
        members, os.path.join(folder, f"accuracy{slug}.png"), rows=grid.rows,
        columns=grid.columns, baselines=sum(
            _group_baselines(baselines, table.group).values(), []),
        title=title))
    if any(np.isfinite(r.result.aggregate_error).any() for r in members
           if len(r.result.aggregate_error)):
      written.append(aggregate_error_curves(
          members, os.path.join(folder, f"aggregate_error{slug}.png"),
          rows=grid.rows, columns=grid.columns, title=title))
    if any(np.isfinite(r.result.kappa_hat).any() for r in members
           if len(r.result.kappa_hat)):
      written.append(kappa_curves(
          members, os.path.join(folder, f"kappa{slug}.png"),
          rows=grid.rows, columns=grid.columns, title=title))
    written.append(table_heatmap(table, os.path.join(folder, f"table{slug}.png"),
                                 title=title))
  group_fields = grid.group_fields
  if tables and tables[0].worst and 1 <= len(group_fields) <= 2:
    y = group_fields[0]
    x = group_fields[1] if len(group_fields) == 2 else None
    written.append(worst_case_heatmap(
        tables, os.path.join(folder, "worst_case_heatmap.png"), y=y, x=x,
        title=f"{grid.name}: worst case over attacks"))
  return written
