"""Plain PyTorch, written well, for the rules of the "beside NumPy" table.

Runs under a virtualenv with torch (the CPU one of ByzFL's
``benchmarks/byzfl_reference.py`` will do; ``--device cuda`` on a GPU); it
never imports jax or byzjax.
For each (n, d) input and each rule it calls the rule once to warm up, then
``--reps`` times, and reports the median ms per call; the output is saved for
``benchmarks/aggregators.py`` to compare with NumPy's.

The forms are the ones a careful torch user writes: ``torch.kthvalue`` along
the worker axis for the median (the mean of the two middle order statistics
when n is even, as ``np.median``; ``torch.median`` returns the lower one),
``torch.sort`` for the trimmed mean and MeaMed, and the Gram form (``x @ x.T``, squared norms, ``topk`` over the
(n, n) distances) for Krum and NNM.

  /work/byzfl-venv/bin/python benchmarks/torch_reference.py --input x.npy \\
      --f 4 --rules median,krum --reps 10 --threads 2 --out times.json
"""

import argparse
import json
import os
import statistics
import time


def median(x, f):
  n = x.shape[0]
  hi = x.kthvalue(n // 2 + 1, dim=0).values
  if n % 2:
    return hi
  return 0.5 * (hi + x.kthvalue(n // 2, dim=0).values)


def trimmed_mean(x, f):
  n = x.shape[0]
  return x.sort(dim=0).values[f:n - f].mean(dim=0)


def meamed(x, f):
  import torch
  n, d = x.shape
  s = x.sort(dim=0).values
  med = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
  keep = n - f
  costs = torch.stack([torch.maximum(med - s[j], s[j + keep - 1] - med)
                       for j in range(n - keep + 1)])
  start = costs.argmin(dim=0)
  csum = torch.cat([torch.zeros(1, d, dtype=x.dtype, device=x.device),
                    s.cumsum(dim=0)])
  cols = torch.arange(d, device=x.device)
  return (csum[start + keep, cols] - csum[start, cols]) / keep


def _distances(x):
  import torch
  g = x @ x.T
  sq = g.diagonal()
  return torch.clamp(sq[:, None] + sq[None, :] - 2.0 * g, min=0.0)


def krum(x, f):
  import torch
  n = x.shape[0]
  dist = _distances(x)
  dist.fill_diagonal_(float("inf"))
  scores = dist.topk(n - f - 2, dim=1, largest=False).values.sum(dim=1)
  return x[torch.argmin(scores)]


def nnm(x, f):
  import torch
  n = x.shape[0]
  nearest = _distances(x).topk(n - f, dim=1, largest=False).indices
  mix = torch.zeros(n, n, dtype=x.dtype, device=x.device).scatter_(
      1, nearest, 1.0 / (n - f))
  return mix @ x


RULES = {"median": median, "trimmed_mean": trimmed_mean, "meamed": meamed,
         "krum": krum, "nnm": nnm}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--input", required=True, help="float32 (n, d) .npy file")
  p.add_argument("--f", type=int, required=True)
  p.add_argument("--rules", default=",".join(RULES))
  p.add_argument("--reps", type=int, default=10)
  p.add_argument("--threads", type=int, default=1)
  p.add_argument("--device", default="cpu",
                 help='"cpu" or "cuda" (times then wait for the GPU)')
  p.add_argument("--out", required=True, help="JSON of ms per rule")
  p.add_argument("--outdir", help="where to save each rule's output (.npy)")
  args = p.parse_args(argv)
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(args.threads)
  import numpy as np
  import torch
  torch.set_num_threads(args.threads)
  x = torch.from_numpy(np.load(args.input)).to(args.device)
  sync = torch.cuda.synchronize if x.is_cuda else lambda: None
  results = {"torch": torch.__version__, "threads": args.threads,
             "device": str(x.device)}
  with torch.no_grad():
    for name in args.rules.split(","):
      fn = RULES[name]
      out = fn(x, args.f)
      sync()
      times = []
      for _ in range(args.reps):
        start = time.perf_counter()
        fn(x, args.f)
        sync()
        times.append(time.perf_counter() - start)
      entry = {"ms": statistics.median(times) * 1e3}
      if args.outdir:
        os.makedirs(args.outdir, exist_ok=True)
        entry["output_path"] = os.path.join(args.outdir, f"{name}.npy")
        np.save(entry["output_path"], out.cpu().numpy())
      results[name] = entry
  with open(args.out, "w") as fh:
    json.dump(results, fh)


if __name__ == "__main__":
  main()
