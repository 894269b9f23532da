"""Appendix 15.1.2 of "Fixing by Mixing" (Figures 10-12): MNIST, robust D-GD.

Reproduces: robust D-GD (Algorithm 1: every honest worker sends the gradient
of its whole local dataset, no momentum) with NNM, Bucketing and the
vanilla Krum, GM, CWMed and CWTM, f = 4 Byzantine among n = 17,
alpha in {0.1, 1, 10}, the five attacks, seeds 1-5 (3 x 12 x 5 x 5 = 900
runs plus a fault-free baseline per alpha).

Command (needs the MNIST training set):

  byzjax sweep experiments/appendix15_mnist_dgd.py --data-dir /path/to/mnist

Expected (from the paper's text, no numbers printed): the same observations
as with D-SHB (Appendix 15.1.1): NNM gives every rule a good worst case
across attacks, Bucketing and the vanilla rules do not, most visibly at
alpha = 0.1.

The paper gives no D-GD hyperparameters; we keep those of Table 3 (T = 800,
gamma_t = 0.75 / (1 + floor(t / 50)), clipping 2, l2 1e-4) without
momentum. Each round computes full-shard gradients (the 60,000 training
images): meant for an accelerator.
"""

from byzjax import experiments as ex

GRID = ex.Grid(
    name="appendix15_mnist_dgd",
    description=__doc__.splitlines()[0],
    base=ex.fixing_by_mixing_mnist(algorithm="dgd", momentum=0.0),
    axes={"alpha": [0.1, 1.0, 10.0],
          "aggregator": ex.methods(ex.FBM_RULES),
          "attack": list(ex.FBM_ATTACKS)},
    seeds=(1, 2, 3, 4, 5),
    baselines=[ex.Baseline("D-GD (f = 0)", {"f": 0, "aggregator": "mean"})],
    adjust=ex.fixing_by_mixing_krum,
)
