"""Appendix 15.1.1 of "Fixing by Mixing" (Figures 4-9): MNIST, robust D-SHB.

Reproduces: the learning curves of NNM and Bucketing (and the vanilla
rules) with Krum, GM, CWMed and CWTM on MNIST, n = 17, for the six
(f, alpha) regimes the paper plots: f = 4 with alpha in {0.1, 1, 10}
(Figures 4-6), f = 6 with alpha in {1, 10} (Figures 7-8) and f = 8 with
alpha = 10 (Figure 9), under the five attacks (optimized ALIE and FOE, LF,
SF, Mimic), seeds 1-5; 6 x 12 x 5 x 5 = 1,800 runs plus a fault-free D-SHB
baseline per alpha. Outputs: one table (maximum accuracy, worst case over
attacks) and one figure of curves per regime, and the worst case of every
method as a heatmap over f x alpha.

Command (needs the MNIST training set):

  byzjax sweep experiments/appendix15_mnist_dshb.py --data-dir /path/to/mnist

(offline: ``--set dataset=mnist_test_as_train --data-dir
../shared/datasets/mnist``; quick check: ``--tiny``.)

Expected (the figures have no numbers; from the paper's text): in every
regime NNM keeps each rule near the fault-free accuracy under all attacks,
while the vanilla rules and Bucketing fail under at least one attack; the
gap grows with f and shrinks with alpha. With f = 6 and f = 8, Bucketing has
buckets of s = floor(n / 2f) = 1 and is the vanilla rule (Section 15.1.1).
The (f = 4, alpha = 0.1) table is Table 2 (its numbers are printed beside
ours). Settings as in table2.py.
"""

from byzjax import experiments as ex

REGIMES = [(4, 0.1), (4, 1.0), (4, 10.0), (6, 1.0), (6, 10.0), (8, 10.0)]

GRID = ex.Grid(
    name="appendix15_mnist_dshb",
    description=__doc__.splitlines()[0],
    base=ex.fixing_by_mixing_mnist(),
    axes={("f", "alpha"): REGIMES,
          "aggregator": ex.methods(ex.FBM_RULES),
          "attack": list(ex.FBM_ATTACKS)},
    seeds=(1, 2, 3, 4, 5),
    baselines=[ex.FBM_BASELINE],
    adjust=ex.fixing_by_mixing_krum,
    paper="fixing_by_mixing_table2",
)
