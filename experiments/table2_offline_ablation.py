"""Table 2 offline: each protocol choice reverted alone, on the cells it moves.

``table2_offline.py`` follows the protocol of the authors' group's code
where the paper is silent. This grid measures what each choice does by
reverting it alone (everything else as in ``table2_offline.py``) on the
cells it can move; one table per reverted choice:

* ``{"knows_server_randomness": true}``: the optimized ALIE and FOE simulate
  the server's Bucketing with the server's own random permutation instead of
  one of their own (byzjax before this protocol): Bucketing rows, ALIE and
  FOE columns, 8 runs.
* ``{"momentum": true}``: label flipping passes the flipped gradient through
  the worker momentum instead of sending it raw: the LF column, 12 runs.
* ``{"warmup": 1}``: Mimic learns its direction for 1 step (Karimireddy et
  al.'s default) instead of 100: the Mimic column, 12 runs.

The two other choices need no run of their own: the greedy line search
against the grid search is ``table2_offline_grid_attacks.py``; evaluating
every 50 steps instead of every 5 is read off the runs of
``table2_offline.py`` (evaluation does not touch training), by the script
``experiments/results/table2_offline/ablation.py``. 32 runs per seed.

Command (from the repository root, where ../shared/datasets/mnist is):

  byzjax sweep experiments/table2_offline_ablation.py

Expected: knowing the server's permutation makes ALIE and FOE much stronger
against Bucketing (the attacker then knows the buckets).

Measured (seed 1, ``experiments/results/table2_offline/ablation/`` and
``ablation.md`` beside it): the server's permutation takes Bucketing +
Krum from 57.5 / 56.4% to 11.2 / 11.2% (ALIE / FOE) and Bucketing + CWMed
vs FOE from 41.1 to 24.4%; LF through the momentum hits
the rules without NNM harder (Bucketing + CWMed 73.8 -> 34.3%) and NNM's
less; a 1-step Mimic warm-up is the weaker Mimic (Krum 38.6 -> 54.7%).
"""

import os

from byzjax import experiments as ex

_HERE = os.path.dirname(os.path.abspath(__file__))

_BASE = ex.load_grid(os.path.join(_HERE, "table2_offline.py"))
_METHODS = _BASE.values("aggregator")
_BUCKETING = [m for m in _METHODS if m.startswith("bucketing+")]

_CELLS = (
    [(m, a, {"knows_server_randomness": True}) for m in _BUCKETING
     for a in ("optimized_alie", "optimized_foe")]
    + [(m, "label_flip", {"momentum": True}) for m in _METHODS]
    + [(m, "mimic", {"warmup": 1}) for m in _METHODS])

GRID = _BASE.replace(
    name="table2_offline_ablation", description=__doc__.splitlines()[0],
    axes={("aggregator", "attack", "attack_args"): _CELLS}, baselines=(),
    paper=None, worst_case=False)
