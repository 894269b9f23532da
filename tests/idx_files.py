"""IDX files (MNIST's format) written by the tests: fake MNIST folders."""

import gzip
import os
import struct

import numpy as np


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
  """``array`` as an IDX file: the magic (type ``code``, rank), the shape, big-endian data."""
  header = struct.pack(">BBBB", 0, 0, code, array.ndim)
  header += struct.pack(f">{array.ndim}I", *array.shape)
  return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_file(path: str, payload: bytes, gz: bool = True) -> None:
  """Writes ``payload`` to ``path`` (gzipped to ``path + ".gz"`` when ``gz``)."""
  if gz:
    with gzip.open(str(path) + ".gz", "wb") as fh:
      fh.write(payload)
  else:
    with open(path, "wb") as fh:
      fh.write(payload)


def write_mnist_folder(folder, rng: np.random.Generator, n_train: int = 12,
                       n_test: int = 5, gz: bool = True, sep: str = "-"):
  """A folder of the four MNIST IDX files with random 28x28 images.

  Returns:
    {"train": (images, labels), "t10k": (images, labels)} as written.
  """
  os.makedirs(folder, exist_ok=True)
  out = {}
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    write_file(os.path.join(folder, f"{prefix}-images{sep}idx3-ubyte"),
               idx_bytes(images), gz)
    write_file(os.path.join(folder, f"{prefix}-labels{sep}idx1-ubyte"),
               idx_bytes(labels), gz)
    out[prefix] = (images, labels)
  return out
