"""CGE paper, Figures 13-14: gradient averaging against coordinate-wise faults.

Reproduces: D-SGD on MNIST (LeNet, n = 10, batch size k = 16) where the
server averages each agent's gradients over time, h_i <- alpha h_i + (1 -
alpha) g_i (Section 3.5), for alpha in {0, 0.2, 0.4, 0.6}, with
multi-KRUM (m = 2; Figure 13) and CGE (Figure 14), f in {1, 2, 3, 4}
faulty agents sending coordinate-wise faults: 4 x 4 x 2 x 3 seeds = 96
runs, plus the fault-free run. One table per f (rows: filters, columns:
alpha).

Command (needs the MNIST training set):

  byzjax sweep experiments/cge_averaging.py --data-dir /path/to/mnist

Expected (Section 3.5; no printed numbers): gradient averaging makes
learning more stable under coordinate-wise faults (fewer loss spikes and
accuracy dives) and the fault-tolerance of both filters improves as alpha
grows from 0 to 0.6.

Settings as in cge_faults.py (T = 1000, evaluation every 50, final test
accuracy, seeds 1-3 where the paper is silent).

CGE takes the paper's eq. (7) step (``cge_paper_rules``: the sum of the n - f
kept gradients at step size 0.1), which diverges without gradient averaging
in ``cge_faults`` (every seed, faults or not). Not run yet.
"""

from byzjax import experiments as ex


GRID = ex.Grid(
    name="cge_averaging",
    description=__doc__.splitlines()[0],
    base=ex.cge_mnist(batch_size=16, attack="coordinate_wise"),
    axes={"f": [1, 2, 3, 4], "aggregator": ["multi_krum", "cge"],
          "gradient_averaging": [0.0, 0.2, 0.4, 0.6]},
    seeds=(1, 2, 3),
    baselines=[ex.CGE_FAULT_FREE, ex.CGE_FAULT_FREE_SUM],
    columns="gradient_averaging",
    metric="final_accuracy",
    adjust=ex.cge_paper_rules,
)
