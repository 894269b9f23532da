"""Tests of byzjax.experiments (grids, resume, tables), byzjax.paper_results,
byzjax.plots and the configs of experiments/ (tiny settings, offline)."""

import csv
import glob
import json
import os
import re
import shutil
import types

import numpy as np
import pytest

from byzjax import experiments as ex
from byzjax import paper_results
from byzjax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py")))

# Two runs x two seeds of logistic regression on the 8x8 digits: seconds.
BASE = train.RunConfig(
    dataset="digits", model="logistic_regression", n=5, f=1, split="iid",
    alpha=None, steps=3, eval_every=1, batch_size=4, learning_rate=0.5,
    attack="sign_flip")
GRID = ex.Grid("resume", BASE,
               axes={"aggregator": ["trimmed_mean", "nnm+trimmed_mean"]},
               seeds=(1, 2))
CURVES = ("test_accuracy", "loss", "aggregate_error", "byzantine_influence",
          "learning_rate", "eta")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """The grid run without interruption (shared by several tests)."""
  out = str(tmp_path_factory.mktemp("uninterrupted"))
  return out, ex.run_grid(GRID, out, progress=False)


def _curves(results):
  """Every per-round and per-evaluation number, bit for bit (NaN == NaN)."""
  return {(r.run_id, r.seed): json.dumps({k: getattr(r.result, k)
                                          for k in CURVES})
          for r in results.records}


# ---------------------------------------------------------------------------
# Resume.


class Crash(Exception):
  pass


def test_interrupted_grid_resumes_with_the_same_numbers(finished, tmp_path):
  out = str(tmp_path / "crashed")
  seen = []

  def crash_after_first(record):
    seen.append((record.run_id, record.seed))
    raise Crash  # after the first seed's result is saved: mid-run crash

  with pytest.raises(Crash):
    ex.run_grid(GRID, out, progress=False, on_result=crash_after_first)
  assert len(glob.glob(os.path.join(out, "results", "*", "seed-*.json"))) == 1

  trained = []
  resumed = ex.run_grid(GRID, out, progress=False,
                        on_result=lambda r: trained.append((r.run_id, r.seed)))
  runs = ex.expand(GRID)
  everything = [(r.id, s) for r in runs for s in GRID.seeds]
  assert sorted(seen + trained) == sorted(everything)  # each exactly once
  assert not set(seen) & set(trained)
  files = glob.glob(os.path.join(out, "results", "*", "seed-*.json"))
  assert len(files) == len(everything)
  # Resumed seeds (trained without the seeds done before the crash) match
  # the uninterrupted run exactly.
  assert _curves(resumed) == _curves(finished[1])

  again = []
  ex.run_grid(GRID, out, progress=False, on_result=again.append, write=False)
  assert again == []  # nothing left to do


def test_another_execution_resumes_the_same_grid(finished, tmp_path):
  """How runs are computed is not part of what they compute: a grid started
  with one strategy resumes with another, with the same numbers (float
  rounding aside)."""
  out = str(tmp_path / "switched")
  shutil.copytree(finished[0], out)
  victim = sorted(glob.glob(os.path.join(out, "results", "*", "seed-2.json")))[0]
  os.remove(victim)
  trained = []
  resumed = ex.run_grid(GRID, out, progress=False, write=False,
                        on_result=trained.append,
                        execution=train.Execution(per_worker="vmap",
                                                  seed_batching="vmap"))
  assert [(r.seed, r.run_id) for r in trained] == [
      (2, os.path.basename(os.path.dirname(victim)))]
  want = {(r.run_id, r.seed): r.result for r in finished[1].records}
  for r in resumed.records:
    np.testing.assert_allclose(r.result.loss, want[r.run_id, r.seed].loss,
                               rtol=1e-5)


def test_changed_grid_is_refused_with_a_way_forward(finished, tmp_path):
  out, _ = finished
  with pytest.raises(ex.GridMismatchError) as err:
    ex.run_grid(GRID.override(steps=4), out, progress=False)
  message = str(err.value)
  assert "steps: 3 -> 4" in message
  assert "--overwrite" in message and "another output folder" in message
  # Overwriting deletes the old results (here without training).
  copy = str(tmp_path / "copy")
  shutil.copytree(out, copy)
  changed = GRID.override(steps=4)
  ex.prepare_folder(changed, copy, ex.expand(changed), overwrite=True)
  assert not os.path.exists(os.path.join(copy, "results"))
  assert not os.path.exists(os.path.join(copy, "table.md"))
  with open(os.path.join(copy, "grid.json")) as fh:
    assert json.load(fh)["fingerprint"] == ex.fingerprint(changed)


