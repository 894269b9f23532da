"""CGE paper, Figures 4-11: fraction of faulty agents and batch size.

Reproduces: multi-KRUM (m = 2) and CGE on MNIST (LeNet, D-SGD, n = 10) with
f in {1, 2, 3, 4} faulty agents and batch sizes k in {16, 64}, under the
five fault types (gradient-reverse, coordinate-wise, norm-confusing,
label-flipping, random): 4 x 2 x 2 x 5 x 3 seeds = 240 runs, plus a
fault-free run per batch size. One table per (f, k).

Command (needs the MNIST training set):

  byzjax sweep experiments/cge_fraction.py --data-dir /path/to/mnist

Expected (Section 3.4.1; no printed numbers): learning deteriorates as f/n
grows, for both filters; the larger batch (k = 64) improves the
fault-tolerance of both at every f; CGE degrades gracefully, consistent with
its analysis (Section 2.3).

Settings as in cge_faults.py (T = 1000, evaluation every 50, final test
accuracy, seeds 1-3 where the paper is silent).

CGE takes the paper's eq. (7) step (``cge_paper_rules``: the sum of the n - f
kept gradients at step size 0.1), beside eq. (3)'s fault-free sum; both
diverge in ``cge_faults``. ``cge_fraction_mean.py`` trains CGE averaging its
kept gradients, as an ablation.
"""

from byzjax import experiments as ex


GRID = ex.Grid(
    name="cge_fraction",
    description=__doc__.splitlines()[0],
    base=ex.cge_mnist(),
    axes={"f": [1, 2, 3, 4], "batch_size": [16, 64],
          "aggregator": ["multi_krum", "cge"], "attack": list(ex.CGE_FAULTS)},
    seeds=(1, 2, 3),
    baselines=[ex.CGE_FAULT_FREE, ex.CGE_FAULT_FREE_SUM],
    metric="final_accuracy",
    adjust=ex.cge_paper_rules,
)
