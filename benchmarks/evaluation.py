"""Share of a run spent on test evaluations, for an evaluation interval.

The paper configs evaluate every 5 rounds (the authors' group's code), where
byzjax used to evaluate every 50: this prints, for the offline Table 2 setting
(MNIST CNN of Table 3, n = 17, f = 4, b = 25, robust D-SHB), the time of one
evaluation, of one round, and the share of the evaluations in a run at each
interval, measured on compiled ``Experiment.chunk`` calls (rounds under
``lax.scan`` followed by one evaluation, as ``Experiment.run`` does).

  python benchmarks/evaluation.py                   # offline Table 2 data
  python benchmarks/evaluation.py --dataset digits --model mlp --reps 5

Needs ../shared/datasets/mnist for the default dataset.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax

from byzjax import train

_HERE = os.path.dirname(os.path.abspath(__file__))
MNIST_DIR = os.path.normpath(os.path.join(_HERE, "..", "..", "shared",
                                          "datasets", "mnist"))


def _median_seconds(fn, reps: int) -> float:
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="mnist_test_as_train")
  parser.add_argument("--data-dir", default=MNIST_DIR)
  parser.add_argument("--model", default="mnist_cnn")
  parser.add_argument("--aggregator", default="nnm+trimmed_mean")
  parser.add_argument("--attack", default="sign_flip")
  parser.add_argument("--every", type=int, nargs="+", default=[5, 50])
  parser.add_argument("--reps", type=int, default=5)
  args = parser.parse_args()
  config = train.RunConfig(
      dataset=args.dataset, data_dir=args.data_dir, model=args.model,
      aggregator=args.aggregator, attack=args.attack, diagnostics=False,
      steps=max(args.every))
  exp = train.Experiment(config)
  state, data = exp.init(1), exp.data(0)
  evaluate = jax.jit(lambda s, d: exp.evaluate(s.params, s.model_state, d))
  jax.block_until_ready(evaluate(state, data))
  eval_s = _median_seconds(lambda: evaluate(state, data), args.reps)
  print(f"{config.dataset}, {config.model}, n = {config.n}, f = {config.f}, "
        f"{config.aggregator} vs {config.attack}; test set "
        f"{data.test_x.shape[0]} images; jax {jax.__version__}, "
        f"{jax.default_backend()}")
  print(f"one evaluation: {1e3 * eval_s:.1f} ms (median of {args.reps})\n")
  print("| evaluate every | ms per chunk (k rounds + 1 evaluation) | "
        "ms per round | evaluation share of the run |")
  print("| ---: | ---: | ---: | ---: |")
  for every in args.every:
    chunk = jax.jit(lambda s, d, k=every: exp.chunk(s, d, k)).lower(
        state, data).compile()
    jax.block_until_ready(chunk(state, data))
    chunk_s = _median_seconds(lambda: chunk(state, data), args.reps)
    round_s = (chunk_s - eval_s) / every
    print(f"| {every} | {1e3 * chunk_s:.1f} | {1e3 * round_s:.1f} | "
          f"{100 * eval_s / chunk_s:.1f}% |")


if __name__ == "__main__":
  main()
