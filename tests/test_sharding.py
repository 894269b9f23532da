"""Every device, every host: the sharded round, seeds and rules equal one device.

Each check runs in a subprocess with simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count``), set before jax is
imported. Tolerances: float32 rounding of partial sums taken in another
order (relative 1e-5 on the per-round numbers; exact on accuracies).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, devices, *args, timeout=600):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                        capture_output=True, text=True, timeout=timeout, env=env,
                        cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


RULES = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from byzjax import aggregators, kernels, sharding
DISTRIBUTED_FORMS = ("median", "krum", "nnm+trimmed_mean", "geometric_median")
layout = sharding.make_layout(num_seeds=1, runs=1)
assert layout.workers == len(jax.devices()) == 8, layout
rng = np.random.default_rng(0)
out = {}
# (13, 203): neither divides the 8 devices (XLA pads inside); (16, 208): even.
for n, f, d in ((13, 3, 203), (16, 3, 208)):
  x = rng.normal(1.0, 1.0, (n, d)).astype(np.float32)
  x[-1] = np.inf; x[-2, 5] = np.nan; x[-3] = 1e38  # Byzantine rows hold anything
  for name in sys.argv[1].split(","):
    # Weiszfeld to convergence: with its default tolerance, partial sums in
    # another order may stop it one iteration earlier or later.
    stages = [(s, {"tolerance": 0.0, "iterations": 300})
              if s in ("geometric_median", "median_of_means") else s
              for s in name.split("+")]
    rule = aggregators.compose(*stages, f=f, n=n)
    key = jax.random.key(0)
    plain = jax.jit(lambda v: rule(v, key=key))(jnp.asarray(x))
    def laid_out(v):
      v = sharding.constrain(v, layout, None, sharding.WORKERS)  # coordinate-sharded
      return sharding.constrain(rule(v, key=key), layout, sharding.WORKERS)
    sharded = jax.jit(laid_out)(jnp.asarray(x))
    out[f"{name}@{d}"] = [np.asarray(plain).tolist(), np.asarray(sharded).tolist(),
                          str(sharded.sharding.spec)]
    if name in DISTRIBUTED_FORMS:  # the public switch to the partitioned forms
      with kernels.distributed_layout():
        spmd = jax.jit(laid_out)(jnp.asarray(x))
      out[f"{name}@{d} distributed_layout"] = [
          np.asarray(plain).tolist(), np.asarray(spmd).tolist(),
          str(spmd.sharding.spec)]
print(json.dumps(out))
"""

NAMES = ["mean", "median", "trimmed_mean", "meamed", "geometric_median",
         "krum", "multi_krum", "mda", "cge", "median_of_means", "caf", "monna",
         "smea", "centered_clipping", "nnm+trimmed_mean", "nnm+krum",
         "bucketing+median", "clipping+geometric_median", "arc+krum",
         "nnm+geometric_median"]
LOOSE = ("geometric_median", "median_of_means", "clipping+geometric_median",
         "nnm+geometric_median")


def test_every_rule_on_coordinate_sharded_rows_equals_unsharded():
  out = json.loads(_python(RULES, 8, ",".join(NAMES)).strip().splitlines()[-1])
  spmd = ("median", "krum", "nnm+trimmed_mean", "geometric_median")
  assert set(out) == {f"{n}@{d}" for n in NAMES for d in (203, 208)} | {
      f"{n}@{d} distributed_layout" for n in spmd for d in (203, 208)}
  for case, (plain, sharded, spec) in out.items():
    plain, sharded = np.asarray(plain), np.asarray(sharded)
    if case.startswith("mean@"):  # not robust: the non-finite rows propagate
      assert not np.isfinite(plain).all() and not np.isfinite(sharded).all()
      continue
    assert np.isfinite(sharded).all(), case
    # Weiszfeld's fixed point is flat: float32 partial sums in another order
    # move it by up to ~1e-4 (distance space on mixed rows), any layout.
    rtol = 1e-3 if case.split("@")[0] in LOOSE else 2e-5
    np.testing.assert_allclose(sharded, plain, rtol=rtol, atol=1e-6, err_msg=case)
    if "@208" in case:  # an even split stays coordinate-sharded
      assert "workers" in spec, (case, spec)


