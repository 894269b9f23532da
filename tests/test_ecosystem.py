"""byzjax among the tools researchers use: datasets prepared once from their
own files, pandas DataFrames, TensorBoard / W&B logs, LaTeX that compiles,
plots that keep every curve, partial reports that say so, progress bars."""

import dataclasses
import importlib.machinery
import importlib.util
import os
import re
import sys
import types

import numpy as np
import pytest

import idx_files
from byzjax import cli
from byzjax import data as data_lib
from byzjax import experiments as ex
from byzjax import plots
from byzjax import train

BASE = train.RunConfig(
    dataset="digits", model="logistic_regression", n=5, f=1, split="iid",
    alpha=None, steps=4, eval_every=2, batch_size=4, learning_rate=0.5,
    attack="sign_flip", diagnostics=False)
GRID = ex.Grid("eco", BASE, axes={"aggregator": ["trimmed_mean", "median"],
                                  "attack": ["sign_flip", "label_flip"]},
               seeds=(1, 2))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("eco"))
  return out, ex.run_grid(GRID, out, progress=False, log=["tensorboard"])


# ---------------------------------------------------------------------------
# Datasets prepared once: `byzjax data prepare`.


def test_prepare_mnist_then_load_by_name(tmp_path, capsys, monkeypatch):
  arrays = idx_files.write_mnist_folder(str(tmp_path / "downloads"),
                                        np.random.default_rng(0), n_test=6)
  home = tmp_path / "home"
  assert cli.main(["data", "prepare", "mnist", "--from",
                   str(tmp_path / "downloads"), "--to", str(home)]) == 0
  assert "mnist: prepared in" in capsys.readouterr().out
  monkeypatch.setenv("BYZJAX_DATA_DIR", str(home))
  ds = data_lib.load("mnist")  # no data_dir: the prepared copy
  mean, std = data_lib.NORMALIZATION["mnist"]
  np.testing.assert_array_equal(ds.train_y, arrays["train"][1])
  np.testing.assert_array_equal(ds.test_y, arrays["t10k"][1])
  np.testing.assert_allclose(
      ds.train_x[..., 0], (arrays["train"][0] / 255.0 - mean[0]) / std[0],
      rtol=1e-6, atol=1e-6)
  assert cli.main(["data", "list"]) == 0
  listed = capsys.readouterr().out
  assert re.search(r"mnist\s+12 train\s+6 test", listed), listed
  mode = os.stat(home / "mnist" / "train.npz").st_mode & 0o777
  assert mode == 0o666 & ~_umask()


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


def test_prepare_cifar10_binary(tmp_path):
  rng = np.random.default_rng(1)
  folder = tmp_path / "cifar-10-batches-bin"
  folder.mkdir()
  records = {}
  for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
    raw = rng.integers(0, 256, (3, 1 + 3072), dtype=np.uint8)
    raw[:, 0] %= 10
    raw.tofile(folder / name)
    records[name] = raw
  out = data_lib.prepare("cifar10", str(tmp_path), home=str(tmp_path / "h"))
  ds = data_lib.load("cifar10", data_dir=out)
  np.testing.assert_array_equal(ds.test_y, records["test_batch.bin"][:, 0])
  assert ds.train_x.shape == (15, 32, 32, 3)
  # Pixel (row 0, col 1) of the first test image: red, green, blue planes.
  first = records["test_batch.bin"][0, 1:].reshape(3, 32, 32)
  mean, std = data_lib.NORMALIZATION["cifar10"]
  np.testing.assert_allclose(
      ds.test_x[0, 0, 1], (first[:, 0, 1] / 255.0 - np.array(mean)) / np.array(std),
      rtol=1e-5)


def test_prepare_refuses_wrong_images(tmp_path):
  folder = tmp_path / "downloads"
  folder.mkdir()
  for prefix in ("train", "t10k"):
    idx_files.write_file(folder / f"{prefix}-images-idx3-ubyte",  # not 28 x 28
                         idx_files.idx_bytes(np.zeros((4, 32, 32), np.uint8)))
    idx_files.write_file(folder / f"{prefix}-labels-idx1-ubyte",
                         idx_files.idx_bytes(np.zeros(4, np.uint8)))
  with pytest.raises(data_lib.DataError, match=r"expected \(28, 28, 1\)"):
    data_lib.prepare("mnist", str(folder), home=str(tmp_path / "h"))
  assert not (tmp_path / "h").exists()


