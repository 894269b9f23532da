"""What diagnostics=True adds to a round's defence: the Byzantine influence's
forward-mode derivative, computed beside the defence (train.Experiment.round),
against the defence alone and against jax.jvp's primal-and-tangent form that
byzjax used before (it changed GM's rounding).

  python benchmarks/diagnostics_cost.py
"""

import time, jax, jax.numpy as jnp, numpy as np
from byzjax import aggregators
x = jax.random.normal(jax.random.key(0), (17, 431080))
t = jnp.zeros_like(x).at[13:].set(1.0)
def tm(fn):
  jax.block_until_ready(fn(x)); ts=[]
  for _ in range(7):
    s=time.perf_counter(); jax.block_until_ready(fn(x)); ts.append(time.perf_counter()-s)
  return np.median(ts)*1e3
for name in ("nnm+trimmed_mean", "geometric_median", "krum", "cge"):
  rule = aggregators.compose(name, f=4, n=17)
  plain = jax.jit(lambda v: rule(v))
  old = jax.jit(lambda v: jax.jvp(rule, (v,), (t,)))
  new = jax.jit(lambda v: (rule(v), jax.jvp(rule, (jax.lax.optimization_barrier(v),), (t,))[1]))
  a, b, c = tm(plain), tm(old), tm(new)
  print(f"{name:18s} defence {a:7.1f} ms  jvp (before) {b:7.1f} ms ({b/a:.2f}x)  beside (now) {c:7.1f} ms ({c/a:.2f}x)")
