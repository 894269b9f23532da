"""A rule, a pre-aggregation and an attack of your own, registered from outside
byzjax: one function and one decorator each, plain (n, d) arrays, public
imports only. Once this module is imported (in Python, or with
``byzjax run --plugin examples/plugin.py``) the new names work everywhere:
``train.train``, grids, the command line, tables and plots.

  byzjax run --plugin examples/plugin.py --dataset digits --model mlp --n 9 \\
      --f 2 --steps 50 --agg phocas norm_equalize+phocas trimmed_mean \\
      --attack scaled_sign_flip sign_flip

References:
  Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD", 2018 (Phocas).
  LPD-EPFL/robust-collaborative-learning, ``attacks/scaledSF.py`` (scaled
  sign flipping).
"""

import jax.numpy as jnp

import byzjax
from byzjax.attack import honest_mean, simple_attack


@byzjax.preaggregator("norm_equalize", display="NormEq")
def norm_equalize(x, *, f):
  """Every row rescaled to the median row norm: no worker weighs more by scale.

  Args:
    x: (n, d) worker vectors.
    f: number of Byzantine workers (unused: the median norm is robust to f < n/2).

  Returns:
    (n, d) rows.
  """
  del f
  norms = jnp.sqrt(jnp.sum(jnp.square(x), axis=1))
  target = jnp.median(norms)
  return x * (target / jnp.maximum(norms, 1e-12))[:, None]


@byzjax.aggregator("phocas", display="Phocas")
def phocas(x, *, f):
  """Phocas: per coordinate, the mean of the n - f values nearest the trimmed mean.

  Args:
    x: (n, d) worker vectors.
    f: number of Byzantine workers, 2f < n.

  Returns:
    (d,) aggregate.
  """
  n = x.shape[0]
  s = jnp.sort(x, axis=0)
  trimmed = jnp.mean(s[f:n - f], axis=0)
  order = jnp.argsort(jnp.abs(x - trimmed), axis=0)
  return jnp.mean(jnp.take_along_axis(x, order[:n - f], axis=0), axis=0)


@byzjax.attack("scaled_sign_flip", display="SSF")
def scaled_sign_flip(*, f, scale=4.0):
  """Every Byzantine row is -scale times the mean of the honest rows.

  Args:
    f: number of Byzantine workers.
    scale: the factor (scale = 1 is sign flipping).

  Returns:
    The attack.
  """
  return simple_attack("scaled_sign_flip", f,
                       lambda x, h: -scale * honest_mean(x, h))
