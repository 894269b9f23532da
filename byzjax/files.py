"""Files written whole or not at all, with the permissions ``open`` gives.

A reader (or a resumed grid) sees the old file or the new one, never a
partial one: the text goes to a temporary file in the same folder, which
replaces the target (``os.replace``) only when complete; on any exception,
a full disk included, the temporary file is removed. ``tempfile.mkstemp``
creates files 0600; they are given the mode the user's umask gives a new
file (colleagues on a shared server can read the results).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Iterator


def umask() -> int:
  """The process's umask (read without changing it)."""
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[IO]:
  """A file that replaces ``path`` only when complete.

  Args:
    path: the file to write.
    mode: "w" (text, UTF-8, no newline translation) or "wb".

  Yields:
    The open temporary file.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-",
                             suffix=os.path.basename(path))
  try:
    os.chmod(tmp, 0o666 & ~umask())
    text = dict(encoding="utf-8", newline="") if mode == "w" else {}
    with os.fdopen(fd, mode, **text) as fh:
      yield fh
      fh.flush()
      os.fsync(fh.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
