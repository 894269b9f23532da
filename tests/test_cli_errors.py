"""Every failure a user can cause or meet gives one line on stderr naming the
value or file and what would be valid, exit status 2, before any training,
and leaves no partial file (issue 15's list, case by case)."""

import errno
import glob
import gzip
import json
import os
import stat

import pytest

from byzjax import cli
from byzjax import files

TINY = ["--dataset", "digits", "--model", "logistic_regression", "--n", "5",
        "--f", "1", "--split", "iid", "--steps", "2", "--eval-every", "1",
        "--batch-size", "4", "--no-compile-cache", "--no-plots",
        "--no-progress", "--agg", "trimmed_mean", "--attack", "sign_flip",
        "--no-baseline"]
MNIST = ["--dataset", "mnist", "--model", "logistic_regression", "--n", "5",
         "--f", "1", "--split", "iid", "--steps", "2", "--no-compile-cache",
         "--no-plots", "--no-progress", "--agg", "mean", "--attack",
         "sign_flip", "--no-baseline"]


def _file(tmp):
  path = tmp / "a_file"
  path.write_text("x")
  return str(path)


def _garbage_idx(tmp):
  folder = tmp / "idx"
  folder.mkdir()
  for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
    (folder / f"{name}.gz").write_bytes(b"<html>not found</html>")
  return str(folder)


def _truncated_idx(tmp):
  folder = tmp / "idx"
  folder.mkdir()
  header = bytes([0, 0, 8, 3]) + (60000).to_bytes(4, "big") + (28).to_bytes(
      4, "big") * 2
  for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
    with gzip.open(folder / f"{name}.gz", "wb") as fh:
      fh.write(header + bytes(100))
  for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
    with gzip.open(folder / f"{name}.gz", "wb") as fh:
      fh.write(bytes([0, 0, 8, 1]) + (60000).to_bytes(4, "big") + bytes(60000))
  return str(folder)


def _damaged_tfds(tmp):
  version = tmp / "tfds" / "mnist" / "3.0.1"
  version.mkdir(parents=True)
  (version / "dataset_info.json").write_text("{not json")
  for split in ("train", "test"):
    (version / f"mnist-{split}.array_record-00000-of-00001").write_bytes(b"xx")
  return str(tmp / "tfds")


def _folder(tmp):
  (tmp / "settings").mkdir()
  return str(tmp / "settings")


def _iid_grid(tmp):
  (tmp / "settings").mkdir()
  path = tmp / "settings" / "grid.json"
  path.write_text(json.dumps({
      "name": "iid-grid",
      "base": {"dataset": "digits", "model": "logistic_regression", "n": 5,
               "f": 1, "split": "iid", "alpha": None, "steps": 2},
      "axes": {"aggregator": ["median"], "attack": ["sign_flip"]}}))
  return str(path)


