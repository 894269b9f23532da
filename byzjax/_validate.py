"""Argument checks shared by the rules: every failure names the value and bound."""

from __future__ import annotations

import math
import operator

import jax.numpy as jnp


def check_int(name: str, value, *, low: int | None = None,
              high: int | None = None, what: str = "") -> int:
  """Returns ``value`` as an int, or raises ValueError naming the bound."""
  try:
    value = operator.index(value)
  except TypeError:
    raise ValueError(f"{what}{name} must be a static Python int, got "
                     f"{value!r} of type {type(value).__name__}") from None
  if low is not None and value < low:
    raise ValueError(f"{what}{name} must be >= {low}, got {name}={value}")
  if high is not None and value > high:
    raise ValueError(f"{what}{name} must be <= {high}, got {name}={value}")
  return value


def check_f(rule: str, n: int, f) -> int:
  """Checks 0 <= f and 2f < n for a rule over n inputs."""
  f = check_int("f", f, low=0, what=f"{rule}: ")
  if 2 * f >= n:
    raise ValueError(f"{rule} needs n > 2f (a Byzantine minority), got n={n}, "
                     f"f={f}; the largest valid f is {(n - 1) // 2}")
  return f


def check_matrix(rule: str, x) -> tuple[int, int]:
  """Checks that ``x`` is a floating (n, d) array and returns (n, d)."""
  shape = getattr(x, "shape", None)
  if shape is None or len(shape) != 2:
    raise ValueError(f"{rule} takes an (n, d) array of worker vectors, got "
                     f"shape {shape}")
  if shape[0] < 1:
    raise ValueError(f"{rule} needs at least one row, got shape {shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{rule} takes a floating array, got dtype {x.dtype}")
  return int(shape[0]), int(shape[1])


def check_positive(rule: str, name: str, value, *, allow_zero=False) -> float:
  """Checks a finite positive (or non-negative) float hyperparameter."""
  value = float(value)
  ok = value >= 0 if allow_zero else value > 0
  if not (ok and math.isfinite(value)):
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{rule}: {name} must be finite and {bound}, got "
                     f"{name}={value}")
  return value
