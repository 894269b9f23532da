"""A grid's output folder: its definition, one result file per run and seed.

Every file is written atomically (a temporary file, then ``os.replace``), so a
reader or a resumed grid sees the old file or the new one, never a partial
one. ``prepare_folder`` creates the folder for a grid or checks that it holds
the same grid (``grid.json`` keeps its fingerprint); ``save_result`` /
``load_result`` keep each seed's ``RunResult``; ``folder_lock`` keeps a
second process out.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from typing import (Any, Callable, Collection, Dict, Iterator, List, Mapping,
                    NamedTuple, Optional, Sequence, Tuple)

from byzjax.files import atomic_open
from byzjax.provenance import (environment, environment_text, source_text,
                               versions)
from byzjax.grid import (FORMAT_VERSION, Grid, GridError, Run,
                         config_from_dict, fingerprint, plain, run_digest)
from byzjax.train import RunResult

GRID_FILE = "grid.json"
RESULTS_DIR = "results"
CLAIMS_DIR = "claims"
CHECKPOINTS_DIR = "checkpoints"
# Files a finished grid writes next to grid.json and results/.
OUTPUT_FILES = ("evaluations.csv", "rounds.csv", "runs.json", "table.md",
                "table.tex", "table.csv")


class GridMismatchError(GridError):
  """The output folder holds results of a different grid."""


class OutputFolderError(GridError):
  """The output folder cannot be created or written (named, with why)."""


def check_output_folder(out_dir: str) -> bool:
  """Creates ``out_dir`` if needed and checks that files can be written in it.

  Run before any long work, so that a folder under a file, without write
  permission, on a read-only or full filesystem fails at once.

  Returns:
    Whether the folder was created by this call.

  Raises:
    OutputFolderError: naming the folder and the reason.
  """
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise OutputFolderError(f"output folder {out_dir!r} is a file; pass a "
                            f"folder (--out DIR, out_dir=...)")
  created = not os.path.exists(out_dir)
  try:
    os.makedirs(out_dir, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=out_dir, prefix=".write-test-")
    try:
      os.write(fd, b"byzjax")
      os.fsync(fd)
    finally:
      os.close(fd)
      os.unlink(probe)
  except OSError as err:
    if created:
      shutil.rmtree(out_dir, ignore_errors=True)
    reason = err.strerror or type(err).__name__
    if isinstance(err, (NotADirectoryError, FileExistsError)):
      reason = "a part of the path is a file, not a folder"
    raise OutputFolderError(
        f"cannot write into output folder {out_dir!r} ({reason}); pass a "
        f"folder you can write to (--out DIR, out_dir=...)") from None
  return created


class FolderBusyError(RuntimeError):
  """Another process is writing to the output folder."""


def atomic_write(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` atomically (see ``atomic_open``)."""
  with atomic_open(path) as fh:
    fh.write(text)


@contextlib.contextmanager
def folder_lock(out_dir: str, *, name: str = ".lock",
                wait: bool = True) -> Iterator[None]:
  """An exclusive lock on ``out_dir`` for a short critical section.

  Processes sharing a folder take it in turn (``wait``) to check and update
  grid.json or to take over a stale claim; training holds per-run claims,
  not this lock. With ``wait=False`` a held lock raises ``FolderBusyError``.
  """
  try:
    import fcntl  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover - not POSIX
    yield
    return
  path = os.path.join(out_dir, name)
  with open(path, "a+", encoding="utf-8") as fh:
    try:
      fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
      fh.seek(0)
      holder = fh.read().strip() or "?"
      raise FolderBusyError(
          f"another byzjax process (pid {holder}) holds {path}; wait for it or "
          f"use another output folder") from None
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
  """Saves one seed's result atomically; returns the file path.

  The record keeps, beside the result, the ``environment()`` of the process
  that saved it: float rounding on XLA:CPU depends on the number of cores the
  process may use, so results are bitwise comparable only within one
  environment (a run resumed from a checkpoint records the one that ended it).
  """
  path = result_path(out_dir, run.id, result.seed)
  record = {"run_id": run.id, "kind": run.kind, "label": run.label,
            "settings": plain(run.settings), "result": result.to_dict(),
            "environment": environment()}
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


class FolderReport(NamedTuple):
  """What ``prepare_folder`` found in an output folder.

  Attributes:
    reused: (run id, seed) of the saved results this grid reuses.
    other: saved results of runs that are not in this grid (kept on disk).
    damaged: result files that could not be read (moved aside, retrained).
    rebuilt: grid.json was missing or damaged and was written anew.
  """

  reused: List[Tuple[str, int]]
  other: List[Tuple[str, int]]
  damaged: List[str]
  rebuilt: bool
  renamed: int = 0

  def messages(self) -> List[str]:
    """One line per thing a user should know."""
    out = []
    if self.rebuilt:
      out.append(f"grid.json was missing or damaged: rebuilt ({len(self.reused)}"
                 f" saved result(s) match this grid)")
    for path in self.damaged:
      out.append(f"damaged result file {path}: moved aside, the run is "
                 f"trained again")
    if self.renamed:
      out.append(f"{self.renamed} result file(s) saved under an older run id "
                 f"(it included the grid's seeds) moved to their run's id")
    if self.other:
      out.append(f"{len(self.other)} saved result(s) belong to runs that are "
                 f"not in this grid; kept, not reported")
    return out


