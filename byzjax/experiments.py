"""Grids of runs: expansion, resumable execution, tidy results and tables.

A ``Grid`` is a base ``RunConfig``, axes to vary (aggregator, attack, alpha,
f, ...) and seeds. ``run_grid`` trains every point of the grid, one
``train.Experiment`` per point with all the grid's seeds (they share one
compilation), and saves each seed's ``RunResult`` the moment it is done, as
one JSON file written atomically (temporary file, then ``os.replace``), keyed
by the run's own settings. A crash or Ctrl-C loses at most the last minutes
of the run in flight (Orbax checkpoints inside a run); running the same grid
into the same folder again skips what is saved and finishes the rest with
the same numbers as an uninterrupted run, and a grid that adds rules,
attacks or seeds trains only what is new. Many processes can fill one folder
(per-run claims, ``shard=``). A folder holding none of the grid's runs is
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
  claims/, checkpoints/   runs in progress (which process trains them, and
                     their last Orbax checkpoint); empty once all are done

References:
  Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan. "Fixing by Mixing: A
  Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023, Table 2
  (maximum accuracy, worst case over attacks).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
from typing import (Any, Callable, Dict, List, NamedTuple, Optional, Sequence,
                    Tuple)

from byzjax import data as data_lib
from byzjax import logs
from byzjax import progress as progress_lib
from byzjax import provenance
from byzjax import sharding
from byzjax import train as train_lib
from byzjax.config import RunConfig
# The public face for grid users (the configs in experiments/ and the README
# use ``from byzjax import experiments as ex``): grids, folders, results and
# the papers' presets, re-exported from the modules that define them.
from byzjax.grid import (METRICS, Axis, Baseline, Grid, GridError, Run,  # noqa: F401
                         check, config_from_dict, describe, display, expand,
                         fingerprint, load_grid, read_mapping, summary)
from byzjax.paper_settings import (CGE_FAULT_FREE, CGE_FAULT_FREE_SUM,  # noqa: F401
                                   CGE_FAULTS, CGE_FILTERS, FBM_ATTACKS,
                                   FBM_BASELINE, FBM_PRE, FBM_RULES,
                                   aggregathor_multi_krum, cge_mnist,
                                   cge_paper_rules, fixing_by_mixing_cifar10,
                                   fixing_by_mixing_krum,
                                   fixing_by_mixing_mnist, methods,
                                   rows_into_last_stage, with_stage_args)
from byzjax.results import (GridResults, Record, Stat, Table, csv_text,  # noqa: F401
                            evaluation_rows, finite, format_latex,
                            format_markdown, format_stat, metric_value,
                            record_of, round_rows, stat_of, summarize,
                            table_rows,
                            write_csv)
from byzjax.checkpoints import OrbaxCheckpoints  # noqa: F401
from byzjax.claims import claim, heartbeat, release  # noqa: F401
from byzjax.store import (GRID_FILE, OUTPUT_FILES, RESULTS_DIR,  # noqa: F401
                          FolderBusyError, GridMismatchError,
                          OutputFolderError, atomic_open, atomic_write,
                          check_output_folder, folder_lock, load_result,
                          prepare_folder, result_path, runs_from_results,
                          save_result)
from byzjax.grid import hashable, plain, short


def enable_compilation_cache(path: Optional[str] = None) -> Optional[str]:
  """Turns on JAX's persistent compilation cache (reruns skip XLA compiles).

  Call before the first compilation (its effect on the default ``byzjax
  run`` grid is in ``benchmarks/results/xla_cpu_notes.md``).

  Args:
    path: cache folder (default: $BYZJAX_CACHE_DIR or ~/.cache/byzjax/jax).

  Returns:
    The folder in use, or None when it cannot be created or written (a
    read-only home, $BYZJAX_CACHE_DIR naming a file): then one line on
    stderr says so and nothing is cached (training is unaffected).
  """
  import jax  # pylint: disable=g-import-not-at-top
  path = path or os.environ.get("BYZJAX_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "byzjax", "jax")
  try:
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
  except OSError as err:
    print(f"byzjax: warning: the compilation cache {path!r} cannot be used "
          f"({err.strerror or err}); training without it (set "
          f"BYZJAX_CACHE_DIR to a writable folder, or pass "
          f"--no-compile-cache)", file=sys.stderr, flush=True)
    return None
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


def shard_of(text: str) -> Tuple[int, int]:
  """``"I/N"`` -> (I, N), 0 <= I < N (a ``--shard``)."""
  try:
    index, count = (int(v) for v in str(text).split("/"))
  except ValueError:
    raise GridError(f"shard must be I/N with integers 0 <= I < N, got "
                    f"{text!r}") from None
  if not 0 <= index < count:
    raise GridError(f"shard must be I/N with 0 <= I < N, got {text!r}")
  return index, count


def run_grid(grid: Grid, out_dir: str, *, overwrite: bool = False,
             progress: bool = True, on_result: Optional[Callable[[Record], None]] = None,
             write: bool = True, plots: bool = True,
             stream: Any = None,
             execution: Optional[train_lib.Execution] = None,
             shard: Optional[Tuple[int, int]] = None,
             checkpoint_seconds: Optional[float] = 300.0,
             log: Sequence[str] = ()) -> GridResults:
  """Trains every run of ``grid`` not yet saved in ``out_dir``; resumable.

  Each seed's result is saved the moment it is done; a rerun after a crash
  or Ctrl-C trains only what is missing, with the same numbers as an
  uninterrupted run, and a run killed mid-way continues from its last
  checkpoint. Many processes (one per GPU, SLURM array tasks, hosts on a
  shared filesystem) can fill one folder together: each (run, seed) is
  claimed by one process before it trains (``claims.claim``), so none is
  trained twice, and ``shard`` splits the grid deterministically between
  them. A folder grows with its grid: adding rules, attacks or seeds trains
  only what is new (``store.prepare_folder``).

  Args:
    grid: the grid.
    out_dir: the output folder (created if needed).
    overwrite: if the folder holds another experiment's results, delete them
      (otherwise refuse with ``GridMismatchError``).
    progress: show a progress bar over the rounds of all runs to do, with an
      ETA (on ``stream``).
    on_result: called with each new ``Record`` after it is saved.
    write: write the CSVs, JSON and tables at the end (from everything saved
      in the folder, so the last process to finish writes them complete).
    plots: also write PNG plots.
    stream: where the progress bar and messages go (default stderr).
    execution: how to compute the runs (``train.Execution``); not part of
      the grid's fingerprint, so a grid resumes under any execution.
    shard: (I, N): train only the (run, seed) pairs whose position in the
      grid's order is I modulo N.
    checkpoint_seconds: save a run in progress every this many seconds
      (Orbax, under ``checkpoints/``; removed when the run is done); None or
      0: no checkpoints inside a run.
    log: "tensorboard" and/or "wandb": each run's curves as they come
      (``byzjax.logs``), TensorBoard's under ``logs/<run id>/seed-<seed>``.

  Returns:
    The ``GridResults`` (what is saved so far).

  Raises:
    GridError: an invalid run (before anything is trained).
    GridMismatchError: see ``overwrite`` (a ``GridError``).
    data.DatasetNotFoundError: a dataset is not on disk.
  """
  stream = sys.stderr if stream is None else stream
  datasets = _DatasetCache()
  plan = _plan(grid, out_dir, overwrite=overwrite, execution=execution,
               shard=shard, checkpoint_seconds=checkpoint_seconds, log=log,
               progress=progress, stream=stream, datasets=datasets)
  leader = sharding.is_leader()
  if leader and plan.todo:
    print(f"grid {grid.name}: {sharding.describe(plan.layout)}", file=stream,
          flush=True)
  bar = (progress_lib.bar(plan.total, grid.name, stream=stream)
         if progress and leader and plan.todo else None)
  trainer = _Trainer(grid, out_dir, plan.execution, bar, stream, leader,
                     checkpoint_seconds, plan.log, on_result, datasets)
  try:
    for i, (run, seeds) in enumerate(plan.todo):
      trainer.train(run, seeds, f"run {i + 1}/{len(plan.todo)}")
  finally:
    if bar is not None:
      bar.close()
  results = load_grid_results(out_dir, grid) if leader else GridResults(
      grid, plan.runs, [], out_dir)
  if write and leader and results.records:
    write_outputs(results, out_dir, plots=plots)
  return results


class _Plan(NamedTuple):
  """What a process of a grid trains, once the folder is ready.

  Attributes:
    runs: every run of the grid.
    todo: (run, seeds) this process trains, in grid order.
    total: the rounds of ``todo``.
    layout: the devices' mesh (None: one device).
    execution: how the runs are computed.
    log: the checked log kinds.
  """

  runs: List[Run]
  todo: List[Tuple[Run, List[int]]]
  total: int
  layout: Optional[sharding.Layout]
  execution: train_lib.Execution
  log: Tuple[str, ...]


def _plan(grid: Grid, out_dir: str, *, overwrite: bool,
          execution: Optional[train_lib.Execution],
          shard: Optional[Tuple[int, int]],
          checkpoint_seconds: Optional[float], log: Sequence[str],
          progress: bool, stream: Any, datasets: "_DatasetCache") -> _Plan:
  """Checks the grid and the devices, prepares the folder (removed again if
  it was created and something is refused) and says what is left to train.
  """
  # The source commit is read now, while the checkout holds the code this
  # process imported (read at the first save, it once named later edits).
  provenance.versions()
  runs = check(grid)
  try:
    log = tuple(logs.check(log))
    # The devices and mesh asked for exist (before the folder is touched).
    execution = train_lib.Execution() if execution is None else execution
    layout = sharding.make_layout(execution.device_list(), runs=execution.runs,
                                  num_seeds=len(grid.seeds))
  except ValueError as err:
    raise GridError(str(err)) from None
  if checkpoint_seconds is not None and not checkpoint_seconds >= 0:
    raise GridError(f"checkpoint_seconds={checkpoint_seconds} must be >= 0 "
                    f"(0 or None: no checkpoints)")
  leader = sharding.is_leader()
  created = check_output_folder(out_dir)
  try:
    if leader:
      with folder_lock(out_dir):
        report = prepare_folder(grid, out_dir, runs, overwrite=overwrite)
      for line in report.messages():
        print(f"grid {grid.name}: {line}", file=stream, flush=True)
    keys = [(r, s) for r in runs for s in grid.seeds]
    mine = [k for i, k in enumerate(keys)
            if shard is None or i % shard[1] == shard[0]]
    # What prepare_folder found saved (read once); a result another process
    # saves meanwhile is caught when its claim is taken. Several processes
    # of one jax.distributed job train together: the leader's folder decides.
    saved = set(report.reused) if leader else set()
    flags = sharding.agree([(r.id, s) in saved for r, s in mine])
    todo = [(r, s) for (r, s), is_saved in zip(mine, flags) if not is_saved]
    total = sum(r.config.steps for r, _ in todo)
    if progress and leader:
      where = "" if shard is None else f" (shard {shard[0]}/{shard[1]}: {len(mine)})"
      print(f"grid {grid.name}: {len(runs)} runs x {len(grid.seeds)} seed(s) = "
            f"{len(keys)}{where}; {len(mine) - len(todo)} saved, {len(todo)} to "
            f"train ({total} rounds); results in {out_dir}", file=stream,
            flush=True)
    by_run: Dict[str, List[int]] = {}
    for r, s in todo:
      by_run.setdefault(r.id, []).append(s)
    todo_runs = [(r, by_run[r.id]) for r in runs if r.id in by_run]
    if todo_runs:
      preflight([r for r, _ in todo_runs], datasets)
  except BaseException:
    if created:  # refused before anything was trained: leave no folder
      shutil.rmtree(out_dir, ignore_errors=True)
    raise
  return _Plan(runs, todo_runs, total, layout, execution, log)


class _Trainer:
  """Trains one run's seeds of a grid at a time: claims them, builds the
  run, saves each seed's result as it comes, checkpoints, logs, reports."""

  def __init__(self, grid: Grid, out_dir: str, execution: train_lib.Execution,
               bar: Any, stream: Any, leader: bool,
               checkpoint_seconds: Optional[float], log: Tuple[str, ...],
               on_result: Optional[Callable[[Record], None]],
               datasets: "_DatasetCache"):
    self.grid, self.out_dir, self.execution = grid, out_dir, execution
    self.bar, self.stream, self.leader = bar, stream, leader
    self.checkpoint_seconds, self.log = checkpoint_seconds, log
    self.on_result, self.datasets = on_result, datasets

  def say(self, text: str) -> None:
    """A line of its own, never glued onto the progress bar."""
    line = f"grid {self.grid.name}: {text}"
    if self.bar is not None:
      self.bar.write(line, file=self.stream)
    else:
      print(line, file=self.stream, flush=True)

  def claim(self, run: Run, seeds: Sequence[int]) -> Dict[int, Any]:
    """{seed: claim} of the seeds no other process trains or has saved."""
    claims = {}
    for s in seeds:
      owned = claim(self.out_dir, run.id, s)
      if owned is None:
        continue
      # Another process may have saved it since we looked, then released.
      if load_result(self.out_dir, run, s) is not None:
        release(owned)
        continue
      claims[s] = owned
    if self.bar is not None and len(claims) < len(seeds):
      self.bar.update(run.config.steps * (len(seeds) - len(claims)))
    return claims

  def checkpoints(self, run: Run) -> Optional[OrbaxCheckpoints]:
    """The run's checkpoints (None: none asked); a resume is announced."""
    if not self.checkpoint_seconds:
      return None
    lengths = train_lib.chunk_lengths(run.config.steps, run.config.eval_every)

    def resumed(seeds, chunks):
      if self.leader:
        self.say(f"{_run_text(run)}, seed(s) {', '.join(map(str, seeds))}: "
                 f"resumed from the checkpoint at round {sum(lengths[:chunks])}")

    return OrbaxCheckpoints(self.out_dir, run.id, self.checkpoint_seconds,
                            on_restore=resumed)

  def train(self, run: Run, seeds: List[int], where: str) -> None:
    """Trains ``seeds`` of ``run`` (those still unclaimed, in one job of
    many processes all of them), saving each result as soon as it is done."""
    claims = {}
    if jax_process_count() == 1:  # one job: claims keep processes apart
      claims = self.claim(run, seeds)
      seeds = [s for s in seeds if s in claims]
      if not seeds:
        return  # another process trains them
    if self.bar is not None:
      self.bar.set_postfix_str(f"{where}: {_run_text(run)}", refresh=True)
    try:
      # Built with every seed of the grid, so that a resumed grid checks
      # the same shards as an uninterrupted one; trains the missing seeds.
      exp = train_lib.Experiment(run.config, dataset=self.datasets.get(run.config),
                                 execution=self.execution)

      def persist(result):
        if self.leader:
          save_result(self.out_dir, run, result)
        release(claims.pop(result.seed, None))
        if self.on_result is not None:
          self.on_result(record_of(run, result))

      def advance(rounds):
        for owned in claims.values():
          heartbeat(owned)
        if self.bar is not None:
          self.bar.update(rounds)

      logger = logs.make(
          self.log, log_dir=os.path.join(self.out_dir, "logs", run.id),
          name=f"{self.grid.name}/{run.id}", config=run.config.to_dict()
      ) if self.log and self.leader else None
      exp.run(seeds=seeds, progress=advance, on_result=persist,
              checkpoints=self.checkpoints(run), log=logger)
    finally:
      for owned in claims.values():
        release(owned)


