"""An attack optimized by differentiating through the defence.

The optimized ALIE and FOE of every library search one scalar along one fixed
direction. byzjax's defences are differentiable JAX functions, so the
Byzantine rows themselves can ascend the damage ||F(x) - s||_2 by gradient,
inside the jitted round: ``gradient_ascent`` starts from a named attack and
takes K normalized, projected gradient steps on the f Byzantine rows through
the composed defence (pre-aggregations included).

References:
  Allouah et al., "Fixing by Mixing", AISTATS 2023 (the damage
  ||F(x) - s|| the optimized attacks maximize, Appendix 14.3); Madry et al.,
  "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018
  (projected gradient ascent with normalized steps).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp

from byzjax import checks
from byzjax.kernels import reverse_differentiable, row_sq_distances
from byzjax.attack import (ATTACKS, Attack, attack, check_honest, honest_mean,
                           keep_honest, shape_nd)
from byzjax.optimized_attacks import _simulated_defence
from byzjax.types import Array, Key

CONSTRAINTS = ("honest_radius", "none")


class AscentState(NamedTuple):
  """State of ``gradient_ascent``.

  Attributes:
    key: the attack's own key (split at every update for the simulated
      defence's randomness).
    start: the state of the starting attack.
    gain: damage of the rows sent over the damage of the start rows, at the
      last update (1 before the first; reported per round as ``eta``).
  """

  key: Key
  start: Any
  gain: Array


def _project(byz: Array, s: Array, radius: Optional[Array]) -> Array:
  """Each row within ``radius`` of s (None: unconstrained)."""
  if radius is None:
    return byz
  off = byz - s
  norm = jnp.sqrt(jnp.sum(off * off, axis=1, keepdims=True))
  return s + off * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-30))


@attack("gradient_ascent", display="GA")
def gradient_ascent(*, f: int, start: str = "alie",
                    start_args: Optional[Mapping[str, Any]] = None,
                    steps: int = 10, step_size: float = 0.25,
                    constraint: str = "honest_radius", radius_scale: float = 1.0,
                    knows_server_randomness: bool = False) -> Attack:
  """Projected gradient ascent of ||F(x) - s||_2 over the Byzantine rows.

  The rows start where the attack ``start`` puts them (ALIE by default;
  ``start_args`` are its hyperparameters; an optimized start searches
  against the same defence). Then, ``steps`` times, with g the gradient of
  ||F(x) - s||^2 with respect to the (f, d) Byzantine rows (``jax.grad``
  through the defence F, simulated with the attacker's own key as for the
  optimized attacks), the rows move by ``step_size`` R g / ||g||_F and are
  projected back onto the stealth set. R is the honest radius, the largest
  distance of an honest row to the honest mean s; the stealth set
  (``constraint``) is "honest_radius" (every Byzantine row within
  ``radius_scale`` R of s: no farther from s than an honest row; the start
  rows are projected too) or "none". The rows sent are the iterate of
  largest damage, the projected start included, so the attack never does
  less damage than its projected start against the simulated defence.

  Non-differentiable points are handled as JAX differentiates them, and
  the choice is stated here: sorting (median, trimmed mean, the sorting
  networks) is locally a permutation, and its gradient is that of the
  active order; selections by argmin (Krum, Multi-Krum, NNM's neighbour
  sets, CGE) are locally constant, so the gradient flows only through the
  rows selected (a Byzantine row that is not selected gets no gradient: the
  ascent cannot move a rule that discards every Byzantine row, and keeps
  its start); NaN gradients (e.g. the square root of a zero distance
  between identical Byzantine rows) are set to zero; loops with a
  data-dependent exit (the geometric median's convergence test) run their
  full length with the state frozen after the exit, the same values in a
  form ``jax.grad`` can transpose. The gain over the
  start (damage sent / damage of the projected start) is reported per
  round as ``eta``.

  Args:
    f: number of Byzantine workers (the last f rows).
    start: a registered attack giving the starting rows.
    start_args: its hyperparameters.
    steps: K, the number of gradient steps (>= 0).
    step_size: each step's length in units of R (> 0).
    constraint: "honest_radius" or "none".
    radius_scale: the stealth radius in units of R (> 0).
    knows_server_randomness: simulate the defence with the server's key.

  Returns:
    The Attack; its update requires ``aggregate=``.
  """
  name = "gradient_ascent"
  steps = checks.check_int("steps", steps, low=0, what=f"{name}: ")
  step_size = checks.check_real("step_size", step_size, low=0.0, strict=True,
                                what=name)
  radius_scale = checks.check_real("radius_scale", radius_scale, low=0.0,
                                   strict=True, what=name)
  checks.check_choice("constraint", constraint, CONSTRAINTS, what=name)
  knows = checks.check_bool("knows_server_randomness", knows_server_randomness,
                            what=name)
  if start == name:
    raise ValueError(f"{name}: start must be another attack, got {start!r}")
  first = ATTACKS.get(start)(f=f, **dict(start_args or {}))
  if first.inputs != "none":
    raise ValueError(f"{name}: start must be an attack that builds its rows "
                     f"from the honest ones (inputs 'none'), got {start!r} "
                     f"(inputs {first.inputs!r})")

  def init(x_like: Any, *, key: Key) -> AscentState:
    n, _ = shape_nd(x_like, name)
    check_honest(name, n, f, 2)
    own, start_key = jax.random.split(key)
    return AscentState(key=own, start=first.init(x_like, key=start_key),
                       gain=jnp.ones((), jnp.float32))

  def update(x: Array, state: AscentState, *, aggregate: Any = None):
    n, _ = shape_nd(x, name)
    h = check_honest(name, n, f, 2)
    if f == 0:
      return x, state
    key, own = jax.random.split(state.key)
    defence, _ = _simulated_defence(name, aggregate, own, knows)
    x0, start_state = first.update(x, state.start, aggregate=aggregate)
    xf = x.astype(jnp.float32)
    s = honest_mean(xf, h)
    unit = jnp.sqrt(jnp.max(row_sq_distances(xf[:h], s)))
    radius = radius_scale * unit if constraint == "honest_radius" else None

    def damage(byz):
      with reverse_differentiable():
        out = defence(keep_honest(x, byz.astype(x.dtype), f))
      return jnp.sum(jnp.square(out.astype(jnp.float32) - s))

    ascend = jax.value_and_grad(damage)
    byz0 = _project(x0[h:].astype(jnp.float32), s, radius)

    def body(_, carry):
      byz, best, best_value, start_value = carry
      value, grad = ascend(byz)
      value = jnp.where(jnp.isnan(value), -jnp.inf, value)
      start_value = jnp.where(jnp.isnan(start_value), value, start_value)
      better = value > best_value
      best = jnp.where(better, byz, best)
      best_value = jnp.where(better, value, best_value)
      grad = jnp.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
      norm = jnp.sqrt(jnp.sum(grad * grad))
      step = step_size * unit * grad / jnp.maximum(norm, 1e-30)
      return (_project(byz + step, s, radius), best, best_value, start_value)

    carry = (byz0, byz0, jnp.asarray(-jnp.inf, jnp.float32),
             jnp.asarray(jnp.nan, jnp.float32))
    byz, best, best_value, start_value = jax.lax.fori_loop(0, steps, body, carry)
    last = damage(byz)
    last = jnp.where(jnp.isnan(last), -jnp.inf, last)
    if steps == 0:
      start_value = last
    best = jnp.where(last > best_value, byz, best)
    best_value = jnp.maximum(last, best_value)
    gain = jnp.sqrt(best_value / start_value)
    return (keep_honest(x, best.astype(x.dtype), f),
            AscentState(key=key, start=start_state, gain=gain))

  return Attack(init=init, update=update, name=name,
                metrics=lambda state: {"eta": state.gain})