def test_folder_without_results_is_reused_and_foreign_folder_refused(tmp_path):
  out = str(tmp_path)
  ex.prepare_folder(GRID, out, ex.expand(GRID))
  changed = GRID.override(steps=4)  # no result saved yet: nothing to lose
  ex.prepare_folder(changed, out, ex.expand(changed))
  with open(os.path.join(out, "grid.json")) as fh:
    assert json.load(fh)["fingerprint"] == ex.fingerprint(changed)
  with open(os.path.join(out, "grid.json"), "w") as fh:
    json.dump({"name": "somebody else's file"}, fh)
  with pytest.raises(ex.GridMismatchError, match="not written by byzjax"):
    ex.prepare_folder(GRID, out, ex.expand(GRID), overwrite=True)


def test_outputs_of_a_finished_grid(finished):
  out, results = finished
  with open(os.path.join(out, "evaluations.csv")) as fh:
    rows = list(csv.DictReader(fh))
  assert len(rows) == 2 * 2 * (BASE.steps + 1)
  assert set(rows[0]) == {"run_id", "kind", "method", "aggregator", "seed",
                          "step", "test_accuracy"}
  first = results.records[0]
  assert [float(r["test_accuracy"]) for r in rows[:4]] == first.result.test_accuracy
  with open(os.path.join(out, "rounds.csv")) as fh:
    rounds = list(csv.DictReader(fh))
  assert len(rounds) == 2 * 2 * BASE.steps
  assert {"round", "loss", "aggregate_error", "byzantine_influence",
          "learning_rate", "eta"} <= set(rounds[0])
  with open(os.path.join(out, "runs.json")) as fh:
    text = fh.read()
  assert "NaN" not in text  # strict JSON (eta is NaN for this attack)
  assert len(json.loads(text)["runs"]) == 4
  table = open(os.path.join(out, "table.md")).read()
  assert "NNM + CWTM" in table and "worst case" in table
  assert os.path.getsize(os.path.join(out, "table.tex")) > 0
  loaded = ex.load_grid_results(out)
  assert _curves(loaded) == _curves(results)


def _visible_axes(fig):
  return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def test_plots_are_written_and_draw_the_results(finished, tmp_path):
  """The files of a finished grid, and what its figures draw: one accuracy
  panel per method with the mean curve over seeds, the baseline dashed; the
  distance to the honest mean per round; the table's means as a heatmap."""
  import matplotlib.pyplot as plt
  from byzjax import plots
  _, results = finished
  paths = ex.write_outputs(results, str(tmp_path), plots=True)
  names = {os.path.basename(p) for p in paths if p.endswith(".png")}
  assert {"accuracy.png", "aggregate_error.png", "kappa.png", "table.png"} <= names
  grid_records = [r for r in results.records if r.kind == "grid"]
  baselines = [r._replace(kind="baseline", label="reference", settings={})
               for r in grid_records if r.settings["aggregator"] == "trimmed_mean"]
  fig = plots.accuracy_figure(grid_records, baselines=baselines)
  axes = _visible_axes(fig)
  assert [ax.get_title() for ax in axes] == ["CWTM", "NNM + CWTM"]
  for ax, method in zip(axes, ["trimmed_mean", "nnm+trimmed_mean"]):
    runs = [r for r in grid_records if r.settings["aggregator"] == method]
    lines = {l.get_label(): l for l in ax.get_lines()}
    np.testing.assert_allclose(lines["SF"].get_ydata(), 100 * np.mean(
        [r.result.test_accuracy for r in runs], axis=0))
    np.testing.assert_array_equal(lines["SF"].get_xdata(), [0, 1, 2, 3])
    base = lines[baselines[0].label]
    assert base.get_linestyle() == "--"
    np.testing.assert_allclose(base.get_ydata(), 100 * np.mean(
        [r.result.test_accuracy for r in baselines], axis=0))
    assert ax.get_ylim() == (0.0, 100.0)
  plt.close(fig)
  fig = plots.aggregate_error_figure(grid_records)
  for ax, method in zip(_visible_axes(fig), ["trimmed_mean", "nnm+trimmed_mean"]):
    runs = [r for r in grid_records if r.settings["aggregator"] == method]
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), np.mean(
        [r.result.aggregate_error for r in runs], axis=0), rtol=1e-12)
    assert ax.get_yscale() == "log"
  plt.close(fig)
  (table,) = results.tables()
  fig = plots.table_figure(table)
  image = fig.axes[0].get_images()[0].get_array()
  np.testing.assert_allclose(
      image[:, 0], [table.cells[(r, "sign_flip")].mean for r in table.rows])
  np.testing.assert_allclose(image[:, -1],
                             [table.worst[r][1].mean for r in table.rows])
  plt.close(fig)


