"""Tests of byzjax.workers: device-side shards, jitted sampling, label flips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import data
from byzjax import workers


# ---------------------------------------------------------------- sampling


def _id_data(parts, n):
  # every image holds its own index, so drawn images reveal their origin
  x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None],
                      (n, 2, 2, 1))
  y = np.arange(n) % 10
  return workers.pack(x, y, parts)


def test_sample_batches_draws_own_valid_samples():
  n = 60
  parts = [np.arange(0, 3), np.arange(3, 30), np.array([30, 45, 59, 31])]
  wd = _id_data(parts, n)
  assert wd.index.shape == (3, 27) and wd.min_count == 3
  np.testing.assert_array_equal(wd.counts, [3, 27, 4])
  sample = jax.jit(workers.sample_batches, static_argnames="batch_size")
  for k in range(20):
    xb, yb = sample(jax.random.key(k), wd, batch_size=3)
    assert xb.shape == (3, 3, 2, 2, 1) and yb.shape == (3, 3)
    ids = np.asarray(xb[:, :, 0, 0, 0]).astype(int)
    for w, p in enumerate(parts):
      assert set(ids[w]) <= set(p.tolist())
      assert len(set(ids[w])) == 3  # without replacement
      np.testing.assert_array_equal(np.asarray(yb[w]), ids[w] % 10)
    # worker 0 holds exactly batch_size samples: it draws all of them
    assert set(ids[0]) == {0, 1, 2}
  a = sample(jax.random.key(7), wd, batch_size=3)
  b = sample(jax.random.key(7), wd, batch_size=3)
  c = sample(jax.random.key(8), wd, batch_size=3)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])
  with pytest.raises(ValueError, match=r"batch_size must be in \[1, 3\].*"
                     "batch_size=4"):
    workers.sample_batches(jax.random.key(0), wd, batch_size=4)


def test_sample_batches_is_uniform():
  parts = [np.arange(5), np.arange(5, 25)]
  wd = _id_data(parts, 25)
  keys = jax.random.split(jax.random.key(0), 4000)
  xb, _ = jax.jit(jax.vmap(
      lambda k: workers.sample_batches(k, wd, batch_size=2)))(keys)
  ids = np.asarray(xb[:, 0, :, 0, 0, 0]).astype(int).ravel()
  freq = np.bincount(ids, minlength=5) / len(keys)
  np.testing.assert_allclose(freq, 2 / 5, atol=0.04)


def test_worker_data_from_dataset():
  ds = data.load("digits", seed=0)
  wd = workers.worker_data(ds, num_workers=5, scheme="dirichlet", alpha=1.0,
                        seed=0)
  assert wd.num_workers == 5 and int(wd.counts.sum()) == len(ds.train_y)
  xb, yb = workers.sample_batches(jax.random.key(0), wd, batch_size=4)
  assert xb.shape == (5, 4, 8, 8, 1) and xb.dtype == jnp.float32
  assert yb.dtype == jnp.int32


def test_pack_errors():
  x, y = np.zeros((10, 2, 2, 1)), np.zeros(10, int)
  with pytest.raises(ValueError, match="at least one sample"):
    workers.pack(x, y, [np.arange(5), np.array([], int)])
  with pytest.raises(ValueError, match="outside"):
    workers.pack(x, y, [np.array([0, 10])])
  with pytest.raises(ValueError, match="differ in length"):
    workers.pack(x, y[:5], [np.arange(3)])


# ------------------------------------------------------------------ others


def test_flip_labels():
  np.testing.assert_array_equal(workers.flip_labels(np.arange(10), 10),
                                np.arange(10)[::-1])
  with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
    workers.flip_labels(jnp.arange(3), 0)
  out = workers.flip_labels(jnp.array([0, 3, 9], jnp.int32), 10)
  assert out.dtype == jnp.int32
  np.testing.assert_array_equal(out, [9, 6, 0])
  np.testing.assert_array_equal(workers.flip_labels(np.array([0, 1]), 2), [1, 0])


def test_flips():
  x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4, 1)
  ds = data.Dataset(x, np.array([1, 2]), x, np.array([1, 2]), 10, "t")
  big = data.expand_with_hflips(ds)
  assert big.train_x.shape == (4, 3, 4, 1)
  np.testing.assert_array_equal(big.train_x[2], x[0, :, ::-1])
  np.testing.assert_array_equal(big.train_y, [1, 2, 1, 2])
  xs = jnp.asarray(np.broadcast_to(x[0], (64, 3, 4, 1)))
  out = np.asarray(jax.jit(workers.random_hflip)(jax.random.key(0), xs))
  flipped = np.array([np.array_equal(o, x[0, :, ::-1]) for o in out])
  kept = np.array([np.array_equal(o, x[0]) for o in out])
  assert np.all(flipped | kept) and 10 < flipped.sum() < 54
