"""Which form of the (n, n) squared distances wins on this backend.

Every distance rule (Krum, Multi-Krum, NNM, MDA, Bulyan, CAF, ...) starts from
the (n, n) matrix of squared distances between the rows of an (n, d) float32
array. byzjax has two forms (``byzjax.kernels``): exact sums of squared
differences over column blocks (``_pair_sq_distances``, the XLA:CPU default
up to 128 rows) and the Gram form centred on the median-norm row
(``gram_sq_distances``, what ``pairwise_sq_distances`` uses elsewhere: one
matmul, which tensor cores and the MXU make cheap). This times both, and the
exact form with the squared row norms in a second pass or in the same one
(``sq_distances_and_norms``, what ``Rows.dist`` uses), median over --reps
jitted calls, and prints
the largest difference of each against a float64 NumPy reference, relative
to the largest distance.

  python benchmarks/distance_forms.py
  python benchmarks/distance_forms.py --shapes 17x431080 64x11000000
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from aggregators import time_call  # benchmarks/aggregators.py
from byzjax import kernels as X


FORMS = {
    "exact blocked sums": X._pair_sq_distances,  # pylint: disable=protected-access
    "centred Gram (matmul)": X.gram_sq_distances,
    # What Rows.dist needs on the original rows: the distances and the
    # squared norms (which rows are bad), in two passes or in one.
    "exact + norms, two passes": lambda x: (X._pair_sq_distances(x),  # pylint: disable=protected-access
                                            X.row_sq_distances(x)),
    "exact + norms, one pass": X.sq_distances_and_norms,
}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--shapes", nargs="+",
                 default=["17x431080", "17x11000000", "64x431080",
                          "64x11000000"])
  p.add_argument("--reps", type=int, default=20)
  args = p.parse_args(argv)
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind} "
        f"({jax.default_backend()}); float32 input, offset 10 from the origin")
  print("| n | d | form | ms per call | max rel. error vs float64 |")
  print("| ---: | ---: | :--- | ---: | ---: |")
  for shape in args.shapes:
    n, d = (int(v) for v in shape.split("x"))
    host = (np.random.default_rng(0).standard_normal((n, d)) + 10.0).astype(
        np.float32)
    x64 = host.astype(np.float64)
    g = x64 @ x64.T
    sq = np.diag(g)
    exact = np.maximum(sq[:, None] + sq[None, :] - 2 * g, 0)
    x = jnp.asarray(host)
    for name, form in FORMS.items():
      fn = jax.jit(form)
      ms = 1e3 * time_call(fn, x, reps=args.reps)
      out = fn(x)
      dist = out[0] if isinstance(out, tuple) else out
      err = np.max(np.abs(np.asarray(dist, np.float64) - exact)) / exact.max()
      print(f"| {n} | {d:,} | {name} | {ms:,.2f} | {err:.1e} |", flush=True)


if __name__ == "__main__":
  main()
