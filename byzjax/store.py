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
import io
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from byzjax.grid import FORMAT_VERSION, Grid, GridError, Run, fingerprint, plain
from byzjax.train import RunResult

GRID_FILE = "grid.json"
RESULTS_DIR = "results"
# Files a finished grid writes next to grid.json and results/.
OUTPUT_FILES = ("evaluations.csv", "rounds.csv", "runs.json", "table.md",
                "table.tex", "table.csv")


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
def folder_lock(out_dir: str) -> Iterator[None]:
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
            "settings": plain(run.settings), "result": result.to_dict()}
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
    for name in OUTPUT_FILES:
      with contextlib.suppress(OSError):
        os.remove(os.path.join(out_dir, name))
    shutil.rmtree(os.path.join(out_dir, "plots"), ignore_errors=True)
  if saved is None or saved.get("fingerprint") != digest:
    atomic_write(path, json.dumps({
        "fingerprint": digest, "format": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": versions(), "grid": grid.to_dict(),
        "runs": [{"id": r.id, "kind": r.kind, "label": r.label,
                  "settings": plain(r.settings),
                  "overridden": list(r.overridden),
                  "config": plain(r.config.to_dict())} for r in runs],
    }, indent=1))


def versions() -> Dict[str, str]:
  import jax  # pylint: disable=g-import-not-at-top
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  out = {"python": sys.version.split()[0], "jax": jax.__version__}
  with contextlib.suppress(metadata.PackageNotFoundError):
    out["byzjax"] = metadata.version("byzjax")
  return out
