"""Progress bars (tqdm): in a terminal, in a notebook, or none.

A notebook gets tqdm's widget only where ipywidgets is installed, and
tqdm's text bar otherwise (``tqdm.auto`` would warn "IProgress not found").
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Tuple, Union

Progress = Union[None, bool, Callable[[int], None]]


def in_notebook() -> bool:
  """Running inside a Jupyter (IPython kernel) session."""
  shell = sys.modules.get("IPython")
  if shell is None or "ipykernel" not in sys.modules:
    return False
  ipython = shell.get_ipython() if hasattr(shell, "get_ipython") else None
  return ipython is not None and hasattr(ipython, "kernel")


def interactive(stream: Any = None) -> bool:
  """A person is watching: ``stream`` (default stderr) is a terminal, or a
  notebook runs the code."""
  stream = sys.stderr if stream is None else stream
  isatty = getattr(stream, "isatty", None)
  return bool(isatty and isatty()) or in_notebook()


def bar(total: int, desc: str, *, stream: Any = None, unit: str = "round"):
  """A tqdm bar over ``total`` rounds; the rate and ETA are averaged over the
  whole run (``smoothing=0``: compilation pauses are part of the estimate)."""
  tqdm = None
  if in_notebook():
    try:
      import ipywidgets  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
      from tqdm.notebook import tqdm  # pylint: disable=g-import-not-at-top
    except ImportError:
      tqdm = None
  if tqdm is None:
    from tqdm.std import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, desc=desc, unit=unit, smoothing=0.0,
              file=sys.stderr if stream is None else stream,
              dynamic_ncols=True, mininterval=0.5)


def resolve(progress: Progress, total: int, desc: str
           ) -> Tuple[Optional[Callable[[int], None]], Callable[[], None]]:
  """What ``train.train(progress=...)`` asks for, as (callback, close).

  Args:
    progress: None (a bar when ``interactive()``), True (a bar), False (none)
      or a callable taking the rounds just completed.
    total: rounds in all.
    desc: the bar's label.
  """
  if callable(progress):
    return progress, lambda: None
  if progress is None:
    progress = interactive()
  if not progress:
    return None, lambda: None
  b = bar(total, desc)
  return b.update, b.close