def test_missing_dataset_says_how_to_prepare_it(tmp_path, monkeypatch):
  monkeypatch.setenv("BYZJAX_DATA_DIR", str(tmp_path / "empty"))
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  with pytest.raises(data_lib.DatasetNotFoundError) as err:
    data_lib.load("fashion_mnist")
  text = str(err.value)
  assert "byzjax data prepare fashion_mnist --from DIR" in text
  assert "needs TensorFlow" in text and "pip install tensorflow" in text


def test_tfds_data_source_imports():
  # tfds.data_source needs importlib_resources, which tfds does not declare.
  import importlib_resources  # noqa: F401
  import tensorflow_datasets as tfds
  assert callable(tfds.data_source)


# ---------------------------------------------------------------------------
# DataFrames, TensorBoard, W&B.


def test_to_dataframe_is_tidy(finished):
  out, results = finished
  df = results.to_dataframe()
  # 4 runs x 2 seeds x (1 + 2) evaluations, with the varied settings.
  assert len(df) == 4 * 2 * 3
  assert {"run_id", "aggregator", "attack", "seed", "step",
          "test_accuracy"} <= set(df.columns)
  record = results.records[0]
  mine = df[(df.run_id == record.run_id) & (df.seed == record.seed)]
  assert mine.step.tolist() == record.result.eval_steps
  assert mine.test_accuracy.tolist() == record.result.test_accuracy
  rounds = results.to_dataframe("rounds")
  assert len(rounds) == 4 * 2 * 4 and rounds["round"].max() == 4
  # The same rows as the CSV byzjax writes.
  import pandas as pd
  csv = pd.read_csv(os.path.join(out, "evaluations.csv"))
  assert len(csv) == len(df)
  np.testing.assert_allclose(csv.test_accuracy, df.test_accuracy)


def test_tensorboard_events_read_back(finished):
  from tensorboard.backend.event_processing.event_accumulator import (
      EventAccumulator)
  out, results = finished
  for record in results.records:
    events = EventAccumulator(os.path.join(out, "logs", record.run_id,
                                           f"seed-{record.seed}"))
    events.Reload()
    accuracy = events.Scalars("test/accuracy")
    assert [e.step for e in accuracy] == record.result.eval_steps
    np.testing.assert_allclose([e.value for e in accuracy],
                               record.result.test_accuracy, rtol=1e-6)
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]
    np.testing.assert_allclose([e.value for e in loss], record.result.loss,
                               rtol=1e-6)
    # Not computed here (diagnostics off; no eta for these attacks): skipped.
    assert "robustness/byzantine_influence" not in events.Tags()["scalars"]


def test_wandb_gets_one_run_per_seed(monkeypatch, tmp_path):
  calls = []

  class Run:
    def __init__(self, **kwargs):
      self.kwargs, self.logged, self.finished = kwargs, [], False
      calls.append(self)

    def log(self, scalars, step):
      self.logged.append((step, dict(scalars)))

    def finish(self):
      self.finished = True

  fake = types.ModuleType("wandb")
  fake.init = lambda **kwargs: Run(**kwargs)
  # Imported already: find_spec answers from sys.modules.
  fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
  monkeypatch.setitem(sys.modules, "wandb", fake)
  results = train.train(BASE.replace(seeds=(1, 2), aggregator="median"),
                        log=["wandb"], log_dir=str(tmp_path), progress=False)
  assert [c.kwargs["name"] for c in calls] == ["median-sign_flip/seed-1",
                                               "median-sign_flip/seed-2"]
  for run, result in zip(calls, results):
    assert run.finished and run.kwargs["config"]["seed"] == result.seed
    assert run.kwargs["config"]["aggregator"] == "median"
    steps = [s for s, _ in run.logged]
    assert steps == sorted(steps)  # W&B needs non-decreasing steps
    accuracy = [(s, v["test/accuracy"]) for s, v in run.logged
                if "test/accuracy" in v]
    assert accuracy == list(zip(result.eval_steps, result.test_accuracy))