# (id, argv builder (tmp -> argv), expected text in the one line)
CASES = [
    ("out-under-a-file", lambda t: ["run", *TINY, "--out", _file(t) + "/sub"],
     "cannot write into output folder"),
    ("out-is-a-file", lambda t: ["run", *TINY, "--out", _file(t)],
     "is a file; pass a folder"),
    ("out-cannot-exist", lambda t: ["run", *TINY, "--out", "/proc/self/x/y"],
     "cannot write into output folder '/proc/self/x/y'"),
    ("data-dir-not-gzip", lambda t: ["run", *MNIST, "--data-dir",
                                     _garbage_idx(t), "--out", str(t / "o")],
     "train-images-idx3-ubyte.gz' cannot be read as a gzipped IDX file"),
    ("data-dir-truncated", lambda t: ["run", *MNIST, "--data-dir",
                                      _truncated_idx(t), "--out", str(t / "o")],
     "a truncated file?"),
    ("damaged-tfds", lambda t: ["run", *MNIST, "--data-dir", _damaged_tfds(t),
                                "--out", str(t / "o")],
     "the tensorflow-datasets copy"),
    ("data-missing", lambda t: ["run", *MNIST, "--data-dir", _folder(t),
                                "--out", str(t / "o")],
     "byzjax data prepare mnist --from DIR"),
    ("config-is-a-folder", lambda t: ["run", "--config", _folder(t)],
     "is a folder; expected a .json or .toml file"),
    ("config-missing", lambda t: ["run", "--config", str(t / "nope.toml")],
     "no such file"),
    ("sweep-config-is-a-folder", lambda t: ["sweep", _folder(t)],
     "is a folder; give a grid config file"),
    ("bad-json", lambda t: ["run", *TINY, "--set",
                            'aggregator_args={"krum": {', "--out", str(t / "o")],
     "--set aggregator_args={\"krum\": {: not valid JSON"),
    ("alpha-axis-with-iid", lambda t: ["run", *TINY, "--alpha", "0.1", "1",
                                       "--out", str(t / "o")],
     "--alpha 0.1 1.0: alpha is read only by the Dirichlet splits"),
    ("alpha-with-iid", lambda t: ["run", *TINY, "--alpha", "0.5",
                                  "--out", str(t / "o")],
     "and this run uses split 'iid'; drop --alpha"),
    ("sweep-alpha-with-iid", lambda t: ["sweep", _iid_grid(t), "--set",
                                        "alpha=0.5", "--out", str(t / "o")],
     "alpha=0.5: alpha is read only by the Dirichlet splits (dirichlet, "
     "dirichlet_per_worker), and every run of grid 'iid-grid' uses split 'iid'"),
    ("data-dir-with-digits", lambda t: ["run", *TINY, "--data-dir", str(t),
                                        "--out", str(t / "o")],
     "is not read by dataset 'digits'"),
    ("abbreviated-flag", lambda t: ["run", *TINY, "--step", "3"],
     "unrecognized arguments: --step 3"),
    ("unknown-log", lambda t: ["run", *TINY, "--log", "mlflow"],
     "argument --log: invalid choice: 'mlflow'"),
    ("runs-not-dividing", lambda t: ["run", *TINY, "--runs", "3", "--out",
                                     str(t / "o")],
     "runs=3 must divide the 1 device(s) used: one of 1"),
    ("devices-too-many", lambda t: ["run", *TINY, "--devices", "9", "--out",
                                    str(t / "o")],
     "devices=9 but only 1 device(s) are visible: from 1 to 1"),
    ("runs-zero", lambda t: ["run", *TINY, "--runs", "0", "--out",
                             str(t / "o")],
     "argument --runs: must be an int >= 1, got '0'"),
    ("checkpoint-every-negative", lambda t: ["sweep", _iid_grid(t),
                                             "--checkpoint-every", "-1",
                                             "--out", str(t / "o")],
     "argument --checkpoint-every: must be a number >= 0, got '-1'"),
    ("unknown-command", lambda t: ["rn", "--steps", "2"],
     "unknown command 'rn' (did you mean 'run'?); one of demo, run"),
    ("prepare-missing", lambda t: ["data", "prepare", "mnist", "--from",
                                   _folder(t), "--to", str(t / "home")],
     "holds no IDX files"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_one_line_exit_2_nothing_written(case, tmp_path, capsys):
  name, argv, expected = case
  argv = argv(tmp_path)
  before = sorted(p.name for p in tmp_path.iterdir())
  try:
    status = cli.main(argv)
  except SystemExit as exit_:  # argparse's own errors
    status = exit_.code
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.strip()
           and not l.startswith("grid run:")]
  assert status == 2, err
  assert len(lines) == 1, err
  assert "Traceback" not in err
  assert expected in lines[0], lines[0]
  # Nothing half-written: no output folder, no temporary file.
  assert not (tmp_path / "o").exists()
  assert not (tmp_path / "home" / "mnist").exists()
  after = sorted(p.name for p in tmp_path.iterdir())
  assert set(after) - set(before) <= {"a_file", "idx", "tfds", "settings"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out(tmp_path, capsys):
  locked = tmp_path / "locked"
  locked.mkdir()
  locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
  try:
    assert cli.main(["run", *TINY, "--out", str(locked / "o")]) == 2
  finally:
    locked.chmod(stat.S_IRWXU)
  err = capsys.readouterr().err.strip()
  assert "cannot write into output folder" in err and "Permission denied" in err


def _enospc_for(predicate, monkeypatch):
  real = os.fsync

  def fsync(fd):
    if predicate(os.readlink(f"/proc/self/fd/{fd}")):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(fd)

  monkeypatch.setattr(os, "fsync", fsync)


def test_full_disk_at_start(tmp_path, capsys, monkeypatch):
  _enospc_for(lambda path: True, monkeypatch)
  out = tmp_path / "o"
  assert cli.main(["run", *TINY, "--out", str(out)]) == 2
  err = capsys.readouterr().err.strip()
  assert err == (f"byzjax run: error: cannot write into output folder "
                 f"{str(out)!r} (No space left on device); pass a folder you "
                 f"can write to (--out DIR, out_dir=...)")
  assert not out.exists()


def test_full_disk_while_saving_a_result(tmp_path, capsys, monkeypatch):
  _enospc_for(lambda path: f"{os.sep}results{os.sep}" in path, monkeypatch)
  out = tmp_path / "o"
  assert cli.main(["run", *TINY, "--out", str(out)]) == 2
  err = [l for l in capsys.readouterr().err.splitlines()
         if l.startswith("byzjax")]
  assert len(err) == 1 and err[0].startswith(
      "byzjax run: error: no space left on the device writing"), err
  assert "the same command resumes" in err[0]
  leftovers = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs
               if f.startswith(".tmp-") or f.endswith(".json.tmp")]
  assert not leftovers
  assert not any(f for _, _, fs in os.walk(out / "results") for f in fs)


def test_files_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    with files.atomic_open(str(tmp_path / "a.txt")) as fh:
      fh.write("x")
    os.umask(0o077)
    with files.atomic_open(str(tmp_path / "b.bin"), "wb") as fh:
      fh.write(b"x")
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o644
  assert stat.S_IMODE(os.stat(tmp_path / "b.bin").st_mode) == 0o600


def test_unusable_compilation_cache_warns_and_trains(tmp_path, capsys,
                                                     monkeypatch):
  cache = _file(tmp_path)  # $BYZJAX_CACHE_DIR naming a file
  monkeypatch.setenv("BYZJAX_CACHE_DIR", cache)
  argv = [a for a in TINY if a != "--no-compile-cache"]
  assert cli.main(["run", *argv, "--out", str(tmp_path / "o")]) == 0
  err = [l for l in capsys.readouterr().err.splitlines() if "cache" in l]
  assert err == [f"byzjax: warning: the compilation cache {cache!r} cannot be "
                 f"used (File exists); training without it (set "
                 f"BYZJAX_CACHE_DIR to a writable folder, or pass "
                 f"--no-compile-cache)"]
  assert (tmp_path / "o" / "table.md").exists()


def test_no_progress_still_names_the_devices_and_a_partial_table(
    tmp_path, capsys):
  out = str(tmp_path / "o")
  assert cli.main(["run", *TINY, "--seeds", "1", "2", "--out", out]) == 0
  err = capsys.readouterr().err.splitlines()
  assert "grid run: one cpu device (1 process(es)), no mesh" in err
  # A seed's result is lost (or another process still trains it): the
  # table says so, cell by cell, and so does the line after it.
  os.remove(glob.glob(os.path.join(out, "results", "*", "seed-2.json"))[0])
  assert cli.main(["report", out, "--no-plots"]) == 0
  text = capsys.readouterr().out
  assert "(1 of 2 seeds)" in text and "PARTIAL" in text
  assert "1 of 2 results in" in text
  # --out: the report goes elsewhere, the folder is left as it is.
  before = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(out, "*"))}
  other = str(tmp_path / "report")
  assert cli.main(["report", out, "--no-plots", "--out", other]) == 0
  assert "(1 of 2 seeds)" in open(os.path.join(other, "table.md")).read()
  assert {p: os.path.getmtime(p) for p in glob.glob(os.path.join(out, "*"))} == before