def test_plots_heatmap_over_two_settings():
  import matplotlib.pyplot as plt
  records = []
  for f, alpha in [(1, 0.1), (1, 1.0), (2, 1.0)]:
    for agg in ("krum", "nnm+krum"):
      for attack in ("sign_flip", "label_flip"):
        for seed in (1, 2):
          acc = 0.1 * f + alpha / 10 + (agg == "krum") * 0.2 + seed * 0.01
          records.append(_record(agg, attack, seed, [0.1, acc],
                                 extra={"f": f, "alpha": alpha}))
  tables = ex.summarize(records)
  assert [t.group for t in tables] == [{"f": 1, "alpha": 0.1},
                                       {"f": 1, "alpha": 1.0},
                                       {"f": 2, "alpha": 1.0}]
  from byzjax import plots
  fig = plots.worst_case_figure(tables, y="f", x="alpha")
  axes = [ax for ax in fig.axes if ax.get_images()]
  assert [ax.get_title() for ax in axes] == ["Krum", "NNM + Krum"]
  # worst case of Krum at (f, alpha): 0.1 f + alpha / 10 + 0.2 + 0.015 (mean
  # over seeds 1, 2), in %; (f = 2, alpha = 0.1) was not run
  want = 100 * np.array([[0.1 + 0.01 + 0.2 + 0.015, 0.1 + 0.1 + 0.2 + 0.015],
                         [np.nan, 0.2 + 0.1 + 0.2 + 0.015]])
  np.testing.assert_allclose(axes[0].get_images()[0].get_array().filled(np.nan),
                             want, rtol=1e-12)
  plt.close(fig)


def test_kappa_figure_draws_eq26_and_the_proven_bounds():
  """Figure 2 of Allouah et al.: one panel per attack, one line per method
  (mean over seeds of kappa_hat), sqrt(kappa) of Table 1 / Lemma 1 where a
  bound is proven, the lower bound sqrt(f / (n - 2f)) and the honest level 1."""
  from byzjax import plots
  config = train.RunConfig(n=17, f=4)
  kappas = {("nnm+trimmed_mean", 1): [0.2, 0.4, 0.3],
            ("nnm+trimmed_mean", 2): [0.4, 0.2, 0.5],
            ("bucketing+trimmed_mean", 1): [1.0, 2.0, 4.0],
            ("bucketing+trimmed_mean", 2): [3.0, 2.0, 2.0]}
  records = []
  for attack in ("optimized_alie", "optimized_foe"):
    for (agg, seed), k in kappas.items():
      r = _record(agg, attack, seed, [0.1, 0.2])
      r.result.kappa_hat = k
      r.result.config = config.replace(aggregator=agg, attack=attack)
      records.append(r)
  fig = plots.kappa_figure(records)
  axes = [ax for ax in fig.axes if ax.get_visible()]
  assert [ax.get_title() for ax in axes] == ["ALIE", "FOE"]
  for ax in axes:
    assert ax.get_yscale() == "log"
    curves = {l.get_label(): l for l in ax.get_lines()
              if not l.get_label().startswith("_") and len(l.get_xdata()) == 3}
    np.testing.assert_allclose(curves["NNM + CWTM"].get_ydata(), [0.3, 0.3, 0.4])
    np.testing.assert_allclose(curves["Bucketing + CWTM"].get_ydata(), [2, 2, 3])
    np.testing.assert_array_equal(curves["NNM + CWTM"].get_xdata(), [1, 2, 3])
    levels = sorted(l.get_ydata()[0] for l in ax.get_lines()
                    if len(set(l.get_ydata())) == 1 and len(l.get_ydata()) == 2)
    r = 4 / 9
    nnm_bound = np.sqrt(8 * 4 / 13 * (6 * r * (1 + r) + 1))
    np.testing.assert_allclose(levels, sorted([np.sqrt(r), 1.0, nnm_bound]))
  import matplotlib.pyplot as plt
  plt.close(fig)