def _saved_records(out_dir: str) -> Tuple[Dict[Tuple[str, int], Tuple[str, Dict[str, Any]]],
                                        List[str]]:
  """Readable result files as {(run id, seed): (path, record)}, and the
  damaged paths (each file read once)."""
  found, damaged = {}, []
  root = os.path.join(out_dir, RESULTS_DIR)
  if not os.path.isdir(root):
    return found, damaged
  for run_id in sorted(os.listdir(root)):
    folder = os.path.join(root, run_id)
    if not os.path.isdir(folder):
      continue
    for name in sorted(os.listdir(folder)):
      if not (name.startswith("seed-") and name.endswith(".json")):
        continue
      path = os.path.join(folder, name)
      try:
        with open(path, encoding="utf-8") as fh:
          record = json.load(fh)
        seed = int(record["result"]["seed"])
        RunResult.from_dict(record["result"])
      except (OSError, ValueError, KeyError, TypeError):
        damaged.append(path)
        continue
      found[(run_id, seed)] = (path, record)
  return found, damaged


def saved_keys(out_dir: str) -> Tuple[Dict[Tuple[str, int], str], List[str]]:
  """Readable result files as {(run id, seed): path}, and the damaged paths."""
  found, damaged = _saved_records(out_dir)
  return {key: path for key, (path, _) in found.items()}, damaged


def execution_text(execution: Optional[Mapping[str, Any]]) -> str:
  """One line for a ``RunResult.execution``: how seeds and workers were
  computed, and on what mesh."""
  if not execution:
    return "execution not recorded (saved before byzjax kept it)"
  batch = execution.get("batch", 1)
  seeds = ("seeds one at a time" if execution.get("seed_batching") != "vmap"
           else f"seeds vectorized, {batch} per program")
  mesh = execution.get("mesh")
  where = ("one device" if not mesh else
           f"mesh runs={mesh['runs']} x workers={mesh['workers']}")
  return f"{seeds}, workers by {execution.get('per_worker', '?')}, {where}"