def test_accelerator_extras_are_jaxs_own():
  """`pip install 'byzjax[cuda12]'` (cuda13, tpu, cuda) pulls jax's own
  accelerator extra, as the README and `byzjax info` say."""
  tomllib = pytest.importorskip("tomllib")  # Python 3.11+
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, "pyproject.toml"), "rb") as fh:
    extras = tomllib.load(fh)["project"]["optional-dependencies"]
  for name, jax_extra in (("cuda12", "cuda12"), ("cuda13", "cuda13"),
                          ("tpu", "tpu"), ("cuda", "cuda12")):
    assert extras[name] == [f"jax[{jax_extra}]>=0.4.30"], name


def test_version(capsys):
  assert cli.main(["--version"]) == 0
  out = capsys.readouterr().out.strip()
  import byzjax
  assert out.startswith(f"byzjax {byzjax.__version__} (jax ")


def test_info_names_the_backend_devices_and_cpu(capsys):
  from byzjax import provenance
  assert cli.main(["info"]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0] == cli.version_text()
  assert out[1] == "backend: cpu; 1 device(s) (cpu) over 1 process(es); 1 on this process"
  assert out[2] == "environment: " + provenance.environment_text(
      provenance.environment())
  assert "byzjax[cuda12]" in out[-1]


def test_grid_refuses_an_alpha_axis_its_split_ignores():
  from byzjax import experiments as ex
  from byzjax import train
  base = train.RunConfig(dataset="digits", model="mlp", n=5, f=1, split="iid",
                         steps=2)
  grid = ex.Grid("g", base, axes={"alpha": [0.1, 1.0]})
  with pytest.raises(ex.GridError, match=r"split 'iid' ignores it"):
    ex.check(grid)
  ex.check(grid.override(split="dirichlet"))  # read there: fine


def test_grid_refuses_an_alpha_override_no_run_reads():
  from byzjax import experiments as ex
  from byzjax import train
  base = train.RunConfig(dataset="digits", model="mlp", n=5, f=1, split="iid",
                         steps=2)
  grid = ex.Grid("g", base, axes={"aggregator": ["median", "krum"]})
  with pytest.raises(ValueError, match=r"every run of grid 'g' uses split 'iid'"):
    grid.override(alpha=0.3)
  assert grid.override(alpha=None).base.alpha is None
  mixed = ex.Grid("m", base, axes={"split": ["iid", "dirichlet"]})
  assert mixed.override(alpha=0.3).base.alpha == 0.3  # the Dirichlet runs read it
  assert grid.override(split="dirichlet", alpha=0.3).base.alpha == 0.3
