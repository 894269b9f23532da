"""Array and pytree aliases, and the conventions shared by every module.

Conventions:
  * "(n, d)": a matrix whose n rows are the vectors sent by the n workers.
  * "stacked": a pytree whose every leaf has a leading worker axis of size n,
    one slice per worker (what ``jax.vmap`` over workers produces).
  * Byzantine workers are the last ``f`` rows unless a mask says otherwise.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

Array = jax.Array
PyTree = Any
Key = jax.Array  # a typed key from ``jax.random.key``
Aggregator = Callable[..., Array]  # (x: (n, d), *, f, **hyper) -> (d,)
PreAggregator = Callable[..., Array]  # (x: (n, d), *, f, **hyper) -> (n', d)
