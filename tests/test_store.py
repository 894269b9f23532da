"""Grids over processes and hosts: per-run claims, shards, checkpoints inside
a run (a SIGKILL mid-run resumes with the same numbers), folders that grow
with their grid, and recovery of a lost grid.json or a damaged result."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from byzjax import experiments as ex
from byzjax import grid as grid_lib
from byzjax import claims
from byzjax import provenance
from byzjax import store
from byzjax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = train.RunConfig(
    dataset="digits", model="logistic_regression", n=5, f=1, split="iid",
    alpha=None, steps=3, eval_every=1, batch_size=4, learning_rate=0.5,
    attack="sign_flip", diagnostics=False)
GRID = ex.Grid("share", BASE, axes={
    "aggregator": ["trimmed_mean", "median", "nnm+trimmed_mean"]}, seeds=(1, 2))
CURVES = ("test_accuracy", "loss", "aggregate_error", "kappa_hat", "eta")

# A process that trains GRID (or its shard) into a folder and prints, one
# JSON line each, the (run, seed) pairs it trained.
WORKER = """
import json, sys
from byzjax import experiments as ex
from byzjax import grid as grid_lib
sys.path.insert(0, sys.argv[3])
from test_store import GRID
shard = ex.shard_of(sys.argv[2]) if sys.argv[2] != "-" else None
ex.run_grid(GRID, sys.argv[1], progress=False, plots=False, shard=shard,
            on_result=lambda r: print(json.dumps([r.run_id, r.seed]), flush=True))
"""


def _curves(results):
  return {(r.run_id, r.seed): json.dumps({k: getattr(r.result, k) for k in CURVES})
          for r in results.records}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("one_process"))
  return _curves(ex.run_grid(GRID, out, progress=False, plots=False))


def _child_env():
  """The environment of a child process that imports this checkout's byzjax."""
  return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _workers(out, shards):
  env = _child_env()
  procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WORKER), out,
                             shard, os.path.join(ROOT, "tests")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT) for shard in shards]
  trained = []
  for p in procs:
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stderr[-3000:]
    trained.append([tuple(json.loads(l)) for l in stdout.splitlines() if l.startswith("[")])
  return trained


def test_two_shards_fill_one_folder_like_one_process(reference, tmp_path):
  out = str(tmp_path / "sharded")
  first, second = _workers(out, ["0/2", "1/2"])
  everything = sorted(reference)
  assert sorted(first + second) == everything  # every (run, seed) once
  assert not set(first) & set(second)
  assert len(first) == 3 and len(second) == 3  # an even split
  assert _curves(ex.load_grid_results(out, GRID)) == reference
  assert not glob.glob(os.path.join(out, "claims", "*", "*.claim"))


def test_three_processes_on_one_folder_train_each_run_once(reference, tmp_path):
  out = str(tmp_path / "shared")
  trained = _workers(out, ["-", "-", "-"])
  flat = [k for t in trained for k in t]
  assert sorted(flat) == sorted(reference)  # exactly once each
  assert _curves(ex.load_grid_results(out, GRID)) == reference
  assert os.path.isfile(os.path.join(out, "table.md"))  # the last one wrote it


def test_claims_exclude_and_dead_owners_are_replaced(tmp_path):
  out = str(tmp_path)
  mine = claims.claim(out, "run", 1)
  assert mine is not None
  assert claims.claim(out, "run", 1) is None  # held by a live process (us)
  claims.release(mine)
  again = claims.claim(out, "run", 1)
  assert again is not None
  # A claim whose process is gone is taken over.
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  with open(again.path, "w", encoding="utf-8") as fh:
    json.dump({"host": os.uname().nodename, "pid": dead.pid, "started": 0}, fh)
  assert claims.claim(out, "run", 1) is not None
  # Another host's claim is live while its heartbeat is fresh.
  other = claims.claim(out, "run", 2)
  with open(other.path, "w", encoding="utf-8") as fh:
    json.dump({"host": "elsewhere", "pid": 1, "started": 0}, fh)
  assert claims.claim(out, "run", 2, stale_after=60) is None
  past = time.time() - 120
  os.utime(other.path, (past, past))
  assert claims.claim(out, "run", 2, stale_after=60) is not None


KILLED = """
import sys
from byzjax import experiments as ex, train
config = train.RunConfig(
    dataset="digits", model="mlp", model_args={"hidden_sizes": (32,)}, n=5, f=1,
    split="iid", alpha=None, aggregator="nnm+trimmed_mean",
    attack="optimized_alie", attack_args={"evals": 4}, steps=int(sys.argv[2]),
    eval_every=2, batch_size=4, learning_rate=0.5, diagnostics=False)
grid = ex.Grid("killed", config, axes={"aggregator": ["nnm+trimmed_mean"]})
ex.run_grid(grid, sys.argv[1], progress=False, plots=False,
            checkpoint_seconds=float(sys.argv[3]))
"""


