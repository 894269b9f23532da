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
import json
import os
import sys
from typing import Any, Callable, List, Optional, Sequence, Tuple

from byzjax import data as data_lib
from byzjax import sharding
from byzjax import train as train_lib
from byzjax.config import RunConfig
# The public face for grid users (the configs in experiments/ and the README
# use ``from byzjax import experiments as ex``): grids, folders, results and
# the papers' presets, re-exported from the modules that define them.
from byzjax.grid import (METRICS, Axis, Baseline, Grid, GridError, Run,  # noqa: F401
                         check, config_from_dict, describe, display, expand,
                         fingerprint, load_grid, read_mapping, summary)
from byzjax.paper_settings import *  # noqa: F401,F403
from byzjax.results import (GridResults, Record, Stat, Table, csv_text,  # noqa: F401
                            evaluation_rows, finite, format_latex,
                            format_markdown, format_stat, metric_value,
                            record_of, round_rows, summarize, table_rows,
                            write_csv)
from byzjax.store import (GRID_FILE, OUTPUT_FILES, RESULTS_DIR,  # noqa: F401
                          FolderBusyError, GridMismatchError, atomic_open,
                          atomic_write, folder_lock, load_result,
                          prepare_folder, result_path, save_result)
from byzjax.grid import plain, short


def enable_compilation_cache(path: Optional[str] = None) -> str:
  """Turns on JAX's persistent compilation cache (reruns skip XLA compiles).

  Call before the first compilation (its effect on the default ``byzjax
  run`` grid is in ``benchmarks/results/xla_cpu_notes.md``).

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


def _data_key(config: RunConfig) -> Tuple[Any, ...]:
  return (config.dataset, config.data_dir, config.test_fraction, config.split,
          config.alpha, config.n, config.f, config.byzantine_data,
          config.algorithm, config.batch_size, config.seeds, config.model,
          config.data_seed,
          json.dumps(plain(config.model_args), sort_keys=True))


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
      where = ", ".join(f"{k}={short(v)}" for k, v in run.settings.items())
      raise GridError(f"{err} [run {where or run.label}]") from None


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
  leader = sharding.is_leader()
  os.makedirs(out_dir, exist_ok=True)
  with (folder_lock(out_dir) if leader else contextlib.nullcontext()):
    if leader:
      prepare_folder(grid, out_dir, runs, overwrite=overwrite)
    keys = [(r.id, s) for r in runs for s in grid.seeds]
    done = {}
    if leader:
      done = {(r.id, s): res for r in runs for s in grid.seeds
              if (res := load_result(out_dir, r, s)) is not None}
    # Several processes (jax.distributed) train the same runs together: the
    # leader's folder decides what is left.
    saved = sharding.agree([k in done for k in keys])
    saved = {k for k, is_saved in zip(keys, saved) if is_saved}
    todo = [(r, [s for s in grid.seeds if (r.id, s) not in saved]) for r in runs]
    todo = [(r, seeds) for r, seeds in todo if seeds]
    total = sum(r.config.steps * len(seeds) for r, seeds in todo)
    n_all = len(runs) * len(grid.seeds)
    progress = progress and leader
    if progress:
      print(f"grid {grid.name}: {len(runs)} runs x {len(grid.seeds)} seed(s) = "
            f"{n_all}; {len(saved)} saved, {n_all - len(saved)} to train "
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
        # Built with every seed of the grid, so that a resumed grid checks the
        # same shards as an uninterrupted one; trains the missing seeds only.
        exp = train_lib.Experiment(run.config, dataset=datasets.get(run.config),
                                   execution=execution)
        if progress and i == 0 and exp.layout is not None:
          print(f"grid {grid.name}: {exp.layout.describe()}", file=stream,
                flush=True)

        def persist(result, run=run):
          if leader:
            save_result(out_dir, run, result)
          done[(run.id, result.seed)] = result
          if on_result is not None:
            on_result(record_of(run, result))

        exp.run(seeds=seeds, progress=bar.update if bar is not None else None,
                on_result=persist)
        del exp
    finally:
      if bar is not None:
        bar.close()
    records = [record_of(r, done[(r.id, s)]) for r in runs for s in grid.seeds
               if (r.id, s) in done]
    results = GridResults(grid, runs, records, out_dir)
    if write and leader:
      write_outputs(results, out_dir, plots=plots)
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
                tuple(r.get("overridden", ())), config_from_dict(r["config"]))
            for r in saved["runs"]]
  else:
    runs = expand(grid)
  records = [record_of(r, res) for r in runs for s in grid.seeds
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


def write_outputs(results: GridResults, out_dir: Optional[str] = None, *,
                plots: bool = True) -> List[str]:
  """Writes a grid's tidy CSVs, runs.json, tables and (optionally) plots.

  Returns:
    The paths written.
  """
  out_dir = out_dir or results.out_dir
  if out_dir is None:
    raise ValueError("no output folder: pass out_dir")
  tables = results.tables()
  written = []
  # Streamed: a large grid has millions of rounds.
  fields = results.grid.fields
  for name, rows in (("evaluations.csv", evaluation_rows(results.records, fields)),
                     ("rounds.csv", round_rows(results.records, fields))):
    path = os.path.join(out_dir, name)
    with atomic_open(path) as fh:
      write_csv(fh, rows)
    written.append(path)
  path = os.path.join(out_dir, "runs.json")
  with atomic_open(path) as fh:
    fh.write('{"grid": ' + json.dumps(finite(results.grid.to_dict()))
             + ', "runs": [')
    for i, r in enumerate(results.records):
      fh.write((",\n" if i else "\n") + json.dumps(finite({
          "run_id": r.run_id, "kind": r.kind, "label": r.label,
          "settings": plain(r.settings), "seed": r.seed,
          "result": r.result.to_dict()})))
    fh.write("\n]}\n")
  written.append(path)
  title = f"{results.grid.name}: {summary(results.grid)}"
  for name, text in (("table.md", format_markdown(tables, title=title)),
                     ("table.tex", format_latex(tables)),
                     ("table.csv", csv_text(table_rows(tables)))):
    path = os.path.join(out_dir, name)
    atomic_write(path, text)
    written.append(path)
  if plots:
    from byzjax import plots as plots_lib  # pylint: disable=g-import-not-at-top
    written += plots_lib.plot_grid(results, os.path.join(out_dir, "plots"),
                                   tables=tables)
  return written
