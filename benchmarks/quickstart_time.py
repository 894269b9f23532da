"""How long the README's quick start takes: `byzjax run` cold, warm, saved.

Three runs of the default `byzjax run`, each a fresh process:

1. cold: an empty compilation cache and an empty output folder (what a new
   user's first `byzjax run` costs);
2. warm cache: the cache the first run filled, a new output folder (every
   run trained again, but XLA's programs come from the cache);
3. saved: the first run's folder again (every result is saved: nothing is
   trained, the table is printed).

For each: the wall time, and for the runs that trained, the compilation and
training seconds summed over the result files; with the machine's load
average before and after and its CPU. The README's timings are these
(``tests/test_docs.py`` checks them against the committed table).

  python benchmarks/quickstart_time.py > benchmarks/results/quickstart_time_cpu2.txt
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _byzjax_run(out: str, cache: str) -> float:
  env = dict(os.environ, BYZJAX_CACHE_DIR=cache)
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "byzjax.cli", "run", "--no-progress",
                  "--no-plots", "--out", out], check=True, env=env,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return time.perf_counter() - start


def _seconds(out: str):
  compile_s = train_s = 0.0
  for path in glob.glob(os.path.join(out, "results", "*", "seed-*.json")):
    with open(path, encoding="utf-8") as fh:
      result = json.load(fh)["result"]
    compile_s += result["compile_seconds"]
    train_s += result["train_seconds"]
  return compile_s, train_s


def _minutes(seconds: float) -> str:
  m, s = divmod(round(seconds), 60)
  return f"{m} min {s:02d} s" if m else f"{s} s"


def main() -> None:
  sys.path.insert(0, ROOT)
  from byzjax import provenance  # pylint: disable=g-import-not-at-top
  print(f"machine: {provenance.environment_text(provenance.environment())}")
  print(f"load average before: {os.getloadavg()[0]:.2f}")
  print(f"{'case':12s} {'wall':>12s} {'compiling':>10s} {'training':>10s}")
  with tempfile.TemporaryDirectory(prefix="byzjax-quickstart-") as tmp:
    cache = os.path.join(tmp, "cache")
    first, second = os.path.join(tmp, "first"), os.path.join(tmp, "second")
    for case, out in (("cold", first), ("warm cache", second), ("saved", first)):
      wall = _byzjax_run(out, cache)
      if case == "saved":
        print(f"{case:12s} {_minutes(wall):>12s} {'-':>10s} {'-':>10s}", flush=True)
      else:
        compile_s, train_s = _seconds(out)
        print(f"{case:12s} {_minutes(wall):>12s} {compile_s:9.0f}s {train_s:9.0f}s",
              flush=True)
  print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
