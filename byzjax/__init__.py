"""byzjax: Byzantine-robust distributed learning in JAX.

The package face: the built-in rules and attacks are registered on import,
and a user's own rule, pre-aggregation or attack registers with one
decorator and then runs everywhere (``train.train``, grids, the ``byzjax``
command)::

  import byzjax

  @byzjax.aggregator("my_mean", display="My mean")
  def my_mean(rows, *, f):
    return rows.combine(jnp.full((rows.num_rows,), 1.0 / rows.num_rows))
"""

from byzjax import aggregators, attacks, preaggregators  # registers the built-ins
from byzjax.attacks import Attack, attack
from byzjax.rows import Rows
from byzjax.rule import Defence, aggregator, compose, preaggregator

__version__ = "0.1.0"

__all__ = ["Attack", "Defence", "Rows", "aggregator", "aggregators", "attack",
           "attacks", "compose", "preaggregator", "preaggregators"]
