"""Which XLA:CPU computations round differently on one core and on several.

Each computation runs in a fresh process pinned to one core and in one on
all the cores this process may use (``os.sched_setaffinity`` before jax is
imported: XLA sizes its thread pools by it), under each set of XLA flags;
the table says whether the two outputs are bitwise equal. The computations
are the pieces of a Table 2 round: a full and a row-axis sum, the gradient
of the MNIST CNN for one worker and for 17 vmapped workers (per layer), and
a Gram matrix. Inputs are fixed draws, so a row reads the same on any run.

  python benchmarks/rounding_by_cores.py
  python benchmarks/rounding_by_cores.py --flags "" "--xla_cpu_use_xnnpack=false"

Measured with jax 0.10.2 (benchmarks/results/rounding_by_cores_cpu2.txt):
with the default flags the sum over the rows of an (n, d) matrix and the
first convolution's gradient differ; with YNNPACK's fusions off the sums
agree and the dots, convolutions and gradients differ instead;
``--xla_cpu_multi_thread_eigen=false`` changes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in the child: prints {name: digest of the output bytes}.
CHILD = r"""
import hashlib, json, os, sys
os.sched_setaffinity(0, set(json.loads(sys.argv[1])))
import numpy as np, jax, jax.numpy as jnp, optax
from byzjax import models

def digest(tree):
  return hashlib.md5(b"".join(np.asarray(leaf).tobytes()
                              for leaf in jax.tree_util.tree_leaves(tree))).hexdigest()

rng = np.random.default_rng(0)
x = jnp.asarray(rng.standard_normal((17, 25, 28, 28, 1), dtype=np.float32))
y = jnp.asarray(rng.integers(0, 10, (17, 25)))
rows = jnp.asarray(rng.standard_normal((17, 176050), dtype=np.float32))
model = models.build_model("mnist_cnn", num_classes=10, input_shape=(28, 28, 1))
params, state = model.init(jax.random.key(0))

def loss(p, x, y):
  logits = model.apply(p, state, x)[0]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

out = {
    "sum of a (176050,) vector": jax.jit(jnp.sum)(rows[0]),
    "sum over the rows of (17, 176050)": jax.jit(lambda a: a.sum(0))(rows),
    "Gram matrix (17, 176050)": jax.jit(lambda a: a @ a.T)(rows),
    "CNN forward, 1 worker": jax.jit(lambda p, x: model.apply(p, state, x)[0])(params, x[0]),
    "CNN gradient, 1 worker": jax.jit(jax.grad(loss))(params, x[0], y[0]),
}
grads = jax.jit(jax.vmap(jax.grad(loss), (None, 0, 0)))(params, x, y)
for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
  out["CNN gradient, 17 workers: " + jax.tree_util.keystr(path)] = leaf
print(json.dumps({k: digest(v) for k, v in out.items()}))
"""


def digests(cores, flags: str):
  env = dict(os.environ, XLA_FLAGS=flags,
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(sorted(cores))],
                        capture_output=True, text=True, env=env, cwd=ROOT,
                        timeout=600)
  if done.returncode != 0:
    raise SystemExit(f"child failed under XLA_FLAGS={flags!r}:\n{done.stderr[-2000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--flags", nargs="+", default=[
      "", "--xla_cpu_multi_thread_eigen=false",
      "--xla_cpu_experimental_ynn_fusion_type=",
      "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_multi_thread_eigen=false"],
      help="XLA_FLAGS values to compare (one column each)")
  args = p.parse_args()
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < 2:
    raise SystemExit(f"this process may use {len(cores)} core; the comparison "
                     "needs at least 2")
  import jax  # pylint: disable=g-import-not-at-top
  columns = []
  for flags in args.flags:
    one, many = digests(cores[:1], flags), digests(cores, flags)
    columns.append({k: one[k] == many[k] for k in one})
  names = list(columns[0])
  print(f"jax {jax.__version__}: bitwise equal on 1 core and on {len(cores)}?")
  print("| computation | " + " | ".join(f"`{f}`" if f else "default flags"
                                         for f in args.flags) + " |")
  print("|---|" + "---|" * len(args.flags))
  for name in names:
    print(f"| {name} | " + " | ".join("equal" if c[name] else "DIFFERS"
                                      for c in columns) + " |")


if __name__ == "__main__":
  main()