def _record_environment(record: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
  return record.get("environment")


def _record_execution(record: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
  return record["result"].get("execution")


def saved_counts(out_dir: str,
                 describe: Sequence[Callable[[Mapping[str, Any]], str]],
                 seeds: Optional[Collection[int]] = None
                ) -> List[Dict[str, int]]:
  """For each ``describe`` (a saved record -> a line), how many of the
  folder's saved results (of ``seeds``; default all) each line describes,
  most first (one read of each file for all of them)."""
  counts: List[Dict[str, int]] = [{} for _ in describe]
  for (_, seed), (_, record) in _saved_records(out_dir)[0].items():
    if seeds is not None and seed not in seeds:
      continue
    for fn, table in zip(describe, counts):
      text = fn(record)
      table[text] = table.get(text, 0) + 1
  return [dict(sorted(t.items(), key=lambda kv: -kv[1])) for t in counts]


def saved_environments(
    out_dir: str, describe: Callable[[Optional[Mapping[str, Any]]], str] = (
        environment_text)) -> Dict[str, int]:
  """How many of the folder's saved results each environment trained.

  More than one entry means the results are not all bitwise comparable
  (``environment()`` says why); the counts come from the result files.
  ``describe`` names an environment (``source_text``: the byzjax source).
  """
  return saved_counts(out_dir, [lambda r: describe(_record_environment(r))])[0]


def report_environments(out_dir: str,
                        seeds: Optional[Collection[int]] = None) -> List[str]:
  """The lines ``byzjax report`` prints about where and how the folder's
  results (of ``seeds``; default all) were computed: environments, byzjax
  sources and executions, with a warning first when the results do not all
  share one (their float rounding then differs)."""
  envs, sources, executions = saved_counts(out_dir, [
      lambda r: environment_text(_record_environment(r)),
      lambda r: source_text(_record_environment(r)),
      lambda r: execution_text(_record_execution(r))], seeds)
  lines = []
  if len(envs) > 1 or len(executions) > 1:
    lines.append("trained in more than one environment or execution (float "
                 "rounding differs between them):")
  for table in (envs, sources, executions):
    lines += [f"  {count} result(s): {text}" for text, count in table.items()]
  return lines


def _read_grid_file(path: str) -> Optional[Dict[str, Any]]:
  """grid.json's content; None when missing or damaged; raises when foreign."""
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as fh:
      saved = json.load(fh)
  except (OSError, ValueError):
    return None
  if not isinstance(saved, dict) or "fingerprint" not in saved:
    raise GridMismatchError(f"{path} was not written by byzjax; use another "
                            f"output folder")
  return saved


def _grid_file(grid: Grid, runs: Sequence[Run]) -> str:
  return json.dumps({
      "fingerprint": fingerprint(grid, runs), "format": FORMAT_VERSION,
      "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
      "versions": versions(), "grid": grid.to_dict(),
      "runs": [{"id": r.id, "kind": r.kind, "label": r.label,
                "settings": plain(r.settings), "overridden": list(r.overridden),
                "config": plain(r.config.to_dict())} for r in runs],
  }, indent=1)


def prepare_folder(grid: Grid, out_dir: str, runs: Sequence[Run], *,
                   overwrite: bool = False) -> FolderReport:
  """Creates ``out_dir`` for ``grid``, or takes it over for a grid that grows.

  Results are keyed by their run's id, which ends with a digest of the run's
  configuration: a grid that adds rules, attacks or seeds reuses every saved
  result it still contains and trains only what is new. A grid none of whose
  runs is saved here, while the folder holds results, is refused (a changed
  setting would otherwise fill the folder with a second experiment), with
  what changed and a way forward. A missing or damaged grid.json is rebuilt;
  a damaged result file is moved aside and its run trained again.

  Args:
    grid: the grid.
    out_dir: the output folder.
    runs: ``expand(grid)``.
    overwrite: delete the saved results instead of refusing.

  Returns:
    A ``FolderReport``.

  Raises:
    GridMismatchError: results of another experiment, or of an older byzjax
      result format, and ``overwrite`` is False.
  """
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, GRID_FILE)
  saved = _read_grid_file(path)
  keys, damaged = saved_keys(out_dir)
  for bad in damaged:
    os.replace(bad, bad + ".damaged")
  renamed = _rename_older_ids(out_dir, keys, {r.id for r in runs})
  if renamed:
    keys, _ = saved_keys(out_dir)
  wanted = {(r.id, s) for r in runs for s in grid.seeds}
  reused = sorted(k for k in keys if k in wanted)
  other = sorted(k for k in keys if k not in wanted)
  old_format = saved is not None and saved.get("format") != FORMAT_VERSION
  refuse = bool(keys) and (old_format or not reused)
  if refuse and not overwrite:
    changes = _diff((saved or {}).get("grid", {}), grid.to_dict())
    if old_format:
      changes.insert(0, f"written by an older byzjax (result format "
                        f"{saved.get('format')} -> {FORMAT_VERSION}: the "
                        f"protocol of some attacks changed)")
    what = "; ".join(changes[:6]) + ("; ..." if len(changes) > 6 else "")
    what = what or "run settings changed"
    raise GridMismatchError(
        f"{out_dir} holds {len(keys)} result file(s) of a different "
        f"experiment, none of them a run of this grid ({what}). Write into "
        f"another output folder (--out NEW_DIR, or out_dir=...), or pass "
        f"--overwrite (overwrite=True) to delete them")
  if refuse:  # overwrite
    shutil.rmtree(os.path.join(out_dir, RESULTS_DIR), ignore_errors=True)
    shutil.rmtree(os.path.join(out_dir, CHECKPOINTS_DIR), ignore_errors=True)
    for name in OUTPUT_FILES:
      with contextlib.suppress(OSError):
        os.remove(os.path.join(out_dir, name))
    shutil.rmtree(os.path.join(out_dir, "plots"), ignore_errors=True)
    reused, other = [], []
  rebuilt = saved is None and bool(keys) and not refuse
  if saved is None or saved.get("fingerprint") != fingerprint(grid, runs):
    atomic_write(path, _grid_file(grid, runs))
  return FolderReport(reused, other, [os.path.relpath(d, out_dir)
                                      for d in damaged], rebuilt, renamed)


def _rename_older_ids(out_dir: str, keys: Mapping[Tuple[str, int], str],
                      ids: Any) -> int:
  """Moves results saved under a run id whose digest included the grid's
  seeds (byzjax before the ids left them out) to the run's id; returns how
  many were moved."""
  moved = 0
  for (run_id, seed), path in sorted(keys.items()):
    if run_id in ids or "-" not in run_id:
      continue
    try:
      with open(path, encoding="utf-8") as fh:
        config = config_from_dict(json.load(fh)["result"]["config"])
    except (OSError, ValueError, KeyError, TypeError):
      continue
    new_id = f"{run_id.rsplit('-', 1)[0]}-{run_digest(config)}"
    target = result_path(out_dir, new_id, seed)
    if new_id == run_id or new_id not in ids or os.path.exists(target):
      continue
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(path, target)
    with contextlib.suppress(OSError):
      os.rmdir(os.path.dirname(path))
    moved += 1
  return moved


def runs_from_results(out_dir: str) -> List[Run]:
  """The runs of a folder's result files (each carries its run and config),
  for a folder whose grid.json is lost."""
  keys, _ = _saved_records(out_dir)
  runs = {}
  for (run_id, _), (_, record) in keys.items():
    if run_id in runs:
      continue
    config = config_from_dict(record["result"]["config"])
    runs[run_id] = Run(run_id, record.get("kind", "grid"),
                       record.get("label", run_id), record.get("settings", {}),
                       (), config.replace(seeds=tuple(sorted(
                           s for (i, s) in keys if i == run_id))))
  return list(runs.values())
