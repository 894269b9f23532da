"""The ``byzjax`` command.

``byzjax demo`` runs every aggregation rule (alone and after NNM) on one
adversarial input and prints how far each lands from the honest mean.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import aggregators, preaggregators


def _demo_inputs(n: int, f: int, d: int, seed: int):
  """Honest rows around a common mean, and three kinds of Byzantine rows."""
  rng = np.random.default_rng(seed)
  mu = rng.standard_normal(d).astype(np.float32)
  honest = mu + rng.standard_normal((n - f, d)).astype(np.float32)
  s, sigma = honest.mean(0), honest.std(0, ddof=1)
  attacks = {
      "sign_flip x10": np.tile(-10 * s, (f, 1)),
      "alie (z=1.5)": np.tile(s + 1.5 * sigma, (f, 1)),
      "inf/nan/1e38": np.stack([np.full(d, [np.inf, -np.inf, np.nan, 1e38][i % 4])
                                for i in range(f)]),
  }
  return s, {name: jnp.asarray(np.concatenate([honest, byz]).astype(np.float32))
             for name, byz in attacks.items()}


def demo(argv: Optional[List[str]] = None) -> int:
  p = argparse.ArgumentParser(prog="byzjax demo", description=(
      "Every rule on n worker vectors of which the last f are Byzantine: the "
      "distance of the aggregate from the honest mean, per attack."))
  p.add_argument("--n", type=int, default=17)
  p.add_argument("--f", type=int, default=4)
  p.add_argument("--d", type=int, default=10_000)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  s, inputs = _demo_inputs(args.n, args.f, args.d, args.seed)
  print(f"n={args.n} workers, f={args.f} Byzantine (last rows), d={args.d}; "
        f"honest rows ~ N(mu, I). Entries: ||F(x) - honest mean||.\n")
  header = f"{'rule':28s}" + "".join(f"{k:>16s}" for k in inputs) + f"{'ms/call':>10s}"
  print(header)
  print("-" * len(header))
  key = jax.random.key(args.seed)
  for pre in ("", "nnm+"):
    for name in aggregators.names():
      f = args.f
      try:
        rule = aggregators.compose(pre + name, f=f, n=args.n)
      except ValueError as err:  # e.g. bulyan needs n >= 4f + 3
        print(f"{pre + name:28s}  skipped: {err}")
        continue
      fn = jax.jit(lambda x, rule=rule: rule(x, key=key))
      cells, times = [], []
      for x in inputs.values():
        out = jax.block_until_ready(fn(x))
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - start)
        cells.append(float(np.linalg.norm(np.asarray(out, np.float64) - s)))
      print(f"{pre + name:28s}" + "".join(f"{c:16.4g}" for c in cells)
            + f"{1e3 * np.median(times):10.2f}")
  print(f"\npre-aggregations: {', '.join(preaggregators.names())}")
  return 0


def main(argv: Optional[List[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  commands = {"demo": demo}
  if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
    print("usage: byzjax {demo} [options]\n\n  demo  every robust rule on an "
          "adversarial input (byzjax demo --help)")
    return 0 if not argv or argv[0] in ("-h", "--help") else 2
  return commands[argv[0]](argv[1:])


if __name__ == "__main__":
  sys.exit(main())
