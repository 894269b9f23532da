"""CGE paper, Figures 2-3, ablation: CGE averaging its kept gradients.

The CGE cells of ``cge_faults.py`` with ``cge``'s default reduction, the
MEAN of the n - f gradients of smallest norm (the EPFL codebases' CGE),
instead of the paper's eq. (7), their SUM: at the same step size 0.1 a step
n - f = 9 times smaller. byzjax ran this form before the paper's configs
took eq. (7); its numbers stay here beside the paper's. 5 faults x 3 seeds
= 15 runs.

Command (from the repository root, where ../shared/datasets/mnist is):

  byzjax sweep experiments/cge_faults_mean.py --seeds 1 2 3 --set dataset=mnist_test_as_train --data-dir ../shared/datasets/mnist --no-plots --out experiments/results/cge_faults/cge_mean

Expected: the accuracies of byzjax's first CGE runs (``cge_faults`` before
the paper's eq. (7)), saved in ``experiments/results/cge_faults/cge_mean/``.
"""

import os

from byzjax import experiments as ex

_HERE = os.path.dirname(os.path.abspath(__file__))

GRID = ex.load_grid(os.path.join(_HERE, "cge_faults.py")).replace(
    name="cge_faults_mean", description=__doc__.splitlines()[0],
    baselines=(), adjust=None)
GRID = GRID.replace(axes={"aggregator": ["cge"], "attack": GRID.values("attack")})
