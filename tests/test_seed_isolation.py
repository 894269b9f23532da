"""A run's numbers depend on its own settings and seed only, on every path.

For each kind of dataset (shipped with a package, an IDX folder, a tfds
directory), seed 2 trained alone, inside a multi-seed call, through
``train.train``, through ``run_grid`` and through the ``byzjax`` command gives
the same numbers, bit for bit on the CPU.
"""

import contextlib
import json
import os

import numpy as np
import pytest

import idx_files
from byzjax import cli
from byzjax import experiments as ex
from byzjax import train

SERIES = ("test_accuracy", "loss", "aggregate_error", "kappa_hat", "eta",
          "learning_rate")

# A randomized defence (bucketing) against an attack that simulates it, a
# Dirichlet split, evaluations every round: every seed-dependent piece.
BASE = train.RunConfig(
    dataset="digits", model="logistic_regression", n=5, f=1,
    split="dirichlet", alpha=1.0, aggregator="bucketing+median",
    attack="optimized_alie", attack_args={"evals": 4}, steps=3, eval_every=1,
    batch_size=4, learning_rate=0.5, diagnostics=False, seeds=(2,))


def _tfds_records(num=60):
  rng = np.random.default_rng(4)
  return [{"image": rng.integers(0, 256, (28, 28, 1), dtype=np.uint8),
           "label": np.int64(i % 10)} for i in range(num)]


@contextlib.contextmanager
def _tfds_folder(tmp_path):
  """A tfds MNIST directory (array_record files) whose reader is mocked."""
  tfds = pytest.importorskip("tensorflow_datasets")
  version = tmp_path / "tfds" / "mnist" / "3.0.1"
  version.mkdir(parents=True)
  (version / "dataset_info.json").write_text(json.dumps({}))
  for split in ("train", "test"):
    (version / f"mnist-{split}.array_record-00000-of-00001").write_bytes(b"")
  records = _tfds_records()
  with tfds.testing.mock_data(num_examples=len(records),
                              as_data_source_fn=lambda *a, **k: records):
    yield str(tmp_path / "tfds")


@contextlib.contextmanager
def _dataset(kind, tmp_path):
  """The config changes that point at a dataset of the given kind."""
  if kind == "package":
    yield {}
  elif kind == "idx":
    folder = str(tmp_path / "idx")
    idx_files.write_mnist_folder(folder, np.random.default_rng(0), n_train=80, n_test=20)
    yield {"dataset": "mnist", "data_dir": folder, "split": "iid", "alpha": None}
  else:
    with _tfds_folder(tmp_path) as folder:
      yield {"dataset": "mnist", "data_dir": folder, "split": "iid",
             "alpha": None}


def _series(result):
  return {name: np.asarray(getattr(result, name)) for name in SERIES}


def _assert_same(a, b, what):
  for name in SERIES:
    np.testing.assert_array_equal(a[name], b[name], err_msg=f"{what}: {name}")


@pytest.mark.parametrize("kind", ["package", "idx", "tfds"])
def test_seed_alone_equals_seed_among_others_on_every_path(kind, tmp_path):
  with _dataset(kind, tmp_path) as changes:
    config = BASE.replace(**changes)
    alone = _series(train.train(config)[0])
    among = train.train(config.replace(seeds=(1, 2)))
    assert among[1].seed == 2
    _assert_same(alone, _series(among[1]), "train.train, seeds (1, 2)")
    assert not np.array_equal(alone["loss"], _series(among[0])["loss"])
    for seeds in ((2,), (1, 2)):
      grid = ex.Grid("iso", config, axes={"aggregator": [config.aggregator]},
                     seeds=seeds)
      results = ex.run_grid(grid, str(tmp_path / f"grid{len(seeds)}"),
                            progress=False, write=False)
      record = next(r for r in results.records
                    if r.seed == 2 and r.kind == "grid")
      _assert_same(alone, _series(record.result), f"run_grid, seeds {seeds}")


def test_cli_seed_alone_equals_seed_among_others(tmp_path, capsys):
  argv = ["run", "--dataset", "digits", "--model", "logistic_regression",
          "--n", "5", "--f", "1", "--alpha", "1.0", "--steps", "3",
          "--eval-every", "1", "--batch-size", "4", "--agg", "bucketing+median",
          "--attack", "optimized_alie", "mimic", "--no-compile-cache",
          "--no-plots"]
  runs = {}
  for seeds in (["2"], ["1", "2"]):
    out = str(tmp_path / f"cli{len(seeds)}")
    assert cli.main(argv + ["--seeds", *seeds, "--out", out]) == 0
    capsys.readouterr()
    with open(os.path.join(out, "runs.json"), encoding="utf-8") as fh:
      saved = json.load(fh)
    runs[len(seeds)] = {(r["settings"].get("attack"), r["label"]): r
                        for r in saved["runs"] if r["seed"] == 2}
  assert runs[1].keys() == runs[2].keys() and len(runs[1]) == 3  # + f = 0
  for key, one in runs[1].items():
    for name in ("test_accuracy", "loss", "aggregate_error"):
      assert one["result"][name] == runs[2][key]["result"][name], (key, name)
  from_cli = runs[1][("optimized_alie", "Bucketing + CWMed")]["result"]
  config = train.RunConfig.from_dict(from_cli["config"])
  python_api = train.train(config)[0]
  assert from_cli["loss"] == python_api.loss
  assert from_cli["test_accuracy"] == python_api.test_accuracy
