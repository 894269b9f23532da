"""Appendix 15.1.3 of "Fixing by Mixing" (Figures 13-18): MDA, Multi-Krum and
MeaMed with NNM and Bucketing on MNIST, robust D-SHB.

Reproduces: NNM and Bucketing combined with MDA, Multi-Krum and MeaMed, in
the six (f, alpha) regimes of Figures 13-18 (f = 4: alpha in {0.1, 1, 10};
f = 6: alpha in {1, 10}; f = 8: alpha = 10), n = 17, the five attacks,
seeds 1-5 (6 x 6 x 5 x 5 = 1,080 runs plus a fault-free baseline per alpha).

Command (needs the MNIST training set):

  byzjax sweep experiments/appendix15_mnist_other_rules.py --data-dir /path/to/mnist

Expected (from the paper's text, no numbers printed): "very similar to"
Appendix 15.1.1: NNM with each of the three rules performs consistently well
in all regimes and under all attacks; Bucketing does not.

Multi-Krum averages the n - f vectors of least score, each scored over its
n - f nearest vectors (itself included), as in the authors' code; MDA
enumerates all C(17, f) subsets (24,310 at f = 8). Other settings as in
table2.py.
"""

from byzjax import experiments as ex

GRID = ex.Grid(
    name="appendix15_mnist_other_rules",
    description=__doc__.splitlines()[0],
    base=ex.fixing_by_mixing_mnist(),
    axes={("f", "alpha"): [(4, 0.1), (4, 1.0), (4, 10.0), (6, 1.0), (6, 10.0),
                           (8, 10.0)],
          "aggregator": ex.methods(["mda", "multi_krum", "meamed"],
                                   pre=["bucketing", "nnm"]),
          "attack": list(ex.FBM_ATTACKS)},
    seeds=(1, 2, 3, 4, 5),
    baselines=[ex.FBM_BASELINE],
    adjust=ex.fixing_by_mixing_krum,
)