def test_log_axes_keep_every_level_and_let_rare_dips_go():
  """The shared log axis of the aggregate-error panels: a curve's rare dip far
  below the rest leaves it through the lower edge, a curve low throughout
  (CGE's exact honest mean) stays in view."""
  import matplotlib.pyplot as plt
  from byzjax import plots
  dip = np.full(200, 2.0)
  dip[100] = 1e-9  # one round of 200
  curves = {"krum": dip, "cge": np.full(200, 3e-8), "median": np.full(200, 0.5)}
  records = []
  for agg, curve in curves.items():
    r = _record(agg, "sign_flip", 1, [0.1, 0.2])
    r.result.aggregate_error = curve
    records.append(r)
  for chosen, low in ((["krum"], 1.0), (["krum", "median"], 0.5),
                      (["krum", "cge"], 3e-8)):
    fig = plots.aggregate_error_figure(
        [r for r in records if r.settings["aggregator"] in chosen])
    assert fig.axes[0].get_ylim() == pytest.approx((low / 1.25, 2.5))
    plt.close(fig)


def test_kappa_figure_pairs_pre_aggregations_rule_by_rule():
  """With rules each behind NNM and Bucketing (Figure 2's layout): one panel
  per rule and attack, one line per pre-aggregation in one colour throughout,
  NNM's proven sqrt(kappa) of its rule in each panel; a dip to 1e-9 in one
  round (an aggregate equal to the honest mean) leaves the shared log axis
  through its lower edge instead of setting its range."""
  import matplotlib.pyplot as plt
  from byzjax import plots
  config = train.RunConfig(n=17, f=4)
  records = []
  for attack in ("optimized_alie", "optimized_foe"):
    for rule in ("krum", "trimmed_mean"):
      for pre, level in (("nnm", 0.3), ("bucketing", 2.0)):
        for seed in (1, 2):
          kappa = [level * seed] * 200
          if (pre, rule, attack) == ("bucketing", "krum", "optimized_foe"):
            kappa[100] = 1e-9
          r = _record(f"{pre}+{rule}", attack, seed, [0.1, 0.2])
          r.result.kappa_hat = kappa
          r.result.config = config.replace(
              aggregator=f"{pre}+{rule}", attack=attack,  # Krum of Prop. 3
              aggregator_args={"krum": {"neighbours": 12}} if rule == "krum"
              else {})
          records.append(r)
  fig = plots.kappa_figure(records)
  axes = [ax for ax in fig.axes if ax.get_visible()]
  assert [ax.get_title() for ax in axes] == [
      "Krum, ALIE", "Krum, FOE", "CWTM, ALIE", "CWTM, FOE"]
  r = 4 / 9
  proven = {"krum": 6 * (1 + r), "trimmed_mean": 6 * r * (1 + r)}
  colours = {}
  for ax, (rule, attack) in zip(axes, [(k, a) for k in ("krum", "trimmed_mean")
                                       for a in ("ALIE", "FOE")]):
    curves = {l.get_label(): l for l in ax.get_lines()
              if len(l.get_xdata()) == 200}
    assert set(curves) == {"NNM", "Bucketing"}
    for name, level in (("NNM", 0.3), ("Bucketing", 2.0)):
      want = np.full(200, 1.5 * level)
      if (name, rule, attack) == ("Bucketing", "krum", "FOE"):
        want[100] = 1e-9
      np.testing.assert_allclose(curves[name].get_ydata(), want)
      colours.setdefault(name, set()).add(curves[name].get_color())
    dashed = [l.get_ydata()[0] for l in ax.get_lines() if l.get_linestyle() == "--"]
    np.testing.assert_allclose(dashed, [np.sqrt(8 * 4 / 13 * (proven[rule] + 1))])
  assert all(len(c) == 1 for c in colours.values())
  assert colours["NNM"] != colours["Bucketing"]
  low, high = axes[0].get_ylim()  # NNM's level 0.45 is the lowest in view
  assert low == pytest.approx(0.45 / 1.25)
  assert high == pytest.approx(1.25 * np.sqrt(8 * 4 / 13 * (proven["krum"] + 1)))
  plt.close(fig)
  # the same layout whatever order the methods come in
  first = sorted(records, key=lambda r:
                 r.settings["aggregator"] != "bucketing+trimmed_mean")
  fig = plots.kappa_figure(first)
  assert len([ax for ax in fig.axes if ax.get_visible()]) == 4
  plt.close(fig)
  # one rule only: the per-attack layout, one line per method
  fig = plots.kappa_figure([r for r in records
                            if r.settings["aggregator"].endswith("krum")])
  assert [ax.get_title() for ax in fig.axes] == ["ALIE", "FOE"]
  plt.close(fig)


