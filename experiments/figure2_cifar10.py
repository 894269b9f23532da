"""Figure 2 of "Fixing by Mixing" (Allouah et al., AISTATS 2023): kappa_hat_t.

Reproduces: kappa_hat_t of eq. (26), the distance of the aggregate from the
honest momentums' mean in units of their spread, over the T = 2000 steps of
robust D-SHB on CIFAR-10 with f = 2 Byzantine workers among n = 17 and
alpha = 1, for NNM and Bucketing combined with Krum, GM, CWMed and CWTM,
under the optimized ALIE (column 1) and FOE (column 2) attacks, seeds 1-5
(8 methods x 2 attacks x 5 seeds = 80 runs). The accuracies are Figure 24's.

Command (needs the CIFAR-10 binary files: `byzjax data prepare cifar10
--from DIR` once, or --data-dir DIR):

  byzjax sweep experiments/figure2_cifar10.py

The figure is ``plots/kappa.png`` of the output folder (one panel per
attack, one line per method, with the proven (f, kappa) bounds dashed).

Expected (Section 10 of the paper; no printed numbers): the NNM curves lie
consistently below Bucketing's and are more stable.

Settings: those of ``figure1_cifar10.py`` (Table 3), evaluation every 50
steps.
"""

from byzjax import experiments as ex

GRID = ex.Grid(
    name="figure2_cifar10",
    description=__doc__.splitlines()[0],
    base=ex.fixing_by_mixing_cifar10(f=2, alpha=1.0),
    axes={"aggregator": ex.methods(ex.FBM_RULES, pre=["bucketing", "nnm"]),
          "attack": ["optimized_alie", "optimized_foe"]},
    seeds=(1, 2, 3, 4, 5),
    adjust=ex.fixing_by_mixing_krum,
)
