"""Registries of rules by lower_snake_case name, with helpful lookup errors."""

from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, List, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """A name -> object mapping whose misses list the valid names.

  Args:
    kind: what the registry holds, used in error messages ("aggregator").
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._items: Dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    """Decorator registering ``obj`` under ``name``."""
    if name != name.lower() or " " in name or "-" in name:
      raise ValueError(f"{self.kind} names are lower_snake_case, got {name!r}")

    def wrap(obj: T) -> T:
      if name in self._items:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._items[name] = obj
      return obj

    return wrap

  def get(self, name: str) -> T:
    """Returns the object registered as ``name``.

    Raises:
      ValueError: naming the closest valid names when ``name`` is unknown.
    """
    key = name.strip().lower().replace("-", "_")
    if key in self._items:
      return self._items[key]
    close = difflib.get_close_matches(key, list(self._items), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"unknown {self.kind} {name!r}.{hint} Valid names: {', '.join(self.names())}")

  def names(self) -> List[str]:
    """The registered names, sorted."""
    return sorted(self._items)

  def __contains__(self, name: str) -> bool:
    return name in self._items
