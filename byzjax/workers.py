"""Worker shards on device: jittable minibatch sampling and label flipping.

``pack`` puts a dataset's images on device once and gives each worker a
padded row of indices into them (``WorkerData``); ``sample_batches`` draws
every worker's minibatch inside the jitted round; ``flip_labels`` is the
label-flipping map of the LF attack; ``random_hflip`` the CIFAR-10
augmentation of Appendix 14.2 of Allouah et al. (2023).

References:
  Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan. "Fixing by Mixing: A
  Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023, Appendix
  14.2 and 14.3.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from byzjax import checks
from byzjax.data import Dataset, split
from byzjax.types import Array, Key


def flip_labels(labels, num_classes: int):
  """Label flipping: l -> C - 1 - l (numpy or jax arrays).

  Args:
    labels: integer labels in [0, num_classes).
    num_classes: C.

  Returns:
    Flipped labels, same type and dtype.

  References:
    Allouah et al., "Fixing by Mixing", Appendix 14.3 (LF: l' = 9 - l).
  """
  checks.check_int("num_classes", num_classes, low=1, what="flip_labels")
  return (num_classes - 1 - labels).astype(labels.dtype)


def random_hflip(key: Key, images: Array) -> Array:
  """Mirrors each image horizontally with probability 1/2 (jittable).

  Args:
    key: a ``jax.random.key``.
    images: (..., H, W, C); every leading index gets its own coin.

  Returns:
    Images of the same shape.

  References:
    Allouah et al., "Fixing by Mixing", Appendix 14.2 (CIFAR-10 flips).
  """
  flip = jax.random.bernoulli(key, 0.5, images.shape[:-3])
  return jnp.where(flip[..., None, None, None], images[..., ::-1, :], images)


# --------------------------------------------------------------------------
# Device-resident per-worker data and jittable minibatch sampling.


@flax.struct.dataclass
class WorkerData:
  """Per-worker shards on device, for jitted sampling.

  Shards have different sizes, so instead of padding the images per worker
  (which would cost ``num_workers * max_size`` images: ~1 GB for MNIST under
  strong Dirichlet skew) the images are stored once and each worker gets a
  padded row of indices into them.

  Attributes:
    x: float32 (N, H, W, C), the training images.
    y: int32 (N,), their labels.
    index: int32 (num_workers, max_size); row i lists worker i's samples in
      its first ``counts[i]`` entries; the padding repeats a sample of worker i
      and is never drawn.
    counts: int32 (num_workers,), the shard sizes.
    min_count: smallest shard size (static, for validation under jit).
  """

  x: Array
  y: Array
  index: Array
  counts: Array
  min_count: int = flax.struct.field(pytree_node=False)

  @property
  def num_workers(self) -> int:
    return self.index.shape[0]


def pack(x, y, parts: Sequence[np.ndarray]) -> WorkerData:
  """Puts images, labels and per-worker shards on device.

  Args:
    x: (N, H, W, C) images.
    y: (N,) labels.
    parts: per-worker index arrays into ``x`` (e.g. from ``split``), each
      non-empty.

  Returns:
    A ``WorkerData``.

  Raises:
    ValueError: an empty shard, an out-of-range index, or mismatched x/y.
  """
  x = np.asarray(x)
  y = np.asarray(y)
  if len(x) != len(y):
    raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
  counts = np.array([len(p) for p in parts], np.int32)
  if len(parts) == 0 or counts.min() < 1:
    raise ValueError(f"every worker needs at least one sample, got shard "
                     f"sizes {counts.tolist()}")
  max_size = int(counts.max())
  index = np.empty((len(parts), max_size), np.int32)
  for i, p in enumerate(parts):
    p = np.asarray(p)
    if p.min() < 0 or p.max() >= len(x):
      raise ValueError(f"worker {i} has indices outside [0, {len(x)})")
    index[i, :len(p)] = p
    index[i, len(p):] = p[0]
  return WorkerData(x=jnp.asarray(x, jnp.float32), y=jnp.asarray(y, jnp.int32),
                    index=jnp.asarray(index), counts=jnp.asarray(counts),
                    min_count=int(counts.min()))


def worker_data(ds: Dataset, *, num_workers: int, scheme: str = "iid",
                alpha: Optional[float] = None, seed: int = 0) -> WorkerData:
  """``pack(ds.train_x, ds.train_y, split(ds.train_y, ...))`` in one call.

  Args:
    ds: the dataset.
    num_workers: number of honest workers.
    scheme: "iid", "dirichlet", "dirichlet_per_worker" or "extreme".
    alpha: Dirichlet concentration (for the Dirichlet schemes only).
    seed: split seed.

  Returns:
    A ``WorkerData``.
  """
  parts = split(ds.train_y, num_workers=num_workers, scheme=scheme,
                alpha=alpha, seed=seed)
  return pack(ds.train_x, ds.train_y, parts)


def sample_batches(key: Key, data: WorkerData, *, batch_size: int
                  ) -> Tuple[Array, Array]:
  """Draws one minibatch per worker, without replacement within its shard.

  Each worker's valid slots get iid uniform keys (padding gets 2.0); the
  ``batch_size`` smallest keys (``lax.top_k``) are a uniformly random subset of
  its own samples. A slot's key depends only on (key, worker, slot), not on
  the padding. No data-dependent shapes; jittable and vmappable.

  Args:
    key: a ``jax.random.key``.
    data: from ``pack``.
    batch_size: static int in [1, data.min_count].

  Returns:
    ``(images, labels)``: (num_workers, batch_size, H, W, C) and
    (num_workers, batch_size).

  Raises:
    ValueError: ``batch_size`` outside [1, smallest shard size].
  """
  if not 1 <= batch_size <= data.min_count:
    raise ValueError(f"batch_size must be in [1, {data.min_count}] (the "
                     f"smallest worker shard), got batch_size={batch_size}")
  n, m = data.index.shape
  # Slot j of worker i gets uniform(fold_in(key_i, j)): the draw does not depend
  # on the padded width m, so a run's batches do not depend on which other
  # splits (seeds) its index array was padded to match.
  slots = jnp.arange(m)
  u = jax.vmap(lambda k: jax.vmap(
      lambda j: jax.random.uniform(jax.random.fold_in(k, j)))(slots))(
          jax.random.split(key, n))
  valid = slots[None, :] < data.counts[:, None]
  u = jnp.where(valid, u, 2.0)
  _, pos = jax.lax.top_k(-u, batch_size)
  idx = jnp.take_along_axis(data.index, pos, axis=1)
  return data.x[idx], data.y[idx]