def test_log_needs_its_package(monkeypatch, tmp_path):
  real = importlib.util.find_spec
  monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: (
      None if name == "tensorboardX" else real(name, *a)))
  with pytest.raises(ex.GridError, match=r"pip install 'byzjax\[tensorboard\]'"):
    ex.run_grid(GRID, str(tmp_path / "o"), progress=False, log=["tensorboard"])
  assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------
# Tables and plots.


def _tex_cells(line):
  """A tabular row's cells (split on unescaped &)."""
  return re.split(r"(?<!\\)&", line.rstrip().removesuffix("\\\\"))


def test_latex_table_is_well_formed(finished):
  out, _ = finished
  tex = open(os.path.join(out, "table.tex"), encoding="utf-8").read()
  body = [l for l in tex.splitlines() if l and not l.startswith("%")]
  assert body[0].startswith("\\begin{tabular}{l") and body[-1] == "\\end{tabular}"
  columns = len(re.match(r"\\begin\{tabular\}\{(\w+)\}", body[0]).group(1))
  rows = [l for l in body if l.endswith("\\\\")]
  assert rows[0].startswith("aggregator \\textbackslash{} attack &")
  for line in rows:
    assert len(_tex_cells(line)) == columns, line
    # No unescaped special character outside math mode.
    text = re.sub(r"\$\\pm\$", "", line.removesuffix("\\\\"))
    text = re.sub(r"\\(textbackslash|textcolor|quad)\b|\\[&%$#_{}]", "", text)
    text = re.sub(r"\{gray\}|[{}]", "", text)
    assert not re.search(r"[&%$#_\\^~]", text.replace("&", "")), line
  depth = 0
  for ch in re.sub(r"\\[{}]", "", tex):
    depth += {"{": 1, "}": -1}.get(ch, 0)
    assert depth >= 0
  assert depth == 0


def test_tex_escapes_every_special_character():
  from byzjax import results
  assert results.tex_escape("a\\b_c{d}~e^f&g%h$i#j ±") == (
      "a\\textbackslash{}b\\_c\\{d\\}\\textasciitilde{}e\\textasciicircum{}f"
      "\\&g\\%h\\$i\\#j $\\pm$")


def test_partial_report_says_over_how_many_attacks(finished, tmp_path):
  out, results = finished
  missing = [r for r in results.records if r.settings["aggregator"] == "median"
             and r.settings["attack"] == "label_flip"]
  partial = ex.GridResults(results.grid, results.runs,
                           [r for r in results.records if r not in missing])
  md = ex.format_markdown(partial.tables())
  rows = {l.split("|")[1].strip(): l for l in md.splitlines()
          if l.startswith("| C")}
  assert "; 1 of 2)" in rows["CWMed"] and "of 2" not in rows["CWTM"]
  assert '"k of 2": over the k attacks saved so far; 1 row(s) incomplete' in md
  assert "population std" in md


def test_aggregate_error_axis_holds_every_panel(finished):
  _, results = finished
  records = list(results.records)
  # Make one panel's curve much smaller than the other's (the notebook's
  # Average under SF fell below the floor taken from the last panel).
  small = [r._replace(result=dataclasses.replace(r.result,
      aggregate_error=[v * 1e-4 for v in r.result.aggregate_error]))
      for r in records if r.settings["aggregator"] == "trimmed_mean"]
  records = small + [r for r in records
                     if r.settings["aggregator"] != "trimmed_mean"]
  fig = plots.aggregate_error_figure(records)
  for ax in fig.axes:
    if not ax.get_visible():
      continue
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "log"
    for line in ax.get_lines():
      y = np.asarray(line.get_ydata())
      assert low <= y.min() and y.max() <= high, (ax.get_title(), low, high)


# ---------------------------------------------------------------------------
# Progress.


def test_train_shows_a_bar_only_when_asked_or_watched(capsys):
  config = BASE.replace(steps=2, eval_every=1)
  train.train(config)  # captured stderr is not a terminal: no bar
  assert "round" not in capsys.readouterr().err
  train.train(config, progress=True)
  assert "2/2" in capsys.readouterr().err