# ---------------------------------------------------------------------------
# Tables from hand-made results.


def _record(aggregator, attack, seed, accuracy, *, extra=None, kind="grid",
            label=None, overridden=()):
  result = types.SimpleNamespace(eval_steps=list(range(len(accuracy))),
                                 test_accuracy=list(accuracy), seed=seed)
  settings = {"aggregator": aggregator, "attack": attack, **(extra or {})}
  if kind == "baseline":
    settings = dict(extra or {})
  return ex.Record(f"{aggregator}-{attack}", kind,
                   label or ex.display("aggregator", aggregator), settings,
                   tuple(overridden), seed, result)


# Max accuracies per seed (curves [0.1, value]): known means and stds.
HAND = {
    ("krum", "optimized_alie"): (0.20, 0.30),     # 25 ± 5
    ("krum", "sign_flip"): (0.10, 0.50),          # 30 ± 20 (lowest single value)
    ("nnm+krum", "optimized_alie"): (0.80, 0.90),  # 85 ± 5
    ("nnm+krum", "sign_flip"): (0.70, 0.70),      # 70 ± 0
}


def _markdown_cells(md):
  """The cells of every table line of Markdown text, stripped."""
  return [[c.strip() for c in l.strip("|").split("|")]
          for l in md.splitlines() if l.startswith("|")]


def _hand_records():
  records = [_record(agg, att, seed, [0.1, v])
             for (agg, att), values in HAND.items()
             for seed, v in zip((1, 2), values)]
  records += [_record("mean", "", seed, [0.5, v], kind="baseline",
                      label="D-SHB (f = 0)", extra={})
              for seed, v in zip((1, 2), (0.96, 0.98))]
  return records


def test_table_means_stds_and_worst_case():
  (table,) = ex.summarize(_hand_records())
  assert table.rows == ["krum", "nnm+krum"]
  assert table.columns == ["optimized_alie", "sign_flip"]
  cell = table.cells[("krum", "sign_flip")]
  assert (cell.mean, cell.std, cell.count) == pytest.approx((30.0, 20.0, 2))
  # Worst case = the attack of least MEAN (krum: ALIE at 25, although SF has
  # the lowest single seed), shown with its own std.
  assert table.worst["krum"][0] == "optimized_alie"
  assert table.worst["krum"][1][:2] == pytest.approx((25.0, 5.0))
  assert table.worst["nnm+krum"][0] == "sign_flip"
  label, stat = table.baselines[0]
  assert label == "D-SHB (f = 0)" and stat[:2] == pytest.approx((97.0, 1.0))
  sample = ex.summarize(_hand_records(), ddof=1)[0]
  assert sample.cells[("krum", "sign_flip")].std == pytest.approx(
      np.std([10.0, 50.0], ddof=1))


def test_a_partial_table_marks_cells_missing_seeds_and_keeps_column_order():
  # Seed 2 of Krum vs SF and of the baseline are not saved yet, and Krum's
  # ALIE cell is missing entirely (saved order: SF before ALIE).
  records = [r for r in _hand_records()
             if not (r.seed == 2 and r.run_id in ("krum-sign_flip", "mean-"))
             and r.run_id != "krum-optimized_alie"]
  records.sort(key=lambda r: r.run_id != "krum-sign_flip")
  (table,) = ex.summarize(records, all_columns=["optimized_alie", "sign_flip"],
                          all_seeds=2)
  assert table.columns == ["optimized_alie", "sign_flip"]  # the grid's order
  md = ex.format_markdown([table])
  cells = _markdown_cells(md)
  assert cells[0] == ["aggregator \\ attack", "ALIE", "SF", "worst case"]
  # 10% alone: "(1 of 2 seeds)"; its worst case says the row misses seeds.
  assert cells[2] == ["Krum", "", "10.00 (1 of 2 seeds)",
                      "10.00 (SF; 1 of 2; 1 cell(s) missing seeds)"]
  assert cells[3] == ["NNM + Krum", "85.00 ± 5.00", "70.00 ± 0.00",
                      "70.00 ± 0.00 (SF)"]
  assert "D-SHB (f = 0): 96.00 (1 of 2 seeds)" in md
  assert 'PARTIAL: "(k of 2 seeds)" marks a cell' in md
  # Complete cells say nothing more.
  (whole,) = ex.summarize(_hand_records(), all_seeds=2)
  assert "seeds)" not in ex.format_markdown([whole])
  assert ex.format_stat(ex.Stat(36.77, float("nan"), 1), 2) == "36.77 (1 of 2 seeds)"
  assert ex.format_stat(ex.Stat(46.24, 9.47, 2), 2) == "46.24 ± 9.47"


