"""Devices and meshes: how one compiled program spreads over every device.

byzjax scales through JAX's own SPMD engine, never a communication layer of
its own. A run's devices form a ``jax.sharding.Mesh`` with two axes:

* ``"runs"``: seeds (vmapped into one program) are split over it, so S seeds
  on S devices run at once;
* ``"workers"``: the round's arrays are laid out over it: each device
  computes the gradients of its share of the workers (worker axis sharded),
  then the (n, d) matrix of sent vectors is re-laid coordinate-sharded (every
  device holds all n rows of a slice of the d coordinates: one all-to-all),
  where coordinate-wise rules are local, distance rules reduce per-shard
  partial sums of squares into the small (n, n) matrix (an all-reduce), and
  the mixing of NNM / bucketing stays local.

The layout is given to XLA as sharding constraints (GSPMD, ``Auto`` mesh
axes), which never change what is computed, only where: uneven splits (13
workers on 4 devices) are padded inside XLA. Inputs are global arrays built
on every process from the same host data (``global_array``), so the same
code runs on one process or on many (``jax.distributed.initialize`` first,
one process per host), and metrics come back replicated to every process.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

# Kernels' forms for sharded arrays (re-exported for code that traces a rule
# over a mesh outside the training round).
from byzjax.kernels import distributed_layout  # noqa: F401

RUNS = "runs"
WORKERS = "workers"


class Layout(NamedTuple):
  """A mesh over ``runs`` x ``workers`` devices.

  Attributes:
    mesh: the ``jax.sharding.Mesh`` (axes "runs", "workers").
    runs: size of the "runs" axis (seeds are split over it).
    workers: size of the "workers" axis (workers, then coordinates).
  """

  mesh: Mesh
  runs: int
  workers: int

  def sharding(self, *spec: Any) -> NamedSharding:
    """The ``NamedSharding`` of a partition spec over this mesh."""
    return NamedSharding(self.mesh, PartitionSpec(*spec))

  def describe(self) -> str:
    """One line: "mesh runs=2 x workers=4 over 8 cpu devices (1 process)"."""
    devices = self.mesh.devices.ravel()
    return (f"mesh runs={self.runs} x workers={self.workers} over "
            f"{len(devices)} {devices[0].platform} device(s) "
            f"({jax.process_count()} process(es))")


def describe(layout: Optional[Layout]) -> str:
  """One line for a run's devices: the mesh's ``Layout.describe()``, or
  "one cpu device (1 process), no mesh" when a run has one device (its
  layout is None)."""
  if layout is not None:
    return layout.describe()
  return (f"one {jax.devices()[0].platform} device ({jax.process_count()} "
          f"process(es)), no mesh")


def default_runs(num_devices: int, num_seeds: int) -> int:
  """The "runs" axis size: the largest divisor of the devices <= the seeds."""
  return max(r for r in range(1, num_devices + 1)
             if num_devices % r == 0 and r <= max(num_seeds, 1))


def make_layout(devices: Optional[Sequence[Any]] = None, *,
                runs: Optional[int] = None, num_seeds: int = 1
               ) -> Optional[Layout]:
  """The layout of a run over ``devices`` (None for a single device).

  Args:
    devices: the devices (default: every device of every process).
    runs: size of the "runs" axis, dividing the number of devices (default:
      ``default_runs``).
    num_seeds: the number of seeds the run trains.

  Returns:
    The ``Layout``, or None when there is one device (no mesh is needed).

  Raises:
    ValueError: ``runs`` does not divide the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  count = len(devices)
  if runs is not None and (int(runs) < 1 or count % int(runs)):
    divisors = [str(r) for r in range(1, count + 1) if count % r == 0]
    raise ValueError(f"runs={runs} must divide the {count} device(s) used: "
                     f"one of {', '.join(divisors)}")
  if count == 1:
    return None
  runs = default_runs(count, num_seeds) if runs is None else int(runs)
  grid = np.asarray(devices, dtype=object).reshape(runs, count // runs)
  mesh = Mesh(grid, (RUNS, WORKERS), axis_types=(AxisType.Auto, AxisType.Auto))
  return Layout(mesh, runs, count // runs)


def constrain(x: jax.Array, layout: Optional[Layout], *spec: Any) -> jax.Array:
  """``x`` laid out as ``spec`` over the layout's mesh (no-op without one)."""
  if layout is None:
    return x
  return jax.lax.with_sharding_constraint(x, layout.sharding(*spec))


def global_array(value: Any, sharding: NamedSharding) -> jax.Array:
  """A global array from host data every process holds in full.

  Each process contributes the shards its devices hold, read from its own
  copy of ``value``: one code path for one process and for many.
  """
  host = np.asarray(value)
  return jax.make_array_from_callback(host.shape, sharding,
                                      lambda index: host[index])


def to_host(x: jax.Array) -> np.ndarray:
  """A replicated (or single-process) array as a NumPy array on this host."""
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(x)
  return np.asarray(x.addressable_data(0))


def is_leader() -> bool:
  """True on the process that writes files (process 0; the only one alone)."""
  return jax.process_index() == 0


def agree(flags: Sequence[bool]) -> list:
  """The leader's ``flags`` on every process (one broadcast; a no-op alone).

  Processes of one ``jax.distributed`` job must run the same programs in the
  same order; what the leader found saved on disk decides for all.
  """
  if jax.process_count() == 1:
    return list(flags)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  values = multihost_utils.broadcast_one_to_all(np.asarray(flags, np.int32))
  return [bool(v) for v in np.asarray(values)]
