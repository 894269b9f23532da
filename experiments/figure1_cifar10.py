"""Figure 1 of "Fixing by Mixing" (Allouah et al., AISTATS 2023): CIFAR-10.

Reproduces: test accuracy over T = 2000 steps of robust D-SHB on CIFAR-10
with f = 2 Byzantine workers among n = 17, NNM and Bucketing combined with
GM, CWMed, CWTM and Krum, under the optimized ALIE attack and label
flipping (LF), for moderate (alpha = 1) and low (alpha = 10) heterogeneity,
seeds 1-5, plus fault-free D-SHB (2 x 8 x 2 x 5 = 160 runs + 10).

Command (needs the CIFAR-10 binary folder or a prepared tfds directory):

  byzjax sweep experiments/figure1_cifar10.py --data-dir /path/to/cifar-10-batches-bin

Expected (Section 6.3; the figure has no printed numbers): under ALIE, NNM
clearly beats Bucketing at both alphas; at alpha = 1, Bucketing + GM and
Bucketing + CWMed end close to 10% accuracy; at alpha = 10 every NNM
variant improves, while Bucketing + CWMed still stagnates at 10% and
Bucketing + GM barely reaches 30%; Bucketing + Krum does better but with a
lower accuracy and a larger variance than any NNM variant. LF is a weak
attack: every method converges, NNM at D-SHB's rate (alpha = 10), Bucketing
more slowly (especially with Krum).

Settings (Table 3): the CIFAR-10 CNN, b = 50, gamma = 0.25 then 0.025 after
step 1500, beta = 0.9 (Table 3's 0.99 is Figure 28's), clipping 5, l2 1e-2;
random horizontal flips of the training images (Appendix 14.2, ``hflip``);
Bucketing with s = floor(17 / 4) = 4; Krum as in the authors' code (n - f
nearest vectors, itself included). Where the paper is silent: evaluation
every 50 steps.
"""

from byzjax import experiments as ex

GRID = ex.Grid(
    name="figure1_cifar10",
    description=__doc__.splitlines()[0],
    base=ex.fixing_by_mixing_cifar10(f=2),
    axes={"alpha": [1.0, 10.0],
          "aggregator": ex.methods(ex.FBM_RULES, pre=["bucketing", "nnm"]),
          "attack": ["optimized_alie", "label_flip"]},
    seeds=(1, 2, 3, 4, 5),
    baselines=[ex.FBM_BASELINE],
    adjust=ex.fixing_by_mixing_krum,
)