def _start(out, steps, every):
  return subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED), out,
                           str(steps), str(every)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=_child_env(),
                          cwd=ROOT)


def test_a_run_killed_mid_way_resumes_from_its_checkpoint(tmp_path):
  steps = 400
  whole = str(tmp_path / "whole")
  proc = _start(whole, steps, 1e-3)
  assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
  killed = str(tmp_path / "killed")
  proc = _start(killed, steps, 1e-3)  # a checkpoint after every evaluation
  deadline = time.time() + 600
  pattern = os.path.join(killed, "checkpoints", "*", "seeds-1", "*")
  while not glob.glob(pattern) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.2)
  time.sleep(1.0)  # a few more checkpoints
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not glob.glob(os.path.join(killed, "results", "*", "*.json")), \
      "the run finished before it could be killed"
  saved = sorted(int(os.path.basename(p)) for p in glob.glob(pattern)
                 if os.path.basename(p).isdigit())
  assert saved and saved[-1] < steps // 2  # chunks done < all chunks
  proc = _start(killed, steps, 1e-3)  # the same command again
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  # It says so, on a line of its own (eval_every = 2 rounds per chunk).
  assert (f"grid killed: NNM + CWTM, seed(s) 1: resumed from the "
          f"checkpoint at round {2 * saved[-1]}") in err.splitlines(), err[-3000:]
  a = ex.load_grid_results(whole).records
  b = ex.load_grid_results(killed).records
  assert len(a) == len(b) == 1
  for k in CURVES + ("byzantine_influence", "learning_rate"):
    assert getattr(a[0].result, k) == getattr(b[0].result, k), k  # bit for bit
  assert not glob.glob(os.path.join(killed, "checkpoints", "*", "*"))


def test_a_folder_grows_with_its_grid(reference, tmp_path):
  out = str(tmp_path / "grows")
  small = GRID.replace(axes={"aggregator": ["trimmed_mean", "median"]}, seeds=(1,))
  ex.run_grid(small, out, progress=False, plots=False)
  # One result as byzjax before the ids left the seeds out saved it.
  run = ex.expand(small)[0]
  older = f"{run.id.rsplit('-', 1)[0]}-{grid_lib.digest(grid_lib.identity(run.config))}"
  assert older != run.id
  os.rename(os.path.join(out, "results", run.id),
            os.path.join(out, "results", older))
  trained = []
  results = ex.run_grid(GRID, out, progress=False, plots=False,
                        on_result=lambda r: trained.append((r.run_id, r.seed)))
  assert len(trained) == 4  # a new rule (2 seeds) + seed 2 of the old ones
  assert _curves(results) == reference
  # A setting that changes every run is refused, with a way forward.
  with pytest.raises(ex.GridMismatchError) as err:
    ex.run_grid(GRID.override(steps=4), out, progress=False, plots=False)
  assert "steps: 3 -> 4" in str(err.value)
  assert "another output folder" in str(err.value)


def test_lost_grid_json_and_damaged_results_are_recovered(reference, tmp_path):
  out = str(tmp_path / "damaged")
  ex.run_grid(GRID, out, progress=False, plots=False)
  os.remove(os.path.join(out, "grid.json"))
  # Tables from the result files alone (each carries its config).
  assert len(ex.load_grid_results(out).records) == 6
  victim = sorted(glob.glob(os.path.join(out, "results", "*", "seed-1.json")))[0]
  with open(victim, "w", encoding="utf-8") as fh:
    fh.write('{"truncated')
  lines, trained = [], []

  class Stream:
    def write(self, text):
      lines.append(text)

    def flush(self):
      pass

  results = ex.run_grid(GRID, out, progress=True, plots=False, stream=Stream(),
                        on_result=lambda r: trained.append(r.run_id))
  text = "".join(lines)
  assert "grid.json was missing or damaged: rebuilt" in text
  assert f"damaged result file {os.path.relpath(victim, out)}" in text
  assert trained == [os.path.basename(os.path.dirname(victim))]
  assert _curves(results) == reference
  assert os.path.isfile(victim + ".damaged")