def test_markdown_and_csv_tables_match_hand_checked_values():
  tables = ex.summarize(_hand_records())
  md = ex.format_markdown(tables)
  cells = _markdown_cells(md)
  assert cells[0] == ["aggregator \\ attack", "ALIE", "SF", "worst case"]
  assert cells[2] == ["Krum", "25.00 ± 5.00", "30.00 ± 20.00",
                      "25.00 ± 5.00 (ALIE)"]
  assert cells[3] == ["NNM + Krum", "85.00 ± 5.00", "70.00 ± 0.00",
                      "70.00 ± 0.00 (SF)"]
  assert "D-SHB (f = 0): 97.00 ± 1.00" in md
  assert "mean ± population std over 2 seed(s) (1, 2)" in md
  rows = ex.table_rows(tables)
  got = {(r["row"], r["column"]): (r["mean"], r["std"], r["worst_of"])
         for r in rows}
  assert got[("Krum", "SF")] == (30.0, 20.0, "")
  assert got[("Krum", "worst case")] == (25.0, 5.0, "ALIE")
  assert got[("NNM + Krum", "worst case")] == (70.0, 0.0, "SF")
  assert got[("D-SHB (f = 0)", "baseline")] == (97.0, 1.0, "")
  tex = ex.format_latex(tables)
  assert "25.00 $\\pm$ 5.00 (ALIE)" in tex and "\\toprule" in tex


def test_paper_numbers_beside_ours():
  paper = paper_results.get("fixing_by_mixing_table2")
  configs = {f"{a}-{b}": BASE.replace(n=17, f=4, alpha=0.1, aggregator=a,
                                      attack=b, split="dirichlet")
             for a, b in HAND}
  (table,) = ex.summarize(_hand_records(), paper=paper, configs=configs)
  assert table.paper is paper
  md = ex.format_markdown([table])
  paper_lines = [l for l in md.splitlines() if l.startswith("|   paper")]
  # The paper's worst case is over its five attacks: not shown for two.
  # Krum vs ALIE: seeds 20, 30 (mean 25, sample std 7.07, 2 s / sqrt(2) =
  # 10.0): the paper's 10.19 is 14.8 away, outside, marked; vs SF: seeds 10,
  # 50 (2 s / sqrt(2) = 40.0): 51.17 is 21.2 away, inside.
  assert [c.strip() for c in paper_lines[0].strip("|").split("|")] == [
      "paper", "10.19 ± 0.61*", "51.17 ± 6.14", ""]
  assert "*: the paper's mean lies outside our mean ± 2 sample std / sqrt(2)" in md
  assert "(paper: D-SHB (f = 0) 98.03 ± 0.70)" in md
  rows = {(r["row"], r["column"]): r for r in ex.table_rows([table])}
  assert rows[("NNM + Krum", "ALIE")]["paper_mean"] == 78.30
  assert rows[("Krum", "ALIE")]["paper_within_2se"] == "false"
  assert rows[("Krum", "SF")]["paper_within_2se"] == "true"
  # NNM + Krum vs ALIE: 80, 90 (2 s / sqrt(2) = 10): 78.30 is 6.7 away.
  assert rows[("NNM + Krum", "ALIE")]["paper_within_2se"] == "true"
  sample = ex.summarize(_hand_records(), paper=paper, configs=configs, ddof=1)
  assert [r["paper_within_2se"] for r in ex.table_rows(sample)] == [
      r["paper_within_2se"] for r in ex.table_rows([table])]
  five = [_record("krum", a, 1, [0.1, 0.5]) for a in ex.FBM_ATTACKS]
  (full,) = ex.summarize(five, paper=paper, configs={
      r.run_id: configs["krum-sign_flip"] for r in five})
  line = [l for l in ex.format_markdown([full]).splitlines()
          if l.startswith("|   paper")][0]
  assert line.strip("| ").endswith("10.19 ± 0.61")
  # Other settings (f = 6): no paper numbers.
  other = {k: v.replace(f=6) for k, v in configs.items()}
  assert ex.summarize(_hand_records(), paper=paper, configs=other)[0].paper is None


