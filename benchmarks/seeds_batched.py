"""Seconds for one Table 2 run against the number of seeds trained together.

The run is a cell of the offline Table 2 (``experiments/table2_offline.py``:
robust D-SHB, n = 17, f = 4, T = 800 rounds, test accuracy every 5 rounds,
diagnostics off), by default NNM + CWTM against the optimized ALIE (a greedy
line search of 16 evaluations every round). For each seed count k it trains
seeds 1..k in one call of ``train.train`` with the default ``Execution``
(on an accelerator the seeds of a call are vectorized into one program; on a
single CPU device they run one after another) and prints the compile and
train seconds and each seed's maximum test accuracy (the numbers of seeds
1..k do not depend on k: only the float rounding of a vectorized program may
differ, which the last column shows against the k = 1 run).

  python benchmarks/seeds_batched.py --data-dir ../shared/datasets/mnist
  python benchmarks/seeds_batched.py --seeds 1 5 8 --steps 800
"""

from __future__ import annotations

import argparse
import os
import time

import jax

from byzjax import data as data_lib
from byzjax import experiments as ex
from byzjax import grid as grid_lib
from byzjax import train

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data-dir", default=os.path.normpath(
      os.path.join(HERE, "..", "..", "shared", "datasets", "mnist")))
  p.add_argument("--label", default="NNM + CWTM", help="Table 2 method")
  p.add_argument("--attack", default="optimized_alie")
  p.add_argument("--seeds", type=int, nargs="+", default=[1, 5, 8],
                 help="seed counts k (seeds 1..k in one call)")
  p.add_argument("--steps", type=int, default=None, help="default: the grid's")
  args = p.parse_args(argv)

  grid = ex.load_grid(os.path.join(HERE, "..", "experiments",
                                   "table2_offline.py"))
  grid = grid.override(data_dir=args.data_dir, diagnostics=False)
  runs = [r for r in grid_lib.expand(grid)
          if r.label == args.label and r.config.attack == args.attack]
  if not runs:
    raise SystemExit(f"no run {args.label!r} vs {args.attack!r} in the grid")
  base = runs[0].config
  if args.steps:
    base = base.replace(steps=args.steps)
  print(f"jax {jax.__version__}, {jax.device_count()} "
        f"{jax.devices()[0].device_kind} device(s); {args.label} vs "
        f"{args.attack}, T = {base.steps}, n = {base.n}, f = {base.f}")
  print("| seeds | compile s | train s | wall s | train s per seed | "
        "max accuracy per seed (%) | max |diff| vs k = 1 (points) |")
  print("| ---: | ---: | ---: | ---: | ---: | :--- | ---: |")
  dataset = data_lib.load(base.dataset, data_dir=base.data_dir,
                          seed=base.data_seed, test_fraction=base.test_fraction)
  first = None
  for k in args.seeds:
    config = base.replace(seeds=tuple(range(1, k + 1)))
    start = time.perf_counter()
    results = train.train(config, dataset=dataset, progress=False)
    wall = time.perf_counter() - start
    best = [100 * max(r.test_accuracy) for r in results]
    first = first if first is not None else best[0]
    compile_s = results[0].compile_seconds
    train_s = wall - compile_s  # evaluations included
    print(f"| {k} | {compile_s:.1f} | {train_s:.1f} | {wall:.1f} | "
          f"{train_s / k:.2f} | {', '.join(f'{b:.2f}' for b in best)} | "
          f"{abs(best[0] - first):.2f} |", flush=True)


if __name__ == "__main__":
  main()
