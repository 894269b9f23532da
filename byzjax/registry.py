"""Registries of things by lower_snake_case name, with helpful lookup errors.

``did_you_mean`` is the one place that suggests the closest valid name.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, Generic, List, Sequence, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, valid: Sequence[str], *, count: int = 1,
                 style: str = "sentence") -> str:
  """A hint naming the valid names closest to ``name``, or "" if none is close.

  Args:
    name: the unknown name.
    valid: the valid names.
    count: how many close names to offer.
    style: "sentence" (" Did you mean 'krum'?") or "paren"
      (" (did you mean 'krum'?)").

  Returns:
    The hint, with a leading space.
  """
  close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=count)
  if not close:
    return ""
  names = ", ".join(map(repr, close))
  return f" Did you mean {names}?" if style == "sentence" else \
      f" (did you mean {names}?)"


def _key(name: str) -> str:
  """The registry key a name is looked up by ("Multi-Krum " -> "multi_krum")."""
  return name.strip().lower().replace("-", "_")


def _origin(obj) -> tuple:
  """Where an object was defined: (module, qualified name)."""
  return (getattr(obj, "__module__", None), getattr(obj, "__qualname__", None))


class Registry(Generic[T]):
  """A name -> object mapping whose misses list the valid names.

  Each entry may carry facts given at registration (``register("mnist",
  reads_data_dir=True)``), which checks read instead of keeping lists of
  names elsewhere (a plugin's entry then behaves like a built-in one).

  Args:
    kind: what the registry holds, used in error messages ("aggregator").
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._items: Dict[str, T] = {}
    self._facts: Dict[str, Dict[str, Any]] = {}

  def register(self, name: str, **facts: Any) -> Callable[[T], T]:
    """Decorator registering ``obj`` under ``name``, with its ``facts``."""
    if name != name.lower() or " " in name or "-" in name:
      raise ValueError(f"{self.kind} names are lower_snake_case, got {name!r}")

    def wrap(obj: T) -> T:
      old = self._items.get(name)
      if old is not None and _origin(old) != _origin(obj):
        raise ValueError(f"{self.kind} {name!r} is registered twice (by "
                         f"{_origin(old)[0]} and {_origin(obj)[0]})")
      self._items[name] = obj  # the same definition again: a module reloaded
      self._facts[name] = dict(facts)
      return obj

    return wrap

  def get(self, name: str) -> T:
    """Returns the object registered as ``name``.

    Raises:
      ValueError: naming the closest valid names when ``name`` is unknown.
    """
    key = _key(name)
    if key in self._items:
      return self._items[key]
    hint = did_you_mean(key, list(self._items), count=3)
    raise ValueError(
        f"unknown {self.kind} {name!r}.{hint} Valid names: {', '.join(self.names())}")

  def names(self) -> List[str]:
    """The registered names, sorted."""
    return sorted(self._items)

  def fact(self, name: str, key: str, default: Any = None) -> Any:
    """A fact ``name`` was registered with (``default`` if not given).

    Raises:
      ValueError: ``name`` is unknown (as ``get``).
    """
    self.get(name)
    return self._facts[_key(name)].get(key, default)

  def names_with(self, key: str) -> List[str]:
    """The names registered with a true fact ``key``, sorted."""
    return [n for n in self.names() if self._facts.get(n, {}).get(key)]

  def __contains__(self, name: str) -> bool:
    return name in self._items

  def items(self) -> List[tuple]:
    """(name, object) pairs, sorted by name."""
    return sorted(self._items.items())