def test_metric_values():
  r = types.SimpleNamespace(eval_steps=[0, 10, 20], test_accuracy=[0.1, 0.9, 0.8])
  assert ex.metric_value(r, "max_accuracy") == 0.9
  assert ex.metric_value(r, "final_accuracy") == 0.8
  assert ex.metric_value(r, "accuracy_at:10") == 0.9
  assert ex.metric_value(r, "accuracy_at:15") == 0.9  # last evaluation <= 15
  assert ex.metric_value(r, "accuracy_at:50") == 0.8
  with pytest.raises(ValueError, match="metric must be one of"):
    ex.Grid("g", BASE, metric="best")


# ---------------------------------------------------------------------------
# The paper's Table 2.


def test_paper_table2_as_printed():
  t = paper_results.get("fixing_by_mixing_table2")
  assert len(t.cells) == 12 and all(len(row) == 5 for row in t.cells.values())
  assert t.cell("krum", "optimized_alie") == (10.19, 0.61, "10.19 ± 0.61")
  assert t.cell("nnm+trimmed_mean", "mimic").mean == 96.02
  assert t.cells["bucketing+median"] == t.cells["bucketing+trimmed_mean"]
  assert t.baseline[1][:2] == (98.03, 0.70)
  assert t.printed_rows["nnm+geometric_median"] == "NNM + GM"
  # The printed worst case is the attack of least mean, with its std.
  for name, row in t.cells.items():
    worst = min(row.values(), key=lambda c: c.mean)
    assert t.worst_case[name][:2] == worst[:2], name
  assert paper_results.registry_name("Bucketing + CWMed") == "bucketing+median"
  with pytest.raises(ValueError, match="did you mean 'Krum'"):
    paper_results.registry_name("NNM + Krun")
  with pytest.raises(ValueError, match="valid: fixing_by_mixing_table2"):
    paper_results.get("table2")


# ---------------------------------------------------------------------------
# Grids.


def test_grid_expansion_zipped_axes_and_baselines():
  grid = ex.Grid("g", BASE.replace(n=9, f=2),
                 axes={("f", "alpha"): [(1, 0.1), (2, 0.1), (2, 1.0)],
                       "aggregator": ["krum", "nnm+krum"],
                       "attack": ["sign_flip", "label_flip"]},
                 baselines={"no attack": {"f": 0, "aggregator": "mean"}})
  runs = ex.expand(grid)
  main = [r for r in runs if r.kind == "grid"]
  base = [r for r in runs if r.kind == "baseline"]
  assert len(main) == 3 * 2 * 2
  assert main[0].settings == {"f": 1, "alpha": 0.1, "aggregator": "krum",
                              "attack": "sign_flip"}
  assert main[0].config.f == 1 and main[0].config.seeds == (1,)
  # One baseline per alpha (f is overridden, aggregator/attack are the table's).
  assert [r.settings for r in base] == [
      {"alpha": 0.1, "f": 0, "aggregator": "mean"},
      {"alpha": 1.0, "f": 0, "aggregator": "mean"}]
  assert len({r.id for r in runs}) == len(runs)
  assert grid.group_fields == ["f", "alpha"]


def test_fingerprint_tracks_settings_not_data_location():
  fp = ex.fingerprint(GRID)
  assert ex.fingerprint(GRID) == fp
  assert ex.fingerprint(GRID.override(data_dir="/elsewhere")) == fp
  assert ex.fingerprint(GRID.override(steps=4)) != fp
  assert ex.fingerprint(GRID.override(seeds=(1,))) != fp
  assert ex.fingerprint(GRID.replace(adjust=lambda c: c.replace(clip=1.0))) != fp
  again = ex.Grid.from_dict(json.loads(json.dumps(GRID.to_dict())))
  assert ex.fingerprint(again) == fp