def jax_process_count() -> int:
  """How many processes share this job (``jax.distributed``)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_count()


def load_grid_results(out_dir: str, grid: Optional[Grid] = None, *,
                      seeds: Optional[Sequence[int]] = None) -> GridResults:
  """The saved results in ``out_dir`` (complete or not).

  Args:
    out_dir: a folder written by ``run_grid``.
    grid: the grid (default: rebuilt from grid.json, or from the result files
      when grid.json is lost; ``adjust`` is then not re-applied, the saved
      run configurations are used as they are).
    seeds: only these of the grid's seeds (default: all of them), e.g. the
      seeds that are complete while another is being trained; the returned
      grid has these seeds.

  Returns:
    ``GridResults`` with the records found.

  Raises:
    GridError: ``out_dir`` holds no grid written by ``run_grid``, or a seed
      that is not one of its grid's.
  """
  path = os.path.join(out_dir, GRID_FILE)
  saved = None
  try:
    with open(path, encoding="utf-8") as fh:
      saved = json.load(fh)
  except (OSError, ValueError):
    saved = None
  if saved is not None and (not isinstance(saved, dict) or not {
      "fingerprint", "grid", "runs"} <= set(saved)):
    raise GridError(f"{path} was not written by byzjax (no fingerprint, grid "
                    f"and runs): {out_dir} is not a byzjax grid folder")
  if grid is not None:
    runs = expand(grid)
  elif saved is not None:
    grid = Grid.from_dict({k: v for k, v in saved["grid"].items()
                           if k != "adjust"})
    runs = [Run(r["id"], r["kind"], r["label"], r["settings"],
                tuple(r.get("overridden", ())), config_from_dict(r["config"]))
            for r in saved["runs"]]
  else:
    runs = runs_from_results(out_dir)
    if not runs:
      raise GridError(f"{out_dir} is not a byzjax grid folder (no grid.json "
                      f"and no result files)")
    fields = sorted({k for r in runs for k in r.settings}) or ["aggregator"]
    grid = Grid(os.path.basename(os.path.abspath(out_dir)) or "grid",
                runs[0].config, axes={f: sorted({hashable(r.settings.get(f))
                                                 for r in runs}, key=str)
                                      for f in fields},
                seeds=sorted({s for r in runs for s in r.config.seeds}))
  if seeds is not None:
    grid = grid.replace(seeds=_chosen_seeds(grid, seeds, out_dir))
  records = [record_of(r, res) for r in runs for s in grid.seeds
             if (res := load_result(out_dir, r, s)) is not None]
  return GridResults(grid, runs, records, out_dir)


def _chosen_seeds(grid: Grid, seeds: Sequence[int], out_dir: str
                  ) -> Tuple[int, ...]:
  chosen = tuple(dict.fromkeys(int(s) for s in seeds))
  unknown = [s for s in chosen if s not in grid.seeds]
  if not chosen or unknown:
    raise GridError(
        f"seeds {' '.join(map(str, unknown or chosen))}: {out_dir} holds grid "
        f"{grid.name!r} with seeds {' '.join(map(str, grid.seeds))}; choose "
        f"at least one of those")
  return chosen


def _run_text(run: Run) -> str:
  if run.kind == "baseline":
    return run.label
  return ", ".join(display(k, v) for k, v in run.settings.items()) or run.label


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


def report_main(report: Callable[..., str], doc: str, out: str,
                argv: Optional[Sequence[str]] = None, **folders: str) -> int:
  """The command line of an analysis script kept beside a grid's results.

  One option ``--NAME DIR`` per keyword of ``folders`` (its default the
  value; passed to ``report`` positionally, in keyword order), ``--seeds S
  [S ...]`` (passed as ``seeds``: report only these seeds; default None, all)
  and ``--out FILE`` (default ``out``; empty: print only). Prints
  ``report``'s Markdown and writes it to ``--out`` atomically.

  Args:
    report: folders, ``seeds=`` -> Markdown.
    doc: the script's docstring (its first line is the description).
    out: the default output file.
    argv: the arguments (default: the command line).
    **folders: option name (``grid_attacks`` gives ``--grid-attacks``) ->
      default folder.

  Returns:
    0, the exit status.
  """
  p = argparse.ArgumentParser(description=doc.split("\n")[0])
  for name, default in folders.items():
    p.add_argument("--" + name.replace("_", "-"), default=default)
  p.add_argument("--seeds", type=int, nargs="+", help=(
      "report only these seeds of the grid (e.g. the complete ones while "
      "another is being trained); default: all"))
  p.add_argument("--out", default=out)
  args = p.parse_args(argv)
  text = report(*(getattr(args, name) for name in folders), seeds=args.seeds)
  print(text)
  if args.out:
    atomic_write(args.out, text)
  return 0
