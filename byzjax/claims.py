"""Claims: each (run, seed) of a grid folder trained by exactly one process.

Processes that fill one folder together (one per GPU, the tasks of a SLURM
array, hosts on a shared filesystem) each claim a (run, seed) before training
it: a claim file created atomically, its modification time the owner's
heartbeat. A claim whose owner died (same host: its pid is gone; another
host: no heartbeat for ``stale_after`` seconds) is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Any, Dict, Mapping, NamedTuple, Optional

from byzjax.store import CLAIMS_DIR, folder_lock


class Claim(NamedTuple):
  """A process's exclusive claim on one run and seed of a folder.

  Attributes:
    path: the claim file (``claims/RUN_ID/seed-S.claim``), holding the
      owner's host and pid; its modification time is the owner's heartbeat.
  """

  path: str


def _owner() -> Dict[str, Any]:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "started": time.time()}


def _alive(info: Mapping[str, Any], mtime: float, stale_after: float) -> bool:
  """Whether a claim's owner still works on it."""
  if info.get("host") == socket.gethostname():
    try:
      os.kill(int(info.get("pid", -1)), 0)
    except ProcessLookupError:
      return False
    except (PermissionError, ValueError, OverflowError):
      return True
    return True
  return time.time() - mtime < stale_after  # another host: its heartbeat


def claim(out_dir: str, run_id: str, seed: int, *,
          stale_after: float = 1800.0) -> Optional[Claim]:
  """Claims (run, seed) in ``out_dir`` for this process, or None if taken.

  The claim is a file created atomically (``O_CREAT | O_EXCL``). A claim of a
  dead process (same host: its pid is gone; another host: no heartbeat for
  ``stale_after`` seconds) is reclaimed, under a lock so that two processes
  never both take it over.

  Args:
    out_dir: the grid's output folder.
    run_id: the run.
    seed: the seed.
    stale_after: seconds without a heartbeat after which another host's
      claim is taken over.

  Returns:
    The ``Claim``, or None when a live process holds it.
  """
  folder = os.path.join(out_dir, CLAIMS_DIR, run_id)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f"seed-{seed}.claim")
  for attempt in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
      if attempt or not _reclaim_if_stale(out_dir, path, stale_after):
        return None
      continue
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
      json.dump(_owner(), fh)
    return Claim(path)
  return None


def _reclaim_if_stale(out_dir: str, path: str, stale_after: float) -> bool:
  """Removes ``path`` if its owner is gone; True if it was removed."""
  with folder_lock(out_dir, name=".claims-lock", wait=True):
    try:
      with open(path, encoding="utf-8") as fh:
        info = json.load(fh)
      mtime = os.path.getmtime(path)
    except FileNotFoundError:
      return True  # released meanwhile
    except (OSError, ValueError):
      info, mtime = {}, 0.0  # half-written by a process that died
    if _alive(info, mtime, stale_after):
      return False
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
    return True


def heartbeat(owned: Optional[Claim]) -> None:
  """Tells other hosts this claim's owner is still at work."""
  if owned is not None:
    with contextlib.suppress(OSError):
      os.utime(owned.path)


def release(owned: Optional[Claim]) -> None:
  """Gives a claim up (after its result is saved, or on failure)."""
  if owned is not None:
    with contextlib.suppress(OSError):
      os.remove(owned.path)


