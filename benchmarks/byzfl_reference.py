"""Times ByzFL's aggregators on one (n, d) matrix, for side-by-side comparison.

Runs under a separate ByzFL virtualenv (PyTorch, no JAX); it never imports
byzjax or jax. For each rule (byzjax's lower_snake_case names) it builds the
matching ByzFL object, calls it once to warm up, then ``--reps`` times, on the
torch-tensor path and on the numpy path, and reports the median ms per call.
The torch path's output is saved to ``OUTDIR/<rule>.npy`` for cross-checks.

Setup (torchvision's PyPI wheel is a CUDA build whose C extension cannot load
next to the CPU torch, so torchvision is left out and stubbed below; ByzFL only
uses it in its training harness)::

  python3 -m venv /work/byzfl-venv
  /work/byzfl-venv/bin/pip install torch==2.13.0
  /work/byzfl-venv/bin/pip install --no-deps byzfl==0.0.11
  /work/byzfl-venv/bin/pip install torch==2.13.0 numpy scipy matplotlib seaborn

Usage::

  /work/byzfl-venv/bin/python benchmarks/byzfl_reference.py --input x.npy \\
      --f 4 --rules median,krum,caf --reps 5 --threads 1 --outdir /tmp/byzfl

Fairness notes: in-place rules (clipping, arc) get a fresh copy of the input
and stateful CenteredClipping a fresh object (m=0) per call; randomized rules
(caf, smea, bucketing) are reseeded before each call. None of this is timed;
the copy's own time is reported as ``<path>_copy_ms`` (what a caller that
keeps its input pays on top).
"""

import argparse
from importlib import metadata
import json
import os
import statistics
import sys
import time
import types

# Which ByzFL class implements each byzjax rule; None where ByzFL has none.
CLASSES = {
    "mean": "Average", "median": "Median", "trimmed_mean": "TrMean",
    "meamed": "Meamed", "geometric_median": "GeometricMedian", "krum": "Krum",
    "multi_krum": "MultiKrum", "mda": "MDA", "caf": "CAF", "monna": "MoNNA",
    "smea": "SMEA", "centered_clipping": "CenteredClipping", "cge": None,
    "nnm": "NNM", "bucketing": "Bucketing", "clipping": "Clipping",
    "arc": "ARC",
}
IN_PLACE = {"clipping", "arc"}  # ByzFL overwrites the rows of its input


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--input", required=True, help="float32 (n, d) .npy file")
  p.add_argument("--f", type=int, required=True, help="Byzantine count")
  p.add_argument("--rules", default=",".join(CLASSES),
                 help="comma-separated byzjax rule names (default: all)")
  p.add_argument("--reps", type=int, default=5, help="timed calls per path")
  p.add_argument("--threads", type=int, default=1,
                 help="torch.set_num_threads and BLAS/OpenMP threads")
  p.add_argument("--gm-iterations", type=int, default=3,
                 help="GeometricMedian T")
  p.add_argument("--gm-nu", type=float, default=0.1, help="GeometricMedian nu")
  p.add_argument("--clip", type=float, default=1.0, help="Clipping threshold")
  p.add_argument("--bucket-size", type=int, default=2, help="Bucketing s")
  p.add_argument("--paths", default="torch,numpy", help="paths to time")
  p.add_argument("--seed", type=int, default=0, help="seed for random rules")
  p.add_argument("--outdir", default="byzfl_outputs",
                 help="where each rule's output is saved as <rule>.npy")
  p.add_argument("--out", help="write the JSON here instead of stdout")
  return p.parse_args(argv)


def import_byzfl():
  """Imports byzfl with a stub torchvision; returns (np, torch, byzfl).

  ByzFL imports ``torchvision.{datasets,transforms}`` at module level for its
  training harness only. The stub answers any attribute with a no-op callable.
  """

  class _Stub(types.ModuleType):

    def __getattr__(self, name):
      if name.startswith("__"):
        raise AttributeError(name)
      return lambda *args, **kwargs: None

  if "torchvision" not in sys.modules:
    tv = _Stub("torchvision")
    tv.datasets = _Stub("torchvision.datasets")
    tv.transforms = _Stub("torchvision.transforms")
    sys.modules.update({"torchvision": tv, "torchvision.datasets": tv.datasets,
                        "torchvision.transforms": tv.transforms})
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import byzfl  # pylint: disable=import-outside-toplevel
  return np, torch, byzfl