RUN = """
import json, sys
import jax
from byzjax import train
c = train.RunConfig(
    dataset="digits", model="mlp", model_args={"hidden_sizes": (16,)}, n=9, f=2,
    split="dirichlet", alpha=1.0, aggregator="nnm+trimmed_mean",
    attack="optimized_alie", attack_args={"evals": 4}, steps=4, eval_every=2,
    batch_size=6, learning_rate=0.5, seeds=(1, 2), diagnostics=True)
exp = train.Experiment(c, execution=train.Execution(
    devices=None if sys.argv[1] == "all" else int(sys.argv[1])))
print("LAYOUT", exp.layout.describe() if exp.layout else "none")
results = exp.run()
print("EXECUTION", json.dumps(results[1].execution))
print(json.dumps([{k: getattr(r, k) for k in (
    "loss", "test_accuracy", "aggregate_error", "kappa_hat", "eta",
    "byzantine_influence")} for r in results]))
"""


def _close(a, b):
  for ra, rb in zip(a, b):
    for k in ra:
      x, y = np.asarray(ra[k], float), np.asarray(rb[k], float)
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=k)


def test_a_run_on_8_devices_equals_one_device():
  eight = _python(RUN, 8, "all").strip().splitlines()
  one = _python(RUN, 8, "1").strip().splitlines()
  assert "LAYOUT mesh runs=2 x workers=4 over 8 cpu device(s)" in eight[0]
  assert one[0] == "LAYOUT none"
  # Each result records the program it came from: seeds 1 and 2 vectorized
  # over the mesh, or one after another on one device.
  execution = lambda lines: json.loads(lines[-2].removeprefix("EXECUTION "))
  assert execution(eight) == {
      "per_worker": "vmap", "seed_batching": "vmap", "seeds_together": [1, 2],
      "batch": 2, "mesh": {"runs": 2, "workers": 4, "devices": 8,
                           "processes": 1}}
  assert execution(one) == {
      "per_worker": "loop", "seed_batching": "sequential",
      "seeds_together": [2], "batch": 1, "mesh": None}
  _close(json.loads(eight[-1]), json.loads(one[-1]))


DISTRIBUTED = """
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address="127.0.0.1:" + sys.argv[2],
                           num_processes=2, process_id=int(sys.argv[1]))
from byzjax import train
c = train.RunConfig(
    dataset="digits", model="mlp", model_args={"hidden_sizes": (16,)}, n=9, f=2,
    split="dirichlet", alpha=1.0, aggregator="nnm+trimmed_mean",
    attack="optimized_alie", attack_args={"evals": 4}, steps=4, eval_every=2,
    batch_size=6, learning_rate=0.5, seeds=(1, 2), diagnostics=True)
exp = train.Experiment(c)
print("LAYOUT", exp.layout.describe())
results = exp.run()
print(json.dumps([{k: getattr(r, k) for k in (
    "loss", "test_accuracy", "aggregate_error", "kappa_hat", "eta",
    "byzantine_influence")} for r in results]))
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one():
  port = str(_free_port())
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(DISTRIBUTED),
                             str(i), port], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
           for i in range(2)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    outs.append([l for l in out.splitlines() if l.strip()])
  assert "over 4 cpu device(s) (2 process(es))" in outs[0][0]
  one = json.loads(_python(RUN, 1, "all").strip().splitlines()[-1])
  _close(json.loads(outs[0][-1]), one)
  _close(json.loads(outs[1][-1]), one)  # every process gets every number


CLI = """
import sys
from byzjax import cli
sys.exit(cli.main(["run", "--dataset", "digits", "--model", "logistic_regression",
                   "--n", "5", "--f", "1", "--split", "iid", "--steps", "2",
                   "--eval-every", "1", "--batch-size", "4", "--agg",
                   "trimmed_mean", "--attack", "sign_flip", "--seeds", "1", "2",
                   "--no-plots", "--no-compile-cache", "--out", sys.argv[1]]))
"""


def test_the_command_uses_every_device_and_says_so(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-c", textwrap.dedent(CLI), str(tmp_path / "out")],
      capture_output=True, text=True, timeout=600, cwd=ROOT,
      env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "mesh runs=2 x workers=2 over 4 cpu device(s)" in proc.stderr