def test_each_result_records_the_environment_its_rounding_depends_on(tmp_path):
  out = str(tmp_path / "env")
  ex.run_grid(GRID, out, progress=False, plots=False)
  for path in glob.glob(os.path.join(out, "results", "*", "seed-*.json")):
    with open(path, encoding="utf-8") as fh:
      env = json.load(fh)["environment"]
    assert env == provenance.environment()
    assert env["cpu_threads"] == len(os.sched_getaffinity(0))
  assert list(store.saved_environments(out).values()) == [6]
  # The CPU threads follow the cores the process may run on (taskset).
  code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
          "from byzjax import provenance; print(provenance.environment()['cpu_threads'])")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, env=_child_env(), cwd=ROOT, timeout=300,
                        check=True)
  assert done.stdout.split()[-1] == "1"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_results_record_the_git_commit_of_the_byzjax_source(tmp_path):
  repo = tmp_path / "repo"
  pkg = repo / "pkg"
  pkg.mkdir(parents=True)
  (pkg / "mod.py").write_text("x = 1\n")
  (repo / "notes.txt").write_text("a\n")

  def git(*args):
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
         *args], capture_output=True, text=True, check=True).stdout.strip()

  git("init", "-q")
  git("add", ".")
  git("commit", "-qm", "one")
  head = git("rev-parse", "HEAD")
  assert len(head) == 40
  assert provenance.source_commit(str(pkg)) == head
  # Changes outside the package, or untracked files in it, leave it clean.
  (repo / "notes.txt").write_text("b\n")
  (pkg / "new.py").write_text("y = 1\n")
  assert provenance.source_commit(str(pkg)) == head
  (pkg / "mod.py").write_text("x = 2\n")
  assert provenance.source_commit(str(pkg)) == head + "+dirty"
  # A package below the top of another repository (installed into a virtual
  # environment inside it) is not that repository's; nor one outside git.
  nested = repo / "venv" / "site-packages" / "pkg"
  nested.mkdir(parents=True)
  assert provenance.source_commit(str(nested)) is None
  assert provenance.source_commit(str(tmp_path / "plain" / "pkg")) is None
  # This process's byzjax: its checkout's commit, in every result file.
  here = provenance.source_commit(os.path.join(ROOT, "byzjax"))
  assert provenance.versions().get("byzjax_commit") == here
  assert provenance.environment().get("byzjax_commit") == here
  if os.path.isdir(os.path.join(ROOT, ".git")):
    assert here.split("+")[0] == subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
        text=True, check=True).stdout.strip()
  env = {"byzjax": "0.1.0", "byzjax_commit": head}
  assert provenance.source_text(env) == f"byzjax 0.1.0 at commit {head}"
  assert provenance.source_text(None) == "byzjax ?, source commit not recorded"


@pytest.mark.skipif(shutil.which("git") is None
                    or not os.path.isdir(os.path.join(ROOT, ".git")),
                    reason="needs git and a checkout")
def test_a_built_package_records_the_commit_it_was_built_from(tmp_path):
  # What `pip install .` runs: setup.py's build_py writes byzjax/_build.json.
  subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib",
                  str(tmp_path)], cwd=ROOT, check=True, capture_output=True,
                 timeout=300)
  built = str(tmp_path / "byzjax")
  assert os.path.isfile(os.path.join(built, "provenance.py"))
  here = provenance.source_commit(os.path.join(ROOT, "byzjax"))
  assert provenance.build_commit(built) == here
  # Outside a checkout the build's record is what versions() reports.
  assert provenance.source_commit(built) is None
  assert provenance.build_commit(str(tmp_path)) is None


def test_environment_names_the_cpu_and_its_instruction_set():
  env = provenance.environment()
  cpu = env["cpu"]
  assert set(cpu) == {"model", "id", "features"} and cpu["model"]
  text = provenance.environment_text(env)
  assert cpu["model"] in text and text.startswith("cpu x 1, 1 process(es)")
  # Two CPUs that differ only in one extension are different environments.
  other = dict(env, cpu=dict(cpu, features=sorted(cpu["features"] + ["amx_tile"])))
  assert provenance.environment_text(other) != text
  assert "amx_tile" in provenance.environment_text(other)
  assert provenance.environment_text(dict(env, cpu=None)).endswith(
      "CPU not recorded")
  flagged = dict(env, xla_flags="--xla_cpu_use_thunk_runtime=false",
                 env={"ONEDNN_MAX_CPU_ISA": "AVX2"})
  assert provenance.environment_text(flagged).endswith(
      "XLA_FLAGS=--xla_cpu_use_thunk_runtime=false ONEDNN_MAX_CPU_ISA=AVX2")
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
      flags = next((l.split(":", 1)[1].split() for l in fh
                    if l.startswith(("flags", "Features"))), [])
    assert set(cpu["features"]) <= set(flags)
    assert ("avx2" in flags) == ("avx2" in cpu["features"])
