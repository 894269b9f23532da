"""Does a committed result reproduce on this machine? Retrain it and compare.

Each result file is retrained from its own saved settings and seed, by the
byzjax source that trained it (its recorded commit, checked out into a
temporary git worktree; HEAD when none is recorded or it was dirty), in a
fresh process with the recorded number of CPU threads (the first cores of
this process's affinity) and the recorded XLA_FLAGS: what is left to differ
is the machine (its CPU, and what XLA:CPU compiles for it). The table gives
the stored and rerun final accuracy, the largest accuracy difference over
the evaluations and the first round whose training loss differs.

  python benchmarks/rerun.py experiments/results/table2_offline/results/RUN/seed-5.json ...
  python benchmarks/rerun.py --data-dir ../shared/datasets/mnist FILES ...
  python benchmarks/rerun.py --xla-flags=--xla_cpu_max_isa=AVX2 FILES ...

Committed measurements: ``benchmarks/results/rerun_cpu.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any, Dict, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in the child, from the worktree: prints the rerun's curves as JSON.
CHILD = r"""
import json, os, sys
cores, config = json.loads(sys.argv[1]), json.loads(sys.argv[2])
os.sched_setaffinity(0, set(cores))
from byzjax import config as config_lib, train
result, = train.train(config_lib.RunConfig.from_dict(config), progress=False)
print(json.dumps({"loss": [float(x) for x in result.loss],
                  "test_accuracy": [float(x) for x in result.test_accuracy],
                  "final_accuracy": float(result.final_accuracy)}))
"""


def _git(*args: str) -> str:
  return subprocess.run(["git", "-C", ROOT, *args], check=True,
                        capture_output=True, text=True).stdout.strip()


def _worktree(commit: Optional[str], trees: Dict[str, str], base: str) -> str:
  """A checkout of ``commit`` (HEAD's work tree for None)."""
  if commit is None:
    return ROOT
  if commit not in trees:
    path = os.path.join(base, commit[:12])
    _git("worktree", "add", "--detach", path, commit)
    trees[commit] = path
  return trees[commit]


def _first_difference(a, b) -> Optional[int]:
  for i, (x, y) in enumerate(zip(a, b)):
    if not (x == y or (x != x and y != y)):  # NaN equals NaN here
      return i
  return None if len(a) == len(b) else min(len(a), len(b))


def rerun(path: str, data_dir: Optional[str], trees: Dict[str, str],
          base: str, xla_flags: str = "") -> Dict[str, Any]:
  with open(path, encoding="utf-8") as fh:
    record = json.load(fh)
  env, result = record.get("environment") or {}, record["result"]
  commit = env.get("byzjax_commit")
  code = commit[:7] if commit and not commit.endswith("+dirty") else "HEAD"
  config = dict(result["config"], seeds=[result["seed"]])
  if data_dir is not None and config.get("data_dir"):
    config["data_dir"] = os.path.abspath(data_dir)
  threads = int(env.get("cpu_threads") or 1)
  cores = sorted(os.sched_getaffinity(0))[:threads]
  tree = _worktree(None if code == "HEAD" else commit, trees, base)
  flags = " ".join(f for f in (env.get("xla_flags", ""), xla_flags) if f)
  child_env = dict(os.environ, XLA_FLAGS=flags, PYTHONPATH=tree)
  done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cores),
                         json.dumps(config)], capture_output=True, text=True,
                        env=child_env, cwd=tree)
  if done.returncode != 0:
    raise SystemExit(f"{path}: the rerun failed:\n{done.stderr[-3000:]}")
  new = json.loads(done.stdout.strip().splitlines()[-1])
  step = _first_difference(result["loss"], new["loss"])
  gaps = [abs(x - y) for x, y in zip(result["test_accuracy"], new["test_accuracy"])]
  return {"file": os.path.relpath(path, ROOT), "code": code,
          "threads": threads, "stored": 100 * result["final_accuracy"],
          "rerun": 100 * new["final_accuracy"],
          "max_gap": 100 * max(gaps, default=0.0),
          "loss_differs_from": "never" if step is None else f"round {step + 1}"}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("results", nargs="+", metavar="RESULT.json")
  p.add_argument("--xla-flags", default="", help="XLA flags added to the "
                 "recorded ones, e.g. --xla_cpu_max_isa=AVX2 to compile as "
                 "for a CPU without AVX-512 (XLA's own code only: the "
                 "libraries it calls still pick kernels for this CPU)")
  p.add_argument("--data-dir", help="where the dataset is on this machine, "
                 "for the results that read one (default: the recorded "
                 "data_dir)")
  args = p.parse_args()
  # Killed: still remove the worktrees (the finally clause below).
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
  sys.path.insert(0, ROOT)
  from byzjax import provenance  # pylint: disable=g-import-not-at-top
  here = provenance.environment()
  print(f"this machine: {provenance.environment_text(here)}")
  if args.xla_flags:
    print(f"added XLA flags: {args.xla_flags}")
  print(f"{'result':72s} {'code':7s} {'thr':>3s} {'stored':>7s} {'rerun':>7s} "
        f"{'max gap':>7s}  loss differs from")
  trees: Dict[str, str] = {}
  with tempfile.TemporaryDirectory(prefix="byzjax-rerun-") as base:
    try:
      for path in args.results:
        row = rerun(path, args.data_dir, trees, base, args.xla_flags)
        print(f"{row['file']:72s} {row['code']:7s} {row['threads']:3d} "
              f"{row['stored']:7.2f} {row['rerun']:7.2f} {row['max_gap']:7.2f}"
              f"  {row['loss_differs_from']}", flush=True)
    finally:
      for tree in trees.values():
        _git("worktree", "remove", "--force", tree)


if __name__ == "__main__":
  main()