def test_per_name_hyperparameters_reach_only_the_runs_that_use_the_name():
  base = BASE.replace(n=9, f=2, aggregator_args={"krum": {"neighbours": 5}},
                      attack_args={"alie": {"eta": 1.0}})
  grid = ex.Grid("g", base, axes={"aggregator": ["krum", "trimmed_mean"],
                                  "attack": ["sign_flip", "alie"]})
  runs = {(r.config.aggregator, r.config.attack): r for r in ex.check(grid)}
  assert runs["krum", "alie"].config.aggregator_args == {"krum": {"neighbours": 5}}
  assert runs["trimmed_mean", "alie"].config.aggregator_args == {}
  assert runs["krum", "alie"].config.attack_args == {"eta": 1.0}
  assert runs["krum", "sign_flip"].config.attack_args == {}
  # The same run written flat has the same digest (the same configuration).
  flat = ex.Grid("g", BASE.replace(n=9, f=2, aggregator="trimmed_mean",
                                   attack="alie", attack_args={"eta": 1.0}))
  assert (ex.expand(flat)[0].id.split("-")[-1]
          == runs["trimmed_mean", "alie"].id.split("-")[-1])
  # A single RunConfig takes the per-name form too.
  from byzjax import config as config_lib
  assert config_lib.attack_args_of(base.replace(attack="alie")) == {"eta": 1.0}
  assert config_lib.attack_args_of(base.replace(attack="foe")) == {}
  # A name no run uses is refused (a typo would silently drop it).
  for args, text in (({"aggregator_args": {"krun": {}}}, "['krun'] that no run"),
                     ({"attack_args": {"foe": {"eps": 2.0}}}, "['foe'] that no run")):
    with pytest.raises(ex.GridError, match=re.escape(text)):
      ex.check(grid.replace(base=BASE.replace(n=9, f=2, **args)))


def test_grid_errors_name_the_bad_value():
  with pytest.raises(ValueError, match="did you mean 'aggregator'"):
    ex.Grid("g", BASE, axes={"agregator": ["krum"]})
  with pytest.raises(ValueError, match="is an axis of grid"):
    GRID.override(aggregator="krum")
  with pytest.raises(ValueError, match="more than one axis"):
    ex.Grid("g", BASE, axes={"f": [1], ("f", "alpha"): [(1, 0.1)]})
  bad = GRID.replace(axes={"aggregator": ["trimmed_mean", "krumm"]})
  with pytest.raises(ex.GridError, match=r"Did you mean 'krum'.*aggregator=krumm"):
    ex.check(bad)
  impossible = GRID.replace(axes={"aggregator": ["bulyan"]})
  with pytest.raises(ex.GridError, match="bulyan"):
    ex.check(impossible)


def test_paper_krum_neighbours():
  c = ex.fixing_by_mixing_mnist(aggregator="krum")
  assert ex.fixing_by_mixing_krum(c).aggregator_args == {"krum": {"neighbours": 12}}
  bucketed = ex.fixing_by_mixing_krum(c.replace(aggregator="bucketing+krum"))
  assert bucketed.aggregator_args == {"krum": {"neighbours": 4}}  # 9 buckets
  mk = ex.fixing_by_mixing_krum(c.replace(aggregator="nnm+multi_krum"))
  assert mk.aggregator_args == {"multi_krum": {"neighbours": 12, "m": 13}}
  assert ex.fixing_by_mixing_krum(c.replace(aggregator="median")) == c.replace(
      aggregator="median")
  assert ex.with_stage_args(c, multi_krum={"m": 2}) == c


# ---------------------------------------------------------------------------
# The configs of experiments/.


def test_every_config_is_documented_and_valid():
  assert len(CONFIGS) >= 9
  names = set()
  for path in CONFIGS:
    grid = ex.load_grid(path)
    doc = open(path).read().split('"""')[1]
    assert "byzjax sweep experiments/" in doc, path
    assert "Expected" in doc, path
    assert grid.name not in names
    names.add(grid.name)
    ex.check(grid)  # every run of the full grid validates


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_runs_two_steps_on_tiny_settings(path, tmp_path):
  # The first point of the grid (baselines: f = 0 runs, tested elsewhere, and
  # the diagnostics' extra derivative left out to save compilation time).
  grid = ex.load_grid(path).tiny(steps=2, values_per_axis=1,
                                 model="logistic_regression")
  grid = grid.replace(baselines=()).override(diagnostics=False)
  results = ex.run_grid(grid, str(tmp_path), progress=False, plots=False)
  assert len(results.records) == len(ex.expand(grid))
  for record in results.records:
    assert record.result.eval_steps == [0, 1, 2]
    assert np.isfinite(record.result.loss).all()
  assert os.path.exists(os.path.join(str(tmp_path), "table.md"))
