"""Argument checks, one policy for every module: each failure is one
``ValueError`` that names the value and the valid range.

Policy: an int is a Python or NumPy integer and never a bool (``f=True`` is
refused everywhere); a real is an int or a float, finite unless said
otherwise; a flag is a bool; a choice is one of a listed set, and a miss
names the closest valid value (``registry.did_you_mean``).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from byzjax.registry import did_you_mean


def _where(what: str) -> str:
  return f"{what}: " if what and not what.endswith(": ") else what


def check_int(name: str, value: Any, *, low: Optional[int] = None,
              high: Optional[int] = None, what: str = "") -> int:
  """``value`` as an int in [low, high], or a ValueError naming the bound.

  Args:
    name: the argument's name, for the message.
    value: what was passed.
    low: smallest valid value (None: no bound).
    high: largest valid value (None: no bound).
    what: who checks (a rule or attack name), prefixed to the message.

  Returns:
    The int.
  """
  where = _where(what)
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, np.integer)):
    bound = f" >= {low}" if low is not None else ""
    raise ValueError(f"{where}{name} must be an int{bound}, got {value!r}")
  value = int(value)
  if low is not None and value < low:
    raise ValueError(f"{where}{name} must be an int >= {low}, got "
                     f"{name}={value}")
  if high is not None and value > high:
    raise ValueError(f"{where}{name} must be an int <= {high}, got "
                     f"{name}={value}")
  return value


def check_real(name: str, value: Any, *, low: Optional[float] = None,
               strict: bool = False, what: str = "") -> float:
  """``value`` as a finite float (>= low, or > low with ``strict``)."""
  where = _where(what)
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, float, np.number)):
    raise ValueError(f"{where}{name} must be a finite real number, got "
                     f"{value!r}")
  value = float(value)
  if not math.isfinite(value):
    raise ValueError(f"{where}{name} must be finite, got {name}={value}")
  if low is not None and (value <= low if strict else value < low):
    raise ValueError(f"{where}{name} must be finite and "
                     f"{'>' if strict else '>='} {low:g}, got {name}={value}")
  return value


def check_positive(what: str, name: str, value: Any, *,
                   allow_zero: bool = False) -> float:
  """A finite float > 0 (>= 0 with ``allow_zero``)."""
  return check_real(name, value, low=0.0, strict=not allow_zero, what=what)


def check_bool(name: str, value: Any, *, what: str = "") -> bool:
  """``value`` if it is a bool (True or False), else a ValueError."""
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{_where(what)}{name} must be True or False, got "
                     f"{value!r}")
  return bool(value)


def check_choice(name: str, value: Any, valid: Sequence[str], *,
                 what: str = "") -> str:
  """``value`` if it is one of ``valid``, else a ValueError with the closest."""
  if value not in valid:
    raise ValueError(f"{_where(what)}{name} must be one of "
                     f"{', '.join(map(str, valid))}, got {value!r}"
                     f"{did_you_mean(str(value), valid, style='paren')}")
  return value


def check_f(rule: str, n: int, f: Any) -> int:
  """0 <= f and 2f < n (a Byzantine minority) for a rule over n inputs."""
  f = check_int("f", f, low=0, what=rule)
  if 2 * f >= n:
    raise ValueError(f"{rule} needs n > 2f (a Byzantine minority), got n={n}, "
                     f"f={f}; the largest valid f is {(n - 1) // 2}")
  return f


def check_matrix(rule: str, x: Any) -> tuple:
  """``x`` is a floating (n, d) array with n >= 1; returns (n, d)."""
  shape = getattr(x, "shape", None)
  if shape is None or len(shape) != 2:
    raise ValueError(f"{rule} takes an (n, d) array of worker vectors, got "
                     f"shape {shape}")
  if shape[0] < 1:
    raise ValueError(f"{rule} needs at least one row, got shape {shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{rule} takes a floating array, got dtype {x.dtype}")
  return int(shape[0]), int(shape[1])


def check_names(what: str, given: Sequence[str], valid: Sequence[str]) -> None:
  """Every name in ``given`` is in ``valid`` (hyperparameters, settings)."""
  unknown = [k for k in given if k not in valid]
  if unknown:
    hints = [f"{k!r}{did_you_mean(k, valid, style='paren')}" for k in unknown]
    raise ValueError(f"{what} got unknown hyperparameter(s) {', '.join(hints)};"
                     f" valid: {', '.join(valid) if valid else 'none'}")


class GuaranteeWarning(UserWarning):
  """A rule runs outside the condition its paper's guarantee needs (it runs
  as asked; the warning says which form runs and what would hold)."""


def warn_blanchard(rule: str, n: int, f: int) -> None:
  """Krum's form with n - f - 2 neighbours is proved Byzantine-resilient
  only for n > 2f + 2 (Blanchard et al., NeurIPS 2017): warn below."""
  if n <= 2 * f + 2:
    _warn_once(
        f"{rule} with n={n}, f={f}: n <= 2f + 2 = {2 * f + 2}, outside "
        f"Blanchard et al.'s condition n > 2f + 2, so their guarantee does "
        f"not hold; it runs as asked, with n - f - 2 = {n - f - 2} "
        f"neighbours (neighbours=n - f - 1 is the form of Allouah et al. "
        f"2023, robust for n > 2f)")


@functools.lru_cache(maxsize=None)
def _warn_once(text: str) -> None:
  """A ``GuaranteeWarning`` once per process (a grid checks each run at
  several places, and traces each rule again)."""
  warnings.warn(text, GuaranteeWarning, stacklevel=4)
