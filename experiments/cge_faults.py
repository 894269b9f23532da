"""CGE paper, Figures 2-3: five gradient filters against five fault types.

Reproduces: distributed learning of LeNet on MNIST with D-SGD, n = 10 agents
of which f = 1 is faulty, batch size k = 16, for the gradient filters
geometric median (GeoMed), geometric median of means (MoM), coordinate-wise
trimmed mean (CWTM), multi-KRUM (m = 2) and CGE, under the Byzantine faults
gradient-reverse, coordinate-wise and norm-confusing (Figure 2) and the
inadvertent faults label-flipping and random (Gaussian, std 200; Figure 3),
plus a fault-free run: 5 x 5 x 3 seeds + 3 = 78 runs.

Command (needs the MNIST training set):

  byzjax sweep experiments/cge_faults.py --data-dir /path/to/mnist

Expected (Section 3.4.1; the figures have no printed numbers): with one
faulty agent out of ten, D-SGD converges with all five filters; CGE's
fault-tolerance is consistently good across the five fault types; under
coordinate-wise faults every filter's curve is erratic (loss spikes,
accuracy dives), which the table's final accuracy exposes.

Settings (Section 3): agents sample i.i.d. data (every agent, faulty ones
included, holds a shard: ``byzantine_data``), LeNet (431,080 parameters),
PyTorch-style (Kaiming uniform) initialization, constant step size 0.1, no
momentum. Multi-KRUM scores over the n - f - 2 nearest gradients
(Blanchard et al.) and averages the m = 2 best; MoM uses l = 5 groups of 2
agents (the smallest divisor of n that is >= 2f + 1). Where the paper is
silent: T = 1000 steps, evaluation every 50, final test accuracy in the
table, seeds 1-3 (the paper plots single runs).

CGE takes the paper's eq. (7) step, the SUM of the n - f kept gradients at
step size 0.1 (``cge_paper_rules``), and a second baseline is eq. (3)'s
fault-free D-SGD, the sum of the 10 gradients. Measured
(``experiments/results/cge_faults/``): both diverge within the first 5-35
rounds on every seed, faults or not; ``cge_faults_mean.py`` trains CGE
averaging its kept gradients (a step 9 times smaller), under which the
paper's curves are possible, as an ablation.
"""

from byzjax import experiments as ex


GRID = ex.Grid(
    name="cge_faults",
    description=__doc__.splitlines()[0],
    base=ex.cge_mnist(f=1, batch_size=16),
    axes={"aggregator": list(ex.CGE_FILTERS), "attack": list(ex.CGE_FAULTS)},
    seeds=(1, 2, 3),
    baselines=[ex.CGE_FAULT_FREE, ex.CGE_FAULT_FREE_SUM],
    metric="final_accuracy",
    adjust=ex.cge_paper_rules,
)
