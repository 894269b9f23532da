"""Tests of the analysis scripts committed beside experiment results
(experiments/results/*/*.py): their formulas against NumPy simulations and
worked examples, and their reports on a tiny grid trained here."""

import importlib.util
import os
import shutil
import types

import numpy as np
import pytest

from byzjax import experiments as ex
from byzjax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(*parts):
  path = os.path.join(ROOT, "experiments", "results", *parts)
  spec = importlib.util.spec_from_file_location(parts[-1][:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


slowdown = _script("aggregathor_slowdown", "slowdown.py")
faults = _script("cge_faults", "faults.py")
figure2 = _script("figure2_offline", "kappa.py")
claims = _script("table2_offline", "claims.py")
fraction = _script("cge_fraction", "fraction.py")
ablation = _script("table2_offline", "ablation.py")


def _kappa_hat(g, r):
  """Eq. (26) of Allouah et al. in float64: ||R - s|| / sqrt(mean ||g_i - s||^2)."""
  s = g.mean(axis=0)
  return np.linalg.norm(r - s) / np.sqrt(np.mean(np.sum((g - s) ** 2, axis=1)))


@pytest.mark.parametrize("m", [19, 16, 13, 9, 1])
def test_effective_estimators_of_a_random_subset_average_is_its_size(m):
  n, d, rounds = 19, 2_000, 400
  rng = np.random.default_rng(m)
  kappa = []
  for _ in range(rounds):
    g = rng.normal(size=(n, d)) + 3.0  # i.i.d. around a common gradient
    kappa.append(_kappa_hat(g, g[rng.permutation(n)[:m]].mean(axis=0)))
  result = types.SimpleNamespace(kappa_hat=kappa,
                                 config=types.SimpleNamespace(n=n))
  assert slowdown.effective_estimators(result) == pytest.approx(m, rel=0.02)


def test_m_tilde_of_the_theorems():
  assert [slowdown.m_tilde("multi_krum", 19, f) for f in (1, 2, 4)] == [
      16, 15, 13]
  assert [slowdown.m_tilde("bulyan", 19, f) for f in (1, 2, 4)] == [15, 13, 9]
  assert slowdown.m_tilde("mean", 19, 4) == 19
  with pytest.raises(ValueError, match="krum.*got 'cwtm'"):
    slowdown.m_tilde("cwtm", 19, 1)


def test_rounds_to_a_target_and_the_early_mean():
  result = types.SimpleNamespace(eval_steps=[0, 10, 20, 30, 40],
                                 test_accuracy=[0.1, 0.5, 0.92, 0.89, 0.96])
  assert slowdown.rounds_to(result, 0.90) == 20
  assert slowdown.rounds_to(result, 0.95) == 40
  assert slowdown.rounds_to(result, 0.99) == np.inf
  assert slowdown.early_mean(result, 30) == pytest.approx((0.5 + 0.92 + 0.89) / 3)


def test_slowdown_report_of_a_tiny_grid(tmp_path):
  base = train.RunConfig(
      dataset="digits", model="logistic_regression", n=7, f=0, split="iid",
      alpha=None, steps=2, eval_every=1, batch_size=4, learning_rate=0.5)
  grid = ex.Grid("slowdown_tiny", base,
                 axes={"aggregator": ["mean", "multi_krum"], "declared_f": [1]},
                 seeds=(1,), adjust=ex.aggregathor_multi_krum)
  out = str(tmp_path)
  ex.run_grid(grid, out, progress=False)
  text = slowdown.report(out)
  lines = text.splitlines()
  # One row per rule in each of the two tables.
  assert sum(l.startswith("| Averaging | - |") for l in lines) == 2
  table1 = [l for l in lines if l.startswith("| Multi-Krum | 1 |")]
  assert len(table1) == 2
  m_tilde, predicted = table1[0].split(" | ")[2:4]
  assert (m_tilde, predicted) == ("4", f"{np.sqrt(4 / 7):.3f}")
  assert "| Averaging | - | 7 | 1.000 | 0.0000 | 7.0 | 1.000 |" in text


def test_dives_of_a_worked_curve():
  # best-before:  .5  .9  .9  .9  .9 ; drops: -.4, .3, .05, -.05
  curve = types.SimpleNamespace(test_accuracy=[0.5, 0.9, 0.6, 0.85, 0.95])
  largest, count = faults.dives(curve)
  assert largest == pytest.approx(0.3)
  assert count == 1  # only 0.6 lies more than 10 points below the best before it
  assert faults.dives(types.SimpleNamespace(test_accuracy=[0.1, 0.2, 0.3])) == (0.0, 0)
  assert faults.dives(types.SimpleNamespace(test_accuracy=[0.4])) == (0.0, 0)


def test_settled_max_loss_ignores_the_first_rounds():
  result = types.SimpleNamespace(loss=[9.0, 8.0, 0.5, 2.5, 0.4])
  assert faults.settled_max_loss(result, after=2) == 2.5
  assert faults.settled_max_loss(result, after=0) == 9.0
  assert np.isnan(faults.settled_max_loss(result, after=5))


def test_faults_report_of_a_tiny_grid(tmp_path):
  """CGE under eq. (7) (the sum) with both fault-free baselines, and the
  mean-based ablation folder as the row "CGE (mean)"."""
  base = ex.cge_mnist(dataset="digits", model="logistic_regression",
                      steps=3, eval_every=1, batch_size=4)
  axes = {"aggregator": ["cge", "trimmed_mean"],
          "attack": ["gradient_reverse", "coordinate_wise"]}
  grid = ex.Grid("faults_tiny", base, axes=axes, seeds=(1,),
                 baselines=[ex.CGE_FAULT_FREE, ex.CGE_FAULT_FREE_SUM],
                 adjust=ex.cge_paper_rules)
  mean = ex.Grid("faults_tiny_mean", base,
                 axes={"aggregator": ["cge"], "attack": axes["attack"]}, seeds=(1,))
  out, mean_out = str(tmp_path / "main"), str(tmp_path / "main" / "cge_mean")
  ex.run_grid(grid, out, progress=False)
  ex.run_grid(mean, mean_out, progress=False)
  text = faults.report(out, mean_out)
  lines = text.splitlines()
  # Three tables, one row per filter each; the worst-case table one row more.
  for row in ("| CGE |", "| CGE (mean) |", "| CWTM |"):
    assert sum(l.startswith(row) for l in lines) == 4, row
  assert sum(l.startswith("fault-free (f = 0, mean): ") for l in lines) == 3
  assert sum(l.startswith("fault-free (f = 0, sum, eq. 3): ") for l in lines) == 3

  def accuracies(folder, agg):
    final = {r.settings.get("attack"): r.result
             for r in ex.load_grid_results(folder).records
             if r.kind == "grid" and r.settings.get("aggregator") == "cge"}
    assert {r.config.aggregator_args.get("cge", {}).get("reduction", "mean")
            for r in final.values()} == {agg}
    # One seed: the mean alone (ex.format_stat shows a std from two seeds on).
    return [f"{100 * final[a].test_accuracy[-1]:.2f}" for a in axes["attack"]]

  assert next(l for l in lines if l.startswith("| CGE |")) == (
      "| CGE | " + " | ".join(accuracies(out, "sum")) + " |")
  assert next(l for l in lines if l.startswith("| CGE (mean) |")) == (
      "| CGE (mean) | " + " | ".join(accuracies(mean_out, "mean")) + " |")


def test_late_accuracy_and_falls_of_worked_curves():
  result = types.SimpleNamespace(eval_steps=[0, 50, 100, 150, 200, 250],
                                 test_accuracy=[0.1, 0.5, 0.9, 0.2, 0.6, 0.7])
  assert fraction.late_accuracy(result, late=100) == pytest.approx(0.5)
  assert fraction.late_accuracy(result, late=0) == pytest.approx(0.7)
  assert fraction.late_accuracy(result, late=1000) == pytest.approx(0.5)
  assert fraction.falls([0.9, 0.8, 0.85, 0.7]) == 2
  assert fraction.falls([0.5]) == 0
  assert fraction.signs([0.01, -0.002, 0.0004, -0.0005, 0.3]) == (
      "2 up, 1 down, 2 within 0.05 points")


def test_fraction_report_of_a_tiny_grid(tmp_path, monkeypatch):
  monkeypatch.setattr(fraction, "LATE", 2)
  monkeypatch.setattr(fraction, "SETTLED", 1)
  base = ex.cge_mnist(dataset="digits", model="logistic_regression",
                      steps=4, eval_every=1)
  grid = ex.Grid("fraction_tiny", base,
                 axes={"f": [1, 2], "batch_size": [4, 8], "aggregator": ["cge"],
                       "attack": ["coordinate_wise"]},
                 seeds=(1, 2), baselines=[ex.CGE_FAULT_FREE])
  out = str(tmp_path)
  ex.run_grid(grid, out, progress=False, plots=False)
  runs = {}
  for r in ex.load_grid_results(out).records:
    key = ("free" if r.kind == "baseline" else r.settings["f"],
           r.settings["batch_size"])
    runs.setdefault(key, []).append(r.result)
  assert all(len(v) == 2 for v in runs.values()) and len(runs) == 6
  # Late accuracy: evaluations at rounds >= 4 - 2; loss maximum after round 1.
  late = {k: np.mean([np.mean(r.test_accuracy[2:]) for r in v])
          for k, v in runs.items()}
  spike = {k: np.mean([np.max(r.loss[1:]) for r in v]) for k, v in runs.items()}
  lines = fraction.report(out).splitlines()
  drop = [late[(1, k)] - late[(2, k)] for k in (4, 8)]
  for k, d in zip((4, 8), drop):
    assert f"| CGE | {k} | {100 * d:+.1f} ({int(d > 0)}) |" in lines
  for f in (1, 2):
    assert f"| CGE | {f} | {100 * (late[(f, 8)] - late[(f, 4)]):+.1f} |" in lines
  assert ("| CGE | " + " | ".join(f"{spike[(f, k)]:.2f}" for f in (1, 2)
                                  for k in (4, 8)) + " |") in lines
  gains = [late[(f, 8)] - late[(f, 4)] for f in (1, 2)]
  assert any(l.startswith("- Claim 2, the late accuracy at k = 8 minus at k = 4 "
                          f"over the 2 (filter, f, fault) cells: "
                          f"{fraction.signs(gains)} ") for l in lines)
  assert any(l.startswith("- Claim 1, the late accuracy at f = 1 minus at f = 2 "
                          f"over the 2 (filter, k, fault) series: "
                          f"{fraction.signs(drop)} ") for l in lines)
  # The same runs as the mean ablation's folder: every "CGE (mean)" row is
  # the "CGE" row, the baseline lines once each per table and k.
  shutil.copytree(out, tmp_path / "mean")
  both = fraction.report(out, str(tmp_path / "mean")).splitlines()
  cge = [l for l in both if l.startswith("| CGE | ")]
  assert cge and cge == [l.replace("| CGE (mean) | ", "| CGE | ")
                         for l in both if l.startswith("| CGE (mean) | ")]
  assert sum(l.startswith("fault-free (f = 0, mean), k = 4: ") for l in both) == 2
  # Two seeds: mean ± population std of the final accuracy.
  final = 100 * np.array([r.test_accuracy[-1] for r in runs[(1, 4)]])
  assert any(l.startswith(f"| CGE | 1 | {final.mean():.2f} ± {final.std():.2f} |")
             for l in lines)
  # The paper's Figures 8-11: per fault type, loss and accuracy, a line per f.
  import matplotlib.pyplot as plt
  fig = fraction.figure(fraction.cells_of(ex.load_grid_results(out).records),
                        "cge", 8)
  loss_ax, acc_ax = fig.axes
  assert "Figure" not in fig.get_suptitle()  # k = 8 is not the paper's
  for ax, field, scale in ((loss_ax, "loss", 1), (acc_ax, "test_accuracy", 100)):
    drawn = {l.get_label(): l for l in ax.get_lines()}
    assert set(drawn) == {"f = 1", "f = 2", "fault-free"}
    for label, key in (("f = 1", (1, 8)), ("f = 2", (2, 8)),
                       ("fault-free", ("free", 8))):
      np.testing.assert_allclose(drawn[label].get_ydata(), scale * np.mean(
          [getattr(r, field) for r in runs[key]], axis=0))
    assert drawn["fault-free"].get_linestyle() == "--"
  np.testing.assert_array_equal(loss_ax.get_lines()[0].get_xdata(), [1, 2, 3, 4])
  plt.close(fig)
  written = fraction.figures(out, str(tmp_path / "plots"))
  assert [os.path.basename(p) for p in written] == ["fraction_cge_k4.png",
                                                    "fraction_cge_k8.png"]
  # --seeds 1: the report and the figures of seed 1 alone.
  md = tmp_path / "fraction.md"
  assert fraction.main(["--main", out, "--mean", "", "--seeds", "1", "--out",
                        str(md)]) == 0
  lines = md.read_text(encoding="utf-8").splitlines()
  final = 100 * runs[(1, 4)][0].test_accuracy[-1]
  assert any(l.startswith(f"| CGE | 1 | {final:.2f} |") for l in lines)
  assert sorted(os.listdir(tmp_path / "plots")) == ["fraction_cge_k4.png",
                                                    "fraction_cge_k8.png"]


def test_figure2_report_of_a_tiny_grid(tmp_path):
  n, f = 7, 1
  base = train.RunConfig(
      dataset="digits", model="logistic_regression", n=n, f=f, split="iid",
      alpha=None, steps=4, eval_every=2, batch_size=4, learning_rate=0.5,
      algorithm="dshb", diagnostics=True)
  grid = ex.Grid("figure2_tiny", base,
                 axes={"f": [f], "aggregator": ["bucketing+krum", "nnm+krum"],
                       "attack": ["sign_flip"]},
                 seeds=(1, 2), adjust=ex.fixing_by_mixing_krum)
  out = str(tmp_path)
  ex.run_grid(grid, out, progress=False, plots=False)
  runs = {(r.settings["aggregator"], r.seed): r.result
          for r in ex.load_grid_results(out).records}
  k = {pre: np.array([runs[(f"{pre}+krum", s)].kappa_hat for s in (1, 2)],
                     np.float64) for pre in ("nnm", "bucketing")}
  assert k["nnm"].shape == (2, 4) and np.isfinite(k["nnm"]).all()
  # Lemma 1 over Proposition 3, r = f / (n - 2f): 8 f / (n - f) (6 (1 + r) + 1).
  r = f / (n - 2 * f)
  bound = np.sqrt(8 * f / (n - f) * (6 * (1 + r) + 1))
  below = np.mean(k["nnm"].mean(axis=0) < k["bucketing"].mean(axis=0))
  per_seed = sorted(100 * np.mean(k["nnm"] < k["bucketing"], axis=1))
  per_seed = "-".join(dict.fromkeys(f"{x:.1f}" for x in per_seed))
  acc = {pre: 100 * np.array([runs[(f"{pre}+krum", s)].test_accuracy[-1]
                              for s in (1, 2)]) for pre in ("nnm", "bucketing")}
  row = (f"| {f} | Krum | SF | {np.median(k['nnm'], axis=1).mean():.3f} | "
         f"{np.median(k['bucketing'], axis=1).mean():.3f} | {100 * below:.1f}% | "
         f"{per_seed}% | "
         f"{k['nnm'].max():.3f} | {bound:.2f} | "
         f"{acc['nnm'].mean():.2f} ± {acc['nnm'].std():.2f} | "
         f"{acc['bucketing'].mean():.2f} ± {acc['bucketing'].std():.2f} |")
  text = figure2.report(out)
  assert row in text.splitlines()
  assert "seeds 1, 2;" in text
  assert "in no round of any seed" in text
  # Rounds whose aggregate is the honest mean: listed for every Krum run.
  for pre, name in (("nnm", "NNM"), ("bucketing", "Bucketing")):
    counts = sorted({int(np.sum(run < 1e-4)) for run in k[pre]})
    assert any(line.startswith(f"| {f} | {name} + Krum | SF | "
                               f"{'-'.join(map(str, counts))} | ")
               and line.endswith(" | - | - |") for line in text.splitlines())
  # The command line (ex.report_main) prints the report and writes --out.
  path = tmp_path / "kappa.md"
  assert figure2.main(["--main", out, "--out", str(path)]) == 0
  assert path.read_text(encoding="utf-8") == text
  # --seeds 2: seed 2's numbers alone.
  assert figure2.main(["--main", out, "--seeds", "2", "--out", str(path)]) == 0
  text = path.read_text(encoding="utf-8")
  assert "seeds 2;" in text
  row = (f"| {f} | Krum | SF | {np.median(k['nnm'][1]):.3f} | "
         f"{np.median(k['bucketing'][1]):.3f} | ")
  assert any(line.startswith(row) for line in text.splitlines())


def test_table2_claims_of_a_worked_block():
  means = {"nnm+krum": {"alie": 80.0, "foe": 70.0},
           "bucketing+krum": {"alie": 85.0, "foe": 40.0},
           "krum": {"alie": 10.0, "foe": 60.0}}
  assert claims.worst_case(means, "nnm+krum") == (70.0, "foe")
  assert claims.worst_case(means, "krum") == (10.0, "alie")
  assert claims.best_worst_case(means, "krum")  # 70 > 40 and 70 > 10
  assert claims.beaten_cells(means, "krum") == [("alie", "bucketing+krum")]
  means["krum"]["alie"] = 75.0  # vanilla's worst case is now 60: still below
  assert claims.best_worst_case(means, "krum")
  means["krum"]["foe"] = 70.0  # a tie is not "above"
  assert not claims.best_worst_case(means, "krum")
  # mean 82, sample std 2: the band is 82 ± 2 * 2 / sqrt(3) = 82 ± 2.309
  assert claims.within_band([80.0, 82.0, 84.0], 84.30)
  assert not claims.within_band([80.0, 82.0, 84.0], 84.32)


def test_table2_claims_hold_on_the_papers_own_table():
  paper = claims.paper_results.get("fixing_by_mixing_table2")
  means = {n: {a: c.mean for a, c in row.items()} for n, row in paper.cells.items()}
  assert all(claims.best_worst_case(means, r) for r in claims.RULES)
  # "for Krum, CWMed, and CWTM ... NNM outputs the maximal accuracy under all
  # attacks"; GM is beaten under ALIE (vanilla) and SF (Bucketing), among others.
  assert [claims.beaten_cells(means, r) for r in ("krum", "median", "trimmed_mean")] == [[], [], []]
  beaten = dict(claims.beaten_cells(means, "geometric_median"))
  assert beaten["optimized_alie"] == "geometric_median"
  assert beaten["sign_flip"] == "bucketing+geometric_median"
  assert claims.worst_case(means, "nnm+krum") == (70.07, "optimized_foe")


def values_names(values):
  """The aggregators of a {(aggregator, attack, seed): value} mapping."""
  return sorted({n for n, _, _ in values})


def test_table2_claims_report_of_synthetic_seeds(tmp_path, monkeypatch):
  """Two seeds at the paper's mean ± 1: every claim reads as the paper's, every
  cell within the band; then one cell breaks NNM's best worst case for Krum."""
  paper = claims.paper_results.get("fixing_by_mixing_table2")
  (tmp_path / ex.GRID_FILE).write_text("{}")
  values = {(n, a, s): c.mean + (1.0 if s == 1 else -1.0)
            for n, row in paper.cells.items() for a, c in row.items() for s in (1, 2)}

  def records():
    out = [types.SimpleNamespace(
        kind="grid", seed=s, settings={"aggregator": n, "attack": a},
        result=types.SimpleNamespace(max_accuracy=v / 100.0))
        for (n, a, s), v in values.items()]
    out += [types.SimpleNamespace(kind="baseline", seed=s, settings={},
                                  result=types.SimpleNamespace(max_accuracy=a))
            for s, a in ((1, 0.97), (2, 0.98))]
    return types.SimpleNamespace(records=out)

  monkeypatch.setattr(claims.ex, "load_grid_results",
                      lambda main, seeds=None: records())
  text = claims.report(str(tmp_path))
  assert "# Table 2's claims, checked on seeds 1, 2" in text
  assert "| Krum | 70.07 (FOE) | 36.10 (FOE) | 10.19 (ALIE) | yes |" in text
  assert "| yes | 2 of 2 |" in text
  assert "60 of 60 attack cells; outside:" in text
  assert "| Krum | none | none |" in text
  assert "- NNM, paper: 70.07-79.04, lowest with Krum" in text
  assert "- Bucketing, ours: 36.10-42.80, lowest with Krum" in text
  assert "fault-free (D-SHB (f = 0)): 97.50 ± 0.50 over 2 seed(s)" in text
  # Bucketing's worst cases tie at 42.80 (FOE) for Krum, CWMed and CWTM once
  # Krum's FOE and GM's ALIE move up: every rule of the tie is named.
  tied = dict(values)
  for s, d in ((1, 1.0), (2, -1.0)):
    values[("bucketing+krum", "optimized_foe", s)] = 42.80 + d
    values[("bucketing+geometric_median", "optimized_alie", s)] = 60.0 + d
  text = claims.report(str(tmp_path))
  assert "- Bucketing, ours: 42.80-44.73, lowest with Krum, CWMed and CWTM" in text
  values.clear()
  values.update(tied)
  # The grid-search attacks' folder: NNM + CWMed falls to 20 under the grid
  # FOE on seed 2 alone (mean 50.5), Bucketing + CWMed to 30 on both: the
  # CWMed block holds on the means and on seed 1, not on seed 2.
  (tmp_path / "grid_attacks").mkdir()
  (tmp_path / "grid_attacks" / ex.GRID_FILE).write_text("{}")
  strong = {(n, "optimized_foe_grid", s): 90.0 for n in values_names(values) for s in (1, 2)}
  strong.update({("nnm+median", "optimized_foe_grid", 1): 81.0,
                 ("nnm+median", "optimized_foe_grid", 2): 20.0,
                 ("bucketing+median", "optimized_foe_grid", 1): 30.0,
                 ("bucketing+median", "optimized_foe_grid", 2): 30.0})

  def load(main, seeds=None):
    if os.path.basename(main) != "grid_attacks":
      return records()
    return types.SimpleNamespace(records=[types.SimpleNamespace(
        kind="grid", seed=s, settings={"aggregator": n, "attack": a},
        result=types.SimpleNamespace(max_accuracy=v / 100.0))
        for (n, a, s), v in strong.items()])

  monkeypatch.setattr(claims.ex, "load_grid_results", load)
  text = claims.report(str(tmp_path))
  assert "FOE (grid) (`grid_attacks/`" in text
  assert "| CWMed | 50.50 (FOE (grid)) | 30.00 (FOE (grid)) | 19.48 (FOE) | yes | 1 of 2 (1) |" in text
  # Seed 2's NNM + Krum vs FOE falls to 1.01: below Bucketing's 36.10 on the
  # mean (36.04) and below vanilla Krum's 9.19 on seed 2 alone.
  values[("nnm+krum", "optimized_foe", 2)] = 1.01
  text = claims.report(str(tmp_path))
  krum = next(l for l in text.splitlines() if l.startswith("| Krum | "))
  assert krum.endswith("| 1 of 2 (1) |") and "| NO |" in krum
  # 36.04 ± 2 * 49.5 / sqrt(2): two seeds this far apart hold any mean.
  assert "60 of 60 attack cells" in text


def test_ablation_pairs_a_reversal_with_the_protocols_runs_of_its_seeds(
    tmp_path, monkeypatch):
  """A reversal trained on seed 1 alone is set beside the protocol's seed 1,
  not beside the protocol's mean over seeds 1-3; the every-50 table reads the
  evaluations at multiples of 50 (and round T) of the same runs."""
  main, abl = tmp_path / "main", tmp_path / "ablation"
  for folder in (main, abl):
    folder.mkdir()
    (folder / ex.GRID_FILE).write_text("{}")

  def record(seed, accuracy, attack_args=None):
    # Evaluations every 5 rounds up to T = 60: the best, at round 5, is
    # seen only when evaluating every 5; every 50 sees rounds 0, 50, 60.
    acc = [0.1] * 13
    acc[1], acc[10], acc[12] = accuracy / 100, accuracy / 200, accuracy / 400
    settings = {"aggregator": "nnm+krum", "attack": "optimized_alie"}
    if attack_args is not None:
      settings["attack_args"] = attack_args
    return types.SimpleNamespace(
        kind="grid", seed=seed, settings=settings,
        result=types.SimpleNamespace(eval_steps=list(range(0, 61, 5)),
                                     test_accuracy=acc,
                                     config=types.SimpleNamespace(
            aggregator="nnm+krum", attack="optimized_alie", attack_args={})))

  folders = {
      str(main): [record(1, 80.0), record(2, 60.0), record(3, 70.0)],
      str(abl): [record(1, 76.0, {"knows_server_randomness": True})]}
  monkeypatch.setattr(ablation.ex, "load_grid_results", lambda folder, seeds=None:
                      types.SimpleNamespace(records=[
                          r for r in folders[folder]
                          if seeds is None or r.seed in seeds]))
  text = ablation.report(str(main), None, str(abl))
  lines = text.splitlines()
  server = lines.index("### Own randomness / the server's Bucketing permutation")
  # Seed 1 beside seed 1: 80 / 76, not the mean of seeds 1-3 (70).
  assert lines[server + 6] == ("| NNM + Krum | 80.00 / 76.00 (-4.00) | "
                               "80.00 / 76.00 (-4.00) |")
  # Every 5 rounds: the mean of 80, 60, 70; every 50: of 40, 30, 35.
  every = lines.index("### Evaluation every 5 rounds / every 50")
  assert lines[every + 6] == ("| NNM + Krum | 70.00 / 35.00 (-35.00) | "
                              "70.00 / 35.00 (-35.00) |")
  assert "table2_offline_grid_attacks: no results in None" in text
  # --seeds 1 3: the protocol's means over seeds 1 and 3 alone.
  lines = ablation.report(str(main), None, str(abl), seeds=[1, 3]).splitlines()
  assert lines[every + 6] == ("| NNM + Krum | 75.00 / 37.50 (-37.50) | "
                              "75.00 / 37.50 (-37.50) |")
  # A v1 folder holding seed 1 at 50%: worst cases of seed 1 side by side,
  # with the paper's worst NNM + Krum cell (FOE, 70.07 ± 4.39).
  v1 = tmp_path / "v1"
  v1.mkdir()
  (v1 / ex.GRID_FILE).write_text("{}")
  folders[str(v1)] = [record(1, 50.0)]
  text = ablation.report(str(main), None, str(abl), str(v1))
  assert "### The first protocol (v1) beside this one, worst cases, seed(s) 1" in text
  assert "| NNM + Krum | 80.00 (ALIE) | 50.00 (ALIE) | 70.07 ± 4.39 |" in text
  # The per-worker Dirichlet split, trained on seed 1: beside seed 1's 80.
  split = tmp_path / "per_worker"
  split.mkdir()
  (split / ex.GRID_FILE).write_text("{}")
  folders[str(split)] = [record(1, 66.0)]
  lines = ablation.report(str(main), None, str(abl), None, str(split)).splitlines()
  at = lines.index("### Per-class Dirichlet split / the per-worker split the paper cites")
  assert lines[at + 6] == ("| NNM + Krum | 80.00 / 66.00 (-14.00) | "
                           "80.00 / 66.00 (-14.00) |")
