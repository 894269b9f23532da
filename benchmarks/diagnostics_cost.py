"""What diagnostics=True adds to a round's defence.

The Byzantine influence is a forward-mode derivative of the defence, computed
beside it (``train.Experiment.round``: the aggregate as without diagnostics,
the derivative from rows behind an optimization barrier). This times, on the
(17, 431,080) input of Table 2's MNIST CNN with f = 4 and the tangent 1 on the
Byzantine rows: the defence alone, ``jax.jvp`` (primal and tangent in one
program, the form byzjax used before: it changed GM's rounding), and the
defence with the derivative beside it.

  python benchmarks/diagnostics_cost.py [--reps 7]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from aggregators import time_call  # benchmarks/aggregators.py
from byzjax import aggregators

RULES = ("nnm+trimmed_mean", "geometric_median", "krum", "cge")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--reps", type=int, default=7)
  p.add_argument("--n", type=int, default=17)
  p.add_argument("--f", type=int, default=4)
  p.add_argument("--d", type=int, default=431_080)
  args = p.parse_args()
  x = jax.random.normal(jax.random.key(0), (args.n, args.d))
  tangent = jnp.zeros_like(x).at[args.n - args.f:].set(1.0)
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, (n, d) = "
        f"({args.n}, {args.d:,}), f = {args.f}; ms per call, median of "
        f"{args.reps}")
  print("| rule | defence | jax.jvp | defence + derivative beside it |")
  print("| :-- | --: | --: | --: |")
  for name in RULES:
    rule = aggregators.compose(name, f=args.f, n=args.n)
    forms = (
        jax.jit(rule),
        jax.jit(lambda v, rule=rule: jax.jvp(rule, (v,), (tangent,))),
        jax.jit(lambda v, rule=rule: (rule(v), jax.jvp(
            rule, (jax.lax.optimization_barrier(v),), (tangent,))[1])))
    ms = [1e3 * time_call(form, x, reps=args.reps) for form in forms]
    print(f"| {name} | {ms[0]:.1f} | {ms[1]:.1f} ({ms[1] / ms[0]:.2f}x) | "
          f"{ms[2]:.1f} ({ms[2] / ms[0]:.2f}x) |")


if __name__ == "__main__":
  main()