def make_rule(byzfl, rule, args):
  """Returns a no-argument factory of the ByzFL object matching ``rule``."""
  cls = getattr(byzfl, CLASSES[rule])
  kwargs = {
      "mean": {}, "median": {}, "centered_clipping": {},
      "geometric_median": {"nu": args.gm_nu, "T": args.gm_iterations},
      "bucketing": {"s": args.bucket_size}, "clipping": {"c": args.clip},
  }.get(rule, {"f": args.f})
  return lambda: cls(**kwargs)


def time_path(rule, factory, x, copy, reseed, reps):
  """Median ms of ``reps`` calls after one warm-up, the last output, and for
  an in-place rule the median ms of the input copy made (untimed) before each
  call, or None."""
  times, copies, out = [], [], None
  for _ in range(reps + 1):
    agg = factory()
    arg = x
    if rule in IN_PLACE:
      t0 = time.perf_counter()
      arg = copy(x)
      copies.append((time.perf_counter() - t0) * 1e3)
    reseed()
    t0 = time.perf_counter()
    out = agg(arg)
    times.append((time.perf_counter() - t0) * 1e3)
  copy_ms = round(statistics.median(copies[1:]), 4) if copies else None
  return round(statistics.median(times[1:]), 4), out, copy_ms


def main(argv=None):
  args = parse_args(argv)
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(args.threads)  # before numpy/torch load BLAS
  np, torch, byzfl = import_byzfl()
  torch.set_num_threads(args.threads)
  print(f"byzfl {metadata.version('byzfl')}, torch "
        f"{torch.__version__}, numpy {np.__version__}, threads {args.threads}",
        file=sys.stderr)

  x_np = np.ascontiguousarray(np.load(args.input), dtype=np.float32)
  inputs = {"torch": (torch.from_numpy(x_np.copy()), torch.clone),
            "numpy": (x_np, np.copy)}
  os.makedirs(args.outdir, exist_ok=True)

  def reseed():
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

  results = {}
  for rule in [r.strip() for r in args.rules.split(",") if r.strip()]:
    if rule not in CLASSES:
      raise SystemExit(f"unknown rule {rule!r}; valid: {', '.join(CLASSES)}")
    entry = {"torch_ms": None, "numpy_ms": None, "fastest_ms": None,
             "byzfl_class": CLASSES[rule], "output_path": None}
    results[rule] = entry
    if CLASSES[rule] is None:
      entry["reason"] = f"ByzFL has no {rule} rule"
      continue
    factory, outs = make_rule(byzfl, rule, args), {}
    for path in args.paths.split(","):
      x, copy = inputs[path]
      try:
        entry[f"{path}_ms"], out, entry[f"{path}_copy_ms"] = time_path(
            rule, factory, x, copy, reseed, args.reps)
      except Exception as e:  # pylint: disable=broad-except
        entry.setdefault("reason", f"{path}: {type(e).__name__}: {e}")
        continue
      if out is None:
        entry[f"{path}_ms"] = None
        entry.setdefault("reason", f"{path}: returned None")
        continue
      outs[path] = np.asarray(out, dtype=np.float32)
    timed = [entry[f"{p}_ms"] for p in ("torch", "numpy") if entry[f"{p}_ms"]]
    entry["fastest_ms"] = min(timed) if timed else None
    if outs:
      out = outs.get("torch", outs.get("numpy"))
      entry["output_path"] = os.path.join(args.outdir, f"{rule}.npy")
      np.save(entry["output_path"], out)
      if len(outs) == 2:  # random rules differ: torch and numpy RNGs differ
        entry["torch_vs_numpy_max_abs_diff"] = float(
            np.max(np.abs(outs["torch"] - outs["numpy"])))
    print(f"{rule}: {entry}", file=sys.stderr)

  text = json.dumps(results, indent=2)
  if args.out:
    with open(args.out, "w") as fh:
      fh.write(text + "\n")
  else:
    print(text)


if __name__ == "__main__":
  main()
