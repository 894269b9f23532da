"""AggregaThor: the price of robustness when nobody attacks (the slowdown).

Reproduces: Theorems 1(ii) and 2(ii) of the AggregaThor supplementary
report (Damaskinos et al., SysML 2019): without Byzantine workers,
Multi-Krum with m = n - f - 2 and AggregaThor (Bulyan over Multi-Krum)
converge more slowly than averaging, by a factor Omega(sqrt(m~ / n)) with
m~ = n - f - 2 (Multi-Krum) and m~ = n - 2f - 2 (AggregaThor). Here: n = 19
workers, none Byzantine, rules built for a declared f in {1, 2, 4} (Bulyan
needs n >= 4f + 3), MNIST CNN, D-SGD: 3 rules x 3 x 3 seeds = 27 runs.

Command (needs the MNIST training set):

  byzjax sweep experiments/aggregathor_slowdown.py --data-dir /path/to/mnist

(offline: ``--set dataset=mnist_test_as_train --data-dir
../shared/datasets/mnist``.) The table reports the test accuracy after 50
rounds (the curves, plots/accuracy.png, show the whole run).

Expected (the report has no experiments; these are the theorems'
predictions): sqrt(m~ / n) = 0.92, 0.89, 0.83 for Multi-Krum and 0.89,
0.83, 0.69 for AggregaThor at f = 1, 2, 4: Multi-Krum close to averaging,
AggregaThor behind it, the gap widening with f; all three reach the same
final accuracy.

Where the report is silent: the MNIST CNN of Allouah et al., i.i.d. data,
b = 25, constant step size 0.1 without momentum, clipping or l2, T = 300
rounds, evaluation every 10.
"""

from byzjax import experiments as ex


def adjust(config):
  """Multi-Krum with m = n - f - 2; Bulyan selecting by Multi-Krum."""
  config = ex.with_stage_args(config, bulyan={"selection": "multi_krum"})
  return ex.aggregathor_multi_krum(config)


GRID = ex.Grid(
    name="aggregathor_slowdown",
    description=__doc__.splitlines()[0],
    base=ex.fixing_by_mixing_mnist(
        n=19, f=0, split="iid", alpha=None, algorithm="dsgd", momentum=0.0,
        learning_rate=0.1, schedule="constant", clip=None, weight_decay=0.0,
        steps=300, eval_every=10),
    axes={"aggregator": ["mean", "multi_krum", "bulyan"],
          "declared_f": [1, 2, 4]},
    seeds=(1, 2, 3),
    columns="declared_f",
    metric="accuracy_at:50",
    adjust=adjust,
)
