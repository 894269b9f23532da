"""Copies cge_faults' saved runs that are also runs of cge_fraction.

cge_fraction's f = 1, k = 16 runs of Multi-Krum and CGE, and its k = 16
fault-free baseline, have the same configuration as cge_faults' runs (the
digest ending a run id is the same): training them again would repeat the
same computation. This writes each such result under cge_fraction's run id,
label and settings, keeping the result and the environment that trained it
unchanged; the sweep then reuses them.

  python experiments/results/cge_fraction/reuse_cge_faults.py
"""

import json
import os
import sys

from byzjax import cli
from byzjax import grid as grid_lib
from byzjax import store

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, os.pardir, "cge_faults")
COMMAND = ["experiments/cge_fraction.py", "--seeds", "1", "2", "3", "--set",
           "dataset=mnist_test_as_train", "--data-dir", "../shared/datasets/mnist"]


def main() -> int:
  grid = cli.sweep_grid_from_args(cli._sweep_parser().parse_args(COMMAND))  # pylint: disable=protected-access
  by_digest = {run.id.rsplit("-", 1)[1]: run for run in grid_lib.expand(grid)}
  keys, _ = store.saved_keys(SOURCE)
  copied = 0
  for (run_id, seed), path in sorted(keys.items()):
    digest = run_id.rsplit("-", 1)[1]
    run = by_digest.get(digest)
    if run is None:
      continue
    target = store.result_path(HERE, run.id, seed)
    if os.path.exists(target):
      continue
    with open(path, encoding="utf-8") as fh:
      record = json.load(fh)
    if grid_lib.run_digest(store.config_from_dict(record["result"]["config"])) != digest:
      raise SystemExit(f"{path}: its configuration does not match its run id")
    record.update(run_id=run.id, kind=run.kind, label=run.label,
                  settings=grid_lib.plain(run.settings))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    store.atomic_write(target, json.dumps(record, separators=(",", ":")))
    copied += 1
  print(f"copied {copied} result file(s) from {os.path.normpath(SOURCE)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
