"""The public extension API: a user's own rule, pre-aggregation and attack
(``examples/plugin.py``: plain functions over (n, d) arrays, public imports
only) run through ``train.train``, ``run_grid`` and the ``byzjax`` command;
and unknown hyperparameters are refused with the valid ones."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import aggregators
from byzjax import attacks
from byzjax import cli
from byzjax import experiments as ex
from byzjax import preaggregators
from byzjax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(ROOT, "examples", "plugin.py")
CONFIG = train.RunConfig(
    dataset="digits", model="logistic_regression", n=7, f=2, split="iid",
    alpha=None, aggregator="norm_equalize+phocas", attack="scaled_sign_flip",
    attack_args={"scale": 3.0}, steps=3, eval_every=1, batch_size=4,
    learning_rate=0.5, diagnostics=False)


@pytest.fixture(scope="module")
def plugin():
  return cli.load_plugin(PLUGIN)


def phocas_reference(x, f):
  """Per coordinate, the mean of the n - f values nearest the trimmed mean."""
  n = len(x)
  out = []
  for column in x.T.astype(np.float64):
    trimmed = np.sort(column)[f:n - f].mean()
    nearest = column[np.argsort(np.abs(column - trimmed), kind="stable")[:n - f]]
    out.append(nearest.mean())
  return np.array(out)


def test_plugin_rules_compute_their_definitions(plugin):
  assert cli.load_plugin(PLUGIN) is plugin  # loading twice is harmless
  rng = np.random.default_rng(0)
  x = rng.normal(size=(7, 30)).astype(np.float32)
  x[5:] = 40.0  # two outliers
  got = np.asarray(aggregators.get("phocas")(jnp.asarray(x), f=2))
  np.testing.assert_allclose(got, phocas_reference(x, 2), rtol=1e-5, atol=1e-6)
  eq = np.asarray(preaggregators.get("norm_equalize")(jnp.asarray(x), f=2))
  norms = np.linalg.norm(x, axis=1)
  np.testing.assert_allclose(np.linalg.norm(eq, axis=1),
                             np.full(7, np.median(norms)), rtol=1e-5)
  composed = aggregators.compose("norm_equalize+phocas", f=2, n=7)
  np.testing.assert_allclose(np.asarray(composed(jnp.asarray(x))),
                             phocas_reference(eq, 2), rtol=1e-5, atol=1e-6)
  attack = attacks.make("scaled_sign_flip", f=2, scale=3.0)
  out, _ = attack.update(jnp.asarray(x), attack.init(x, key=jax.random.key(0)))
  np.testing.assert_array_equal(np.asarray(out)[:5], x[:5])
  np.testing.assert_allclose(np.asarray(out)[5:],
                             np.tile(-3.0 * x[:5].mean(0), (2, 1)), rtol=1e-5)


def test_plugin_runs_in_train_and_in_grids(plugin, tmp_path):
  alone = train.train(CONFIG.replace(seeds=(2,)))[0]
  assert np.isfinite(alone.loss).all()
  grid = ex.Grid("plugin", CONFIG, axes={
      "aggregator": ["phocas", "norm_equalize+phocas"],
      "attack": ["scaled_sign_flip"]}, seeds=(2,))
  results = ex.run_grid(grid, str(tmp_path / "grid"), progress=False,
                        plots=False)
  record = next(r for r in results.records
                if r.settings["aggregator"] == "norm_equalize+phocas")
  assert record.result.loss == alone.loss  # same numbers on both paths
  text = ex.format_markdown(results.tables())
  assert "NormEq + Phocas" in text and " SSF |" in text


def test_plugin_through_the_command_line(tmp_path):
  out = str(tmp_path / "cli")
  proc = subprocess.run(
      [sys.executable, "-m", "byzjax.cli", "run", "--plugin", PLUGIN,
       "--dataset", "digits", "--model", "logistic_regression", "--n", "7",
       "--f", "2", "--split", "iid", "--steps", "2", "--eval-every", "1",
       "--batch-size", "4", "--agg", "phocas", "norm_equalize+phocas",
       "--attack", "scaled_sign_flip", "--no-baseline", "--no-plots",
       "--no-compile-cache", "--no-progress", "--out", out],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  table = [l for l in proc.stdout.splitlines() if l.startswith("|")]
  assert [l.split("|")[1].strip() for l in table[2:]] == [
      "Phocas", "NormEq + Phocas"]
  assert "SSF" in table[0]
  # report needs the plugin too, to read the tables back
  assert cli.main(["report", out, "--no-plots", "--plugin", PLUGIN]) == 0


def test_bad_plugin_is_one_line(tmp_path, capsys):
  assert cli.main(["run", "--plugin", str(tmp_path / "missing.py")]) == 2
  assert "no such file" in capsys.readouterr().err
  broken = tmp_path / "broken.py"
  broken.write_text("raise RuntimeError('oops')\n")
  assert cli.main(["run", "--plugin", str(broken)]) == 2
  assert "failed to import: RuntimeError: oops" in capsys.readouterr().err


@pytest.mark.parametrize("changes,message", [
    ({"aggregator": "krum", "aggregator_args": {"krum": {"neighbors": 5}}},
     r"krum got unknown hyperparameter\(s\) 'neighbors' \(did you mean "
     r"'neighbours'\?\); valid: neighbours"),
    ({"attack": "optimized_alie", "attack_args": {"eta_max": 3.0}},
     r"attack 'optimized_alie' got unknown hyperparameter\(s\) 'eta_max'.*"
     r"valid: evals, start, delta, ratio, ddof, knows_server_randomness"),
    ({"model": "mlp", "model_args": {"hidden": (3,)}},
     r"model 'mlp' got unknown hyperparameter\(s\) 'hidden'.*valid: "
     r"hidden_sizes"),
])
def test_unknown_hyperparameters_name_the_valid_ones(changes, message):
  base = {"aggregator": "trimmed_mean", "attack": "sign_flip",
          "attack_args": {}}
  with pytest.raises(ValueError, match=message):
    train.Experiment(CONFIG.replace(**{**base, **changes}))


def test_registration_reads_every_hyperparameter_or_refuses_at_once():
  import byzjax  # pylint: disable=g-import-not-at-top

  # A hyperparameter written positional-or-keyword is still one.
  @byzjax.aggregator("scaled_mean_for_test")
  def scaled_mean(x, f, scale=2.0):
    del f
    return scale * jnp.mean(x, axis=0)

  assert scaled_mean.hyperparameters == {"scale": 2.0}
  x = jnp.arange(12.0).reshape(4, 3)
  np.testing.assert_allclose(scaled_mean(x, f=1, scale=3.0),
                             3.0 * np.mean(np.arange(12.0).reshape(4, 3), 0))
  with pytest.raises(ValueError, match="valid: scale"):
    scaled_mean(x, f=1, scal=3.0)
  # One byzjax cannot pass by name is refused where it is written.
  with pytest.raises(ValueError, match=r"parameter 'scale' cannot be passed "
                     r"by keyword.*def positional_for_test\(x, \*, f, scale=\.\.\.\)"):
    @byzjax.aggregator("positional_for_test")
    def positional(x, scale, /, f):  # pylint: disable=unused-variable
      return scale * x[0]
