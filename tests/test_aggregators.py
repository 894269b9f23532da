"""Aggregators and pre-aggregations against NumPy references, and their properties."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
from byzjax.rows import Rows
from byzjax import aggregators as A
from byzjax import preaggregators as P


# (n, f, d): odd and even n, d = 1, f = 0.
SHAPES = [(7, 2, 5), (8, 3, 1), (10, 2, 6), (11, 3, 4), (17, 4, 9), (6, 0, 3)]
# Rules whose reference takes the same hyperparameters; ``None`` = defaults.
DETERMINISTIC = {
    "mean": {}, "median": {}, "trimmed_mean": {}, "meamed": {},
    "krum": {}, "multi_krum": {}, "mda": {}, "cge": {}, "monna": {},
    "geometric_median": {}, "caf": {}, "smea": {}, "centered_clipping": {},
}


def data(n, d, seed, scale=1.0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((n, d)) * scale + rng.standard_normal(d)).astype(dtype)


def valid(name, n, f):
  try:
    A.get(name).validate(n, f=f)
    return True
  except ValueError:
    return False


def run(name, x, f, **hyper):
  """The rule in float64, so that comparisons with the float64 references are
  not blurred by float32 rounding (float32 is checked in test_float32_close)."""
  with jax.enable_x64(True):
    hyper = {k: (jnp.asarray(v, jnp.float64) if isinstance(v, jax.Array) else v)
             for k, v in hyper.items()}
    return np.asarray(A.get(name)(jnp.asarray(x, jnp.float64), f=f, **hyper))


def reference(name, x, f, **hyper):
  return getattr(ref, name)(np.asarray(x, np.float64), f, **hyper)


# ---------------------------------------------------------------------------
# Against the NumPy references.


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
@pytest.mark.parametrize("n,f,d", SHAPES)
def test_matches_reference(name, n, f, d):
  if not valid(name, n, f):
    pytest.skip(f"{name} not defined for n={n}, f={f}")
  for seed in range(3):
    x = data(n, d, seed)
    np.testing.assert_allclose(run(name, x, f), reference(name, x, f),
                               rtol=2e-4, atol=2e-5, err_msg=f"seed {seed}")


@pytest.mark.parametrize("n,f,d", [(11, 2, 4), (15, 3, 6), (19, 4, 1), (20, 4, 3)])
@pytest.mark.parametrize("selection", ["krum", "multi_krum"])
def test_bulyan_matches_reference(n, f, d, selection):
  for seed in range(3):
    x = data(n, d, seed)
    np.testing.assert_allclose(run("bulyan", x, f, selection=selection),
                               ref.bulyan(x.astype(np.float64), f, selection),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hyper", [
    {"neighbours": 1}, {"neighbours": 5}, {"m": 2}, {"m": 1}, {"m": 3, "neighbours": 6}])
def test_krum_variants(hyper):
  x = data(10, 4, 0)
  if "m" in hyper:
    got, want = run("multi_krum", x, 2, **hyper), ref.multi_krum(x.astype(float), 2, **hyper)
  else:
    got, want = run("krum", x, 2, **hyper), ref.krum(x.astype(float), 2, **hyper)
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("n,f,d", [(10, 1, 5), (10, 4, 3), (7, 3, 1)])
def test_cge_sum_is_the_papers_eq7(n, f, d):
  """reduction="sum" is eq. (7) of the CGE paper; the mean is it / (n - f)."""
  x = data(n, d, 4)
  np.testing.assert_allclose(run("cge", x, f, reduction="sum"),
                             ref.cge(x.astype(float), f, reduction="sum"), rtol=1e-12)
  np.testing.assert_allclose(run("cge", x, f, reduction="sum") / (n - f),
                             run("cge", x, f), rtol=1e-12)
  with pytest.raises(ValueError, match="cge: reduction must be one of mean, sum, got 'total'"):
    A.get("cge").validate(n, f=f, reduction="total")


def test_krum_warns_outside_blanchards_condition():
  import warnings
  from byzjax import checks
  checks._warn_once.cache_clear()  # pylint: disable=protected-access
  x = jnp.asarray(np.random.default_rng(0).standard_normal((9, 5)), jnp.float32)
  for name in ("krum", "multi_krum"):
    with pytest.warns(checks.GuaranteeWarning,
                      match=rf"{name} with n=9, f=4: n <= 2f \+ 2 = 10"):
      A.get(name)(x, f=4)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    checks._warn_once.cache_clear()  # pylint: disable=protected-access
    A.get("krum")(x, f=3)  # n = 9 > 2f + 2 = 8
    A.get("krum")(x, f=4, neighbours=4)  # Allouah et al.'s n - f - 1 form


def test_reverse_differentiable_lets_jax_grad_through_a_rule():
  """Weiszfeld's loop stops on a data-dependent test, which reverse mode
  cannot transpose; inside ``kernels.reverse_differentiable()`` it runs its
  full length frozen after the stop: same values, and ``jax.grad`` works
  (checked against forward mode, which needs no switch)."""
  from byzjax import kernels
  x = jnp.asarray(np.random.default_rng(3).normal(size=(7, 5)), jnp.float32)
  gm = A.get("geometric_median")
  loss = lambda v: jnp.sum(gm(v, f=2) ** 2)
  forward = jax.jacfwd(loss)(x)
  with pytest.raises(ValueError, match="[Rr]everse-mode"):
    jax.grad(loss)(x)
  with kernels.reverse_differentiable():
    np.testing.assert_allclose(loss(x), jnp.sum(gm(x, f=2) ** 2), rtol=1e-6)
    backward = jax.grad(loss)(x)
  np.testing.assert_allclose(backward, forward, rtol=1e-4, atol=1e-5)


def test_krum_returns_a_row_bitwise():
  x = data(17, 50, 3)
  out = np.asarray(A.krum(jnp.asarray(x), f=4))
  assert any(np.array_equal(out, row) for row in x)


@pytest.mark.parametrize("hyper", [
    {"iterations": 3, "nu": 0.1, "init": "zero", "tolerance": 0.0},
    {"iterations": 5, "init": "mean"},
    {"iterations": 200, "tolerance": 1e-9},
    {"iterations": 0},
    {"iterations": 1, "init": "zero"},
])
def test_geometric_median_variants(hyper):
  x = data(9, 5, 1)
  np.testing.assert_allclose(run("geometric_median", x, 2, **hyper),
                             ref.geometric_median(x.astype(float), 2, **hyper),
                             rtol=1e-4, atol=1e-5)


def test_geometric_median_paths_agree():
  """8 iterations run over the data, 9 in distance space: same iterates."""
  x = data(13, 40, 2)
  for it in (8, 9):
    np.testing.assert_allclose(
        run("geometric_median", x, 3, iterations=it, tolerance=0.0),
        ref.geometric_median(x.astype(float), 3, iterations=it, tolerance=0.0),
        rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n,f,groups", [(12, 1, 3), (12, 2, 6), (10, 2, 5), (17, 4, 17)])
def test_median_of_means(n, f, groups):
  x = data(n, 4, 5)
  kw = {} if groups == 17 else {"num_groups": groups}
  np.testing.assert_allclose(run("median_of_means", x, f, **kw),
                             ref.median_of_means(x.astype(float), f, groups),
                             rtol=1e-4, atol=1e-5)


def test_centered_clipping_center_and_iterations():
  x = data(9, 6, 4, scale=5.0)
  center = np.linspace(-1, 1, 6).astype(np.float32)
  got = run("centered_clipping", x, 2, tau=1.5, iterations=3, center=jnp.asarray(center))
  want = ref.centered_clipping(x.astype(float), 2, tau=1.5, iterations=3, center=center)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("index", [0, 5])
def test_monna_index(index):
  x = data(11, 3, 6)
  np.testing.assert_allclose(run("monna", x, 3, index=index),
                             ref.monna(x.astype(float), 3, index), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(DETERMINISTIC) + ["bulyan", "median_of_means"])
def test_float32_close_to_reference(name):
  n, f = (15, 3) if name == "bulyan" else (17, 4)
  x = data(n, 64, 21)
  hyper = {"tolerance": 0.0, "iterations": 20} if name in (
      "geometric_median", "median_of_means") else {}
  got = np.asarray(A.get(name)(jnp.asarray(x), f=f, **hyper), np.float64)
  np.testing.assert_allclose(got, run(name, x, f, **hyper), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# Pre-aggregations.


@pytest.mark.parametrize("n,f,d", SHAPES)
def test_nnm_matches_reference(n, f, d):
  x = data(n, d, 7)
  np.testing.assert_allclose(np.asarray(P.nnm(jnp.asarray(x), f=f)),
                             ref.nnm(x.astype(float), f), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n,f,s", [(17, 4, None), (10, 2, 3), (9, 1, 9), (8, 0, None)])
def test_bucketing_matches_reference(n, f, s):
  x = data(n, 3, 8)
  key = jax.random.key(11)
  got = np.asarray(P.bucketing(jnp.asarray(x), f=f, key=key, bucket_size=s))
  size = P.default_bucket_size(n, f) if s is None else s
  perm = np.asarray(jax.random.permutation(key, n))
  np.testing.assert_allclose(got, ref.bucketing(x.astype(float), f, perm, size),
                             rtol=1e-6)
  again = P.bucketing(jnp.asarray(x), f=f, key=key, bucket_size=s)
  np.testing.assert_array_equal(got, np.asarray(again))  # same key, same rows


def test_bucketing_keys_differ():
  x = jnp.asarray(data(17, 3, 8))
  a = P.bucketing(x, f=4, key=jax.random.key(0))
  b = P.bucketing(x, f=4, key=jax.random.key(1))
  assert not np.allclose(a, b)


@pytest.mark.parametrize("threshold", [0.5, 2.0, 100.0])
def test_clipping(threshold):
  x = data(9, 4, 9)
  np.testing.assert_allclose(np.asarray(P.clipping(jnp.asarray(x), f=2, threshold=threshold)),
                             ref.clipping(x.astype(float), 2, threshold), rtol=1e-5)


@pytest.mark.parametrize("n,f", [(17, 4), (10, 1), (9, 0), (7, 3)])
def test_arc(n, f):
  x = data(n, 5, 10, scale=3.0)
  np.testing.assert_allclose(np.asarray(P.arc(jnp.asarray(x), f=f)),
                             ref.arc(x.astype(float), f), rtol=1e-5, atol=1e-6)


COMPOSITIONS = [
    ("nnm", "trimmed_mean"), ("nnm", "krum"), ("nnm", "multi_krum"), ("nnm", "mda"),
    ("nnm", "geometric_median"), ("nnm", "caf"), ("nnm", "median"), ("nnm", "cge"),
    ("arc", "krum"), ("clipping", "multi_krum"), ("arc", "nnm", "mda"),
    ("clipping", "nnm", "geometric_median"), ("nnm", "nnm", "krum"),
]


@pytest.mark.parametrize("stages", COMPOSITIONS, ids="+".join)
def test_compose_matches_chained_reference(stages):
  """Lazily mixed rows (distances derived in n x n space) equal the explicit chain."""
  n, f = 13, 3
  x = data(n, 7, 12, scale=2.0)
  y = x.astype(np.float64)
  for pre in stages[:-1]:
    y = getattr(ref, pre)(y, f)
  want = getattr(ref, stages[-1])(y, f)
  got = np.asarray(A.compose(*stages, f=f, n=n)(jnp.asarray(x)))
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_compose_bucketing_then_rule():
  n, f = 17, 4
  x = data(n, 5, 13)
  key = jax.random.key(3)
  rule = A.compose("bucketing", "trimmed_mean", f=f)
  _, sub = jax.random.split(key)
  perm = np.asarray(jax.random.permutation(sub, n))
  buckets = ref.bucketing(x.astype(float), f, perm, P.default_bucket_size(n, f))
  np.testing.assert_allclose(np.asarray(rule(jnp.asarray(x), key=key)),
                             ref.trimmed_mean(buckets, f), rtol=1e-5)


def test_compose_string_and_pairs():
  x = jnp.asarray(data(17, 4, 0))
  a = A.compose("nnm+krum", f=4)(x)
  b = A.compose(P.nnm, (A.krum, {"neighbours": 11}), f=4)(x)
  c = A.compose("nnm", ("krum", {"neighbours": 11}), f=4)(x)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(b, c)


# ---------------------------------------------------------------------------
# Properties.

PERMUTATION_INVARIANT = ["mean", "median", "trimmed_mean", "meamed", "krum",
                         "multi_krum", "bulyan", "mda", "cge", "geometric_median",
                         "caf", "smea", "centered_clipping"]


@pytest.mark.parametrize("name", PERMUTATION_INVARIANT)
def test_permutation_invariance(name):
  n, f = (15, 3) if name == "bulyan" else (12, 3)
  x = data(n, 6, 14)
  perm = np.random.default_rng(0).permutation(n)
  np.testing.assert_allclose(run(name, x[perm], f), run(name, x, f), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stages", [("nnm", "krum"), ("nnm", "trimmed_mean"), ("arc", "mda")],
                         ids="+".join)
def test_permutation_invariance_composed(stages):
  x = data(12, 6, 15)
  perm = np.random.default_rng(1).permutation(12)
  rule = A.compose(*stages, f=3)
  np.testing.assert_allclose(np.asarray(rule(jnp.asarray(x[perm]))),
                             np.asarray(rule(jnp.asarray(x))), rtol=1e-5, atol=1e-6)


TRANSLATION_EQUIVARIANT = ["mean", "median", "trimmed_mean", "meamed", "krum",
                           "multi_krum", "bulyan", "mda", "geometric_median", "caf",
                           "smea", "monna", "median_of_means"]


@pytest.mark.parametrize("name", TRANSLATION_EQUIVARIANT + ["nnm+krum", "nnm+trimmed_mean",
                                                            "nnm+geometric_median"])
def test_translation_equivariance(name):
  """F(x + c) = F(x) + c, with |c| 100x the spread: distances stay exact."""
  n, f = (15, 3) if "bulyan" in name else (12, 3)
  x = data(n, 6, 16, scale=0.5)
  c = (100.0 * np.random.default_rng(2).standard_normal(6)).astype(np.float32)
  rule = A.compose(name, f=f)
  got = np.asarray(rule(jnp.asarray(x + c)), np.float64)
  want = np.asarray(rule(jnp.asarray(x)), np.float64) + c
  np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(c).max() + 2e-4)


@pytest.mark.parametrize("name", ["trimmed_mean", "meamed", "multi_krum", "mda", "cge",
                                  "smea", "caf", "monna"])
def test_f_zero_is_the_mean(name):
  x = data(9, 5, 17)
  np.testing.assert_allclose(run(name, x, 0), x.astype(float).mean(0), rtol=1e-5, atol=1e-6)


def test_nnm_f_zero_replaces_every_row_by_the_mean():
  x = data(9, 5, 17)
  out = np.asarray(P.nnm(jnp.asarray(x), f=0))
  np.testing.assert_allclose(out, np.tile(x.mean(0), (9, 1)), rtol=1e-5, atol=1e-6)


def test_median_f_zero_and_even_n():
  x = np.array([[1.0], [5.0], [2.0], [10.0]], np.float32)
  assert float(A.median(jnp.asarray(x), f=0)[0]) == 3.5
  assert float(A.trimmed_mean(jnp.asarray(x), f=1)[0]) == 3.5
  # meamed, n - f = 3 values closest to the median 3.5: {1, 2, 5}.
  np.testing.assert_allclose(float(A.meamed(jnp.asarray(x), f=1)[0]), 8 / 3, rtol=1e-6)


FARTHER_INVARIANT = ["median", "trimmed_mean", "meamed", "krum", "multi_krum", "bulyan",
                     "mda", "cge", "smea", "monna", "nnm+trimmed_mean", "nnm+krum",
                     "nnm+mda", "nnm+median"]


@pytest.mark.parametrize("name", FARTHER_INVARIANT)
def test_output_unchanged_when_outliers_move_farther(name):
  n, f = (15, 3) if "bulyan" in name else (13, 4)
  h = n - f
  honest = data(h, 6, 18)
  direction = np.random.default_rng(3).standard_normal(6).astype(np.float32)
  byz = honest.mean(0) + direction * (1 + np.arange(f)[:, None] * 0.1)
  rule = A.compose(name, f=f)
  outs = [np.asarray(rule(jnp.asarray(np.concatenate([honest, honest.mean(0) + (byz - honest.mean(0)) * s]))))
          for s in (1e2, 1e4)]
  np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4)


NON_FINITE = {
    "inf": lambda f, d: np.full((f, d), np.inf),
    "-inf": lambda f, d: np.full((f, d), -np.inf),
    "nan": lambda f, d: np.full((f, d), np.nan),
    "1e38": lambda f, d: np.full((f, d), 1e38),
    "mixed": lambda f, d: np.stack([np.full(d, [np.inf, np.nan, -1e38, -np.inf][i % 4])
                                    for i in range(f)]),
    "one_coordinate": lambda f, d: np.where(np.arange(d) == 0, np.nan, 1.0) * np.ones((f, d)),
}
ROBUST = [name for name in A.names() if name != "mean"]


@pytest.mark.parametrize("kind", sorted(NON_FINITE))
@pytest.mark.parametrize("name", ROBUST + ["nnm+trimmed_mean", "nnm+krum", "arc+cge",
                                           "bucketing+median", "clipping+mda",
                                           "nnm+geometric_median"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_non_finite_rows(name, kind, dtype):
  if dtype == jnp.bfloat16 and kind not in ("mixed", "1e38"):
    pytest.skip("bfloat16 is checked on the mixed and 1e38 rows")
  n, f = (15, 3) if "bulyan" in name else (13, 4)
  honest = 1.0 + 0.1 * data(n - f, 5, 19)
  x = np.concatenate([honest, NON_FINITE[kind](f, 5)]).astype(np.float32)
  out = np.asarray(A.compose(name, f=f)(jnp.asarray(x, dtype), key=jax.random.key(0)),
                   np.float64)
  assert out.shape == (5,)
  assert np.all(np.isfinite(out)), out
  spread = np.max(np.linalg.norm(honest - honest.mean(0), axis=1))
  assert np.linalg.norm(out - honest.mean(0)) <= 3 * spread + 0.05


@pytest.mark.parametrize("scale", [1e10, 1e14, 1e18])
@pytest.mark.parametrize("name", ROBUST + ["nnm+trimmed_mean", "nnm+krum", "arc+cge",
                                           "bucketing+median", "nnm+caf",
                                           "nnm+geometric_median"])
def test_huge_finite_rows(name, scale):
  """f distinct rows of huge finite values (their squared distances still fit
  float32 up to about 1e18): no Gram or squared-distance quantity may
  overflow and switch the rule off (CAF used to return the plain mean)."""
  n, f = (15, 3) if "bulyan" in name else (13, 4)
  honest = 1.0 + 0.1 * data(n - f, 5, 21)
  byz = scale * (1.0 + data(f, 5, 22))
  x = np.concatenate([honest, byz]).astype(np.float32)
  out = np.asarray(A.compose(name, f=f)(jnp.asarray(x), key=jax.random.key(0)), np.float64)
  assert np.all(np.isfinite(out)), out
  spread = np.max(np.linalg.norm(honest - honest.mean(0), axis=1))
  if name == "dnc":
    # DnC itself keeps a Byzantine row orthogonal to the top singular vector
    # here (at any scale): float32 must give what float64 NumPy gives.
    c = x.astype(np.float64) - x.astype(np.float64).mean(0)
    scores = (c @ np.linalg.svd(c)[2][0]) ** 2
    want = x.astype(np.float64)[np.argsort(scores)[:n - f]].mean(0)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * scale)
    return
  # Centered clipping moves each row's pull to at most tau = 100, by design.
  slack = f * 100.0 / n if name == "centered_clipping" else 0.0
  assert np.linalg.norm(out - honest.mean(0)) <= 3 * spread + 0.05 + slack, out


def test_caf_huge_rows_match_the_reference():
  """The float64 reference on rows at 1e10: CAF filters them as it does at 1."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((10, 5)).astype(np.float32)
  x[-3:] = 1e10 * (1 + rng.standard_normal((3, 5)))
  np.testing.assert_allclose(np.asarray(A.caf(jnp.asarray(x), f=3)),
                             ref.caf(x.astype(np.float64), 3), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_caf_removes_every_row_tied_at_tau_max(dtype):
  """Three rows tied at tau_max are all removed at once, as the paper's
  procedure (and the float64 reference) does; a compiled loop used to keep
  two of them with weights of 1e-16, which then set tau_max again."""
  x = np.array([2, -1, -1, 2, 2, -1, 0, -1, -2], np.float64)[:, None]
  assert ref.caf(x, 3)[0] == -0.75
  with jax.enable_x64(dtype == jnp.float64):
    out = jax.jit(lambda v: A.caf(v, f=3))(jnp.asarray(x, dtype))
    np.testing.assert_allclose(np.asarray(out, np.float64), [-0.75], rtol=1e-6)


def _weiszfeld_float32(x, iterations, nu):
  """A plain float32 Weiszfeld loop over the data from zero, every iteration."""
  z = np.zeros(x.shape[1], np.float32)
  for _ in range(iterations):
    w = 1 / np.maximum(np.sqrt(((x - z) ** 2).sum(1)), np.float32(nu))
    z = ((w[:, None] * x).sum(0) / w.sum()).astype(np.float32)
  return z


@pytest.mark.parametrize("iterations", [3, 100])
def test_geometric_median_tolerance_zero_runs_every_iteration(iterations):
  """tolerance=0 runs all the iterations even where the float32 objective
  rounds up after a step (a d = 1 input with zero rows, started at zero, the
  iterates first pinned near a zero row), and the distance-space loop leaves a
  zero row as the loop over the data does."""
  rng = np.random.default_rng(183)
  x = rng.standard_normal((9, 1)).astype(np.float32) * 3
  x[rng.random(9) < 0.3] = 0
  got = np.asarray(A.geometric_median(jnp.asarray(x), f=2, init="zero", nu=1e-6,
                                      tolerance=0.0, iterations=iterations))
  np.testing.assert_allclose(got, _weiszfeld_float32(x, iterations, 1e-6),
                             atol=1e-5 * np.abs(x).max())
  if iterations == 100:  # converged to the median of the 9 values
    np.testing.assert_allclose(got, np.median(x, 0), rtol=1e-5)


def test_mean_propagates_non_finite():
  x = np.ones((5, 3), np.float32)
  x[-1] = np.inf
  assert np.all(np.isinf(np.asarray(A.mean(jnp.asarray(x), f=1))))


@pytest.mark.parametrize("name", ["trimmed_mean", "krum", "geometric_median", "nnm+mda",
                                  "bulyan", "monna", "centered_clipping"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float64])
def test_dtypes(name, dtype):
  n, f = (15, 3) if name == "bulyan" else (13, 4)
  x = data(n, 7, 20)
  want = np.asarray(A.compose(name, f=f)(jnp.asarray(x)), np.float64)
  with jax.enable_x64(dtype == jnp.float64):
    out = A.compose(name, f=f)(jnp.asarray(x, dtype))
    assert out.dtype == dtype
    tol = 5e-2 if dtype == jnp.bfloat16 else 1e-5
    np.testing.assert_allclose(np.asarray(out, np.float64), want, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------
# (f, kappa)-robustness (Allouah et al. 2023, Definition 2, Appendix 8.1, Lemma 1).


def kappa_table(name, n, f):
  r = f / (n - 2 * f)
  return {"trimmed_mean": 6 * r * (1 + r), "median": 4 * (1 + r) ** 2,
          "krum": 6 * (1 + r), "geometric_median": 4 * (1 + r) ** 2}[name]


KAPPA_HYPER = {"krum": {"neighbours": None},  # set to n - f - 1 below
               "geometric_median": {"iterations": 1000, "tolerance": 1e-12, "nu": 1e-9}}


def kappa_inputs(n, f, d, seed):
  """Random honest rows with Byzantine rows from several attacks, plus the
  lower-bound input of Proposition 6 and its mirror."""
  rng = np.random.default_rng(seed)
  honest = rng.standard_normal((n - f, d)) * rng.uniform(0.1, 3.0, d)
  s, sigma = honest.mean(0), honest.std(0)
  byz = {
      "far": s + 1e3 * rng.standard_normal(d),
      "alie": s + 1.0 * sigma,
      "alie_strong": s + 3.0 * sigma,
      "sign_flip": -s,
      "inner": honest[0] + 0.01 * rng.standard_normal(d),
      "spread": None,
  }
  out = []
  for kind, row in byz.items():
    rows = (s + sigma * rng.standard_normal((f, d)) * 2) if row is None else np.tile(row, (f, 1))
    out.append(np.concatenate([honest, rows]))
  lower = np.zeros((n, d))
  lower[n - f:] = 1.0
  out.append(lower)
  return out


def max_kappa_ratio(out, x, f):
  """max over all S of size n - f of ||F - mean_S||^2 / var_S."""
  n = len(x)
  worst = 0.0
  for s in itertools.combinations(range(n), n - f):
    xs = x[list(s)]
    mu = xs.mean(0)
    var = np.mean(np.sum((xs - mu) ** 2, axis=1))
    err = np.sum((out - mu) ** 2)
    if var > 0:
      worst = max(worst, err / var)
    else:
      assert err < 1e-9
  return worst


@pytest.mark.parametrize("name", ["trimmed_mean", "median", "krum", "geometric_median"])
@pytest.mark.parametrize("nnm", [False, True], ids=["plain", "nnm"])
@pytest.mark.parametrize("n,f", [(9, 2), (11, 3), (10, 4)])
def test_f_kappa_robustness(name, nnm, n, f):
  kappa = kappa_table(name, n, f)
  bound = 8 * f / (n - f) * (kappa + 1) if nnm else kappa
  hyper = dict(KAPPA_HYPER.get(name, {}))
  if name == "krum":
    hyper["neighbours"] = n - f - 1  # the variant analysed in Proposition 3
  stages = "+".join((["nnm"] if nnm else []) + [name])
  assert A.robustness_coefficient(stages, n=n, f=f, aggregator_args={
      name: hyper}) == pytest.approx(bound, rel=1e-12)
  rule = A.compose(*(["nnm"] if nnm else []), (name, hyper), f=f)
  worst = 0.0
  for seed in range(4):
    for x in kappa_inputs(n, f, 3, seed):
      with jax.enable_x64(True):
        out = np.asarray(rule(jnp.asarray(x, jnp.float64)))
      worst = max(worst, max_kappa_ratio(out, x, f))
  assert worst <= bound * (1 + 1e-6), (worst, bound)
  assert worst > 0


def test_robustness_coefficient_only_where_the_paper_proves_one():
  assert A.robustness_coefficient("krum", n=17, f=4) is None  # n - f - 2 neighbours
  assert A.robustness_coefficient("bucketing+trimmed_mean", n=17, f=4) is None
  assert A.robustness_coefficient("nnm+mda", n=17, f=4) is None
  assert A.robustness_coefficient("nnm+krum", n=17, f=4, aggregator_args={
      "krum": {"neighbours": 12}}) == pytest.approx(8 * 4 / 13 * (6 * 13 / 9 + 1))


def test_adversarial_search_stays_under_kappa():
  """Random search over Byzantine placements for trimmed mean and NNM + CWTM."""
  n, f, d = 11, 3, 2
  rng = np.random.default_rng(0)
  honest = rng.standard_normal((n - f, d))
  for name, nnm in [("trimmed_mean", False), ("trimmed_mean", True), ("median", True)]:
    kappa = kappa_table(name, n, f)
    bound = 8 * f / (n - f) * (kappa + 1) if nnm else kappa
    rule = jax.jit(A.compose(*(["nnm"] if nnm else []), name, f=f))
    best = 0.0
    for _ in range(60):
      byz = honest.mean(0) + rng.standard_normal((f, d)) * rng.uniform(0, 5)
      x = np.concatenate([honest, byz])
      with jax.enable_x64(True):
        out = np.asarray(rule(jnp.asarray(x, jnp.float64)))
      best = max(best, max_kappa_ratio(out, x, f))
    assert best <= bound, (name, nnm, best, bound)


def test_lower_bound_is_respected():
  """Proposition 6: no rule beats f / (n - 2f); CWTM's ratio meets it here."""
  n, f = 9, 2
  x = np.zeros((n, 1))
  x[n - f:] = 1.0
  with jax.enable_x64(True):
    out = np.asarray(A.trimmed_mean(jnp.asarray(x), f=f))
  assert max_kappa_ratio(out, x, f) >= f / (n - 2 * f) - 1e-9


# ---------------------------------------------------------------------------
# jit, retracing, validation.

ALL_RULES = A.names() + ["nnm+trimmed_mean", "nnm+krum", "bucketing+geometric_median",
                         "arc+multi_krum", "clipping+mda"]


@pytest.mark.parametrize("name", ALL_RULES)
def test_jit_equals_eager_and_does_not_retrace(name):
  n, f = (15, 3) if "bulyan" in name else (13, 3)
  rule = A.compose(name, f=f)
  traces = []

  def fn(x, key):
    traces.append(1)
    return rule(x, key=key)

  jitted = jax.jit(fn)
  key = jax.random.key(5)
  for seed in range(3):
    x = jnp.asarray(data(n, 8, 30 + seed))
    np.testing.assert_allclose(np.asarray(jitted(x, key)), np.asarray(rule(x, key=key)),
                               rtol=1e-5, atol=1e-6)
  assert len(traces) == 1


def test_vmap_over_inputs():
  xs = jnp.asarray(np.stack([data(13, 5, s) for s in range(4)]))
  rule = A.compose("nnm+krum", f=3)
  batched = jax.vmap(rule)(xs)
  for i in range(4):
    np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(rule(xs[i])), rtol=1e-6)


@pytest.mark.parametrize("call,message", [
    (lambda x: A.trimmed_mean(x, f=-1), "f must be an int >= 0, got f=-1"),
    (lambda x: A.trimmed_mean(x, f=5), "needs n > 2f"),
    (lambda x: A.krum(x, f=1.5), "f must be an int >= 0, got 1.5"),
    (lambda x: A.bulyan(x, f=3), "bulyan needs n >= 4f + 3, got n=10, f=3"),
    (lambda x: A.krum(x[:3], f=1), "needs n >= f + 3"),
    (lambda x: A.krum(x, f=2, neighbours=10), "neighbours must be an int <= 9, got neighbours=10"),
    (lambda x: A.multi_krum(x, f=2, m=0), "m must be an int >= 1, got m=0"),
    (lambda x: A.mda(x, f=4, max_subsets=100), "C(n, f) = C(10, 4) = 210"),
    (lambda x: A.geometric_median(x, f=1, nu=-1.0), "nu must be finite and > 0"),
    (lambda x: A.geometric_median(x, f=1, init="origin"), "init must be one of"),
    (lambda x: A.median_of_means(x, f=1, num_groups=4), "num_groups must divide n"),
    (lambda x: A.median_of_means(x, f=3, num_groups=5), "num_groups must be an int >= 7"),
    (lambda x: A.monna(x, f=1, index=10), "index must be an int <= 9"),
    (lambda x: A.centered_clipping(x, f=1, tau=0.0), "tau must be finite and > 0"),
    (lambda x: P.bucketing(x, f=1, key=jax.random.key(0), bucket_size=11), "bucket_size must be an int <= 10"),
    (lambda x: P.bucketing(x, f=1), "pass key="),
    (lambda x: P.clipping(x, f=1, threshold=float("nan")), "threshold must be finite"),
    (lambda x: A.trimmed_mean(x[0], f=1), "takes an (n, d) array"),
    (lambda x: A.trimmed_mean(x.astype(jnp.int32), f=1), "floating array"),
    (lambda x: A.compose("nnm+trimmed_meen", f=1), "Did you mean 'trimmed_mean'"),
    (lambda x: A.compose("krum", "nnm", f=1), "only the last stage"),
    (lambda x: A.compose("nnm", f=1), "must be an aggregator"),
    (lambda x: A.compose("bucketing", "bulyan", f=1, n=10), "bulyan needs n > 2f (a Byzantine minority), got n=2, f=1"),
    (lambda x: A.get("krun"), "Did you mean 'krum'"),
])
def test_bad_input_raises_clear_errors(call, message):
  x = jnp.asarray(data(10, 3, 0))
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                     .replace("+", r"\+")):
    call(x)


def test_validation_happens_before_compilation():
  compiled = []

  def fn(x):
    compiled.append(1)
    return A.bulyan(x, f=3)

  with pytest.raises(ValueError, match="bulyan needs"):
    jax.jit(fn).lower(jnp.zeros((10, 4)))
  assert compiled == [1]  # raised while tracing, before any XLA compilation


# ---------------------------------------------------------------------------
# Kernel paths: sorting networks and their fallback, pairwise distances (exact
# pair reductions up to 32 rows, a centred Gram matrix above), 1e38 rows.


@pytest.mark.parametrize("n", [2, 3, 17, 40, 130])
def test_sorted_rows_match_numpy(n):
  """Networks (n <= 128) and jnp.sort (n > 128) sort every coordinate, NaN last."""
  rng = np.random.default_rng(n)
  x = rng.integers(-3, 4, (n, 40)).astype(np.float32)  # many ties
  x[rng.random((n, 40)) < 0.1] = np.inf
  x[rng.random((n, 40)) < 0.1] = -np.inf
  x[rng.random((n, 40)) < 0.05] = np.nan
  got = np.stack(jax.jit(lambda v: Rows(v).sorted())(jnp.asarray(x)))
  np.testing.assert_array_equal(got, np.sort(np.where(np.isnan(x), np.inf, x), axis=0))


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "meamed"])
@pytest.mark.parametrize("n,f", [(40, 9), (130, 20)])
def test_order_statistics_many_rows(name, n, f):
  x = data(n, 5, 41)
  x[:f // 2] = np.inf  # treated as the largest values
  np.testing.assert_allclose(np.asarray(A.get(name)(jnp.asarray(x), f=f)),
                             reference(name, x, f), rtol=1e-5, atol=1e-6)
  nan = x.copy()
  nan[:f // 2] = np.nan  # NaN counts as +inf
  np.testing.assert_array_equal(np.asarray(A.get(name)(jnp.asarray(nan), f=f)),
                                np.asarray(A.get(name)(jnp.asarray(x), f=f)))


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "meamed", "bulyan"])
def test_order_statistics_exact_next_to_1e38_rows(name):
  """Byzantine values near the float32 maximum cost the honest values no digit."""
  n, f = (15, 3) if name == "bulyan" else (17, 4)
  honest = 1.0 + 0.1 * data(n - f, 64, 42)
  byz = np.where(np.arange(f)[:, None] % 2, 3e38, -3e38) * np.ones((f, 64))
  x = np.concatenate([byz[:2], honest, byz[2:]]).astype(np.float32)
  got = np.asarray(A.get(name)(jnp.asarray(x), f=f), np.float64)
  np.testing.assert_allclose(got, reference(name, x, f), rtol=1e-6)


@pytest.mark.parametrize("n", [2, 5, 16, 17, 40])
@pytest.mark.parametrize("d", [300, 400, 520])  # zero-padded, 25 x 16 and 65 x 8 blocks
def test_pairwise_distances_match_float64(n, d):
  """Rows 100x their spread away from the origin keep their distances."""
  x = data(n, d, 43) + np.float32(100.0)
  got = np.asarray(Rows(jnp.asarray(x)).dist(), np.float64)
  x64 = x.astype(np.float64)
  want = np.sum((x64[:, None] - x64[None]) ** 2, axis=-1)
  np.testing.assert_allclose(got, want, rtol=2e-5)


@pytest.mark.parametrize("d", [300, 400, 520])
def test_row_sq_distances_match_float64(d):
  x = data(17, d, 46) + np.float32(100.0)
  z = x[3] + data(1, d, 47)[0]
  x64, z64 = x.astype(np.float64), z.astype(np.float64)
  np.testing.assert_allclose(np.asarray(Rows(jnp.asarray(x)).sq_norms()),
                             np.sum(x64 ** 2, axis=1), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(Rows(jnp.asarray(x)).sq_distances_to(jnp.asarray(z))),
                             np.sum((x64 - z64) ** 2, axis=1), rtol=1e-5)
  x[5, 7] = np.nan
  assert np.isinf(np.asarray(Rows(jnp.asarray(x)).sq_norms())[5])  # bad: +inf
  assert np.isnan(np.asarray(Rows(jnp.asarray(x)).sq_distances_to(jnp.asarray(z)))[5])


@pytest.mark.parametrize("n", [5, 16, 17])  # odd, and even (pairs met twice)
@pytest.mark.parametrize("norms", [False, True])
def test_distance_derivatives_match_float64(n, norms):
  """Forward: d||x_i - x_j||^2 along t is 2 <x_i - x_j, t_i - t_j>, and
  d||x_i||^2 is 2 <x_i, t_i>; reverse: the gradient of sum_ij w_ij D_ij is
  4 sum_j w_ij (x_i - x_j) for a symmetric w (the blocked CPU pass has a
  derivative of its own, so this checks it against the formula)."""
  d = 520  # 65 x 8 blocks
  x, t = data(n, d, 48), data(n, d, 49)
  x64, t64 = x.astype(np.float64), t.astype(np.float64)
  diff = x64[:, None] - x64[None]
  want = 2 * np.sum(diff * (t64[:, None] - t64[None]), axis=-1)
  rows = lambda v: Rows(v).dist() if not norms else (Rows(v).dist(), Rows(v).sq_norms())
  _, got = jax.jvp(rows, (jnp.asarray(x),), (jnp.asarray(t),))
  got_dist = got[0] if norms else got
  np.testing.assert_allclose(np.asarray(got_dist, np.float64), want, rtol=1e-4,
                             atol=1e-4 * np.abs(want).max())
  if norms:
    np.testing.assert_allclose(np.asarray(got[1], np.float64),
                               2 * np.sum(x64 * t64, axis=1), rtol=1e-4)
  w = data(n, n, 50).astype(np.float64)
  w = w + w.T
  grad = jax.grad(lambda v: jnp.sum(jnp.asarray(w, jnp.float32) * Rows(v).dist()))(
      jnp.asarray(x))
  want_grad = 4 * np.sum(w[:, :, None] * diff, axis=1)
  np.testing.assert_allclose(np.asarray(grad, np.float64), want_grad, rtol=1e-4,
                             atol=1e-4 * np.abs(want_grad).max())


def test_pairwise_distances_of_non_finite_rows():
  x = data(7, 50, 45)
  x[2, 3], x[5] = np.nan, np.inf
  got = np.asarray(Rows(jnp.asarray(x)).dist())
  finite = np.ones((7, 7), bool)
  finite[[2, 5], :] = finite[:, [2, 5]] = False
  np.fill_diagonal(finite, True)
  assert np.all(np.isfinite(got) == finite)
  np.testing.assert_array_equal(np.diagonal(got), 0.0)


def test_many_rows_distances_survive_a_huge_byzantine_row_0():
  """The Gram path centres on the row of median norm, not on row 0: a Byzantine
  row 0 at 1e15 leaves the honest distances, hence Krum's choice, exact."""
  n, f = 40, 8
  x = data(n, 20, 44) + np.float32(10.0)
  x[0] = 1e15
  want = ref.krum(x.astype(np.float64), f)
  np.testing.assert_array_equal(np.asarray(A.krum(jnp.asarray(x), f=f)), want)
  np.testing.assert_allclose(np.asarray(A.multi_krum(jnp.asarray(x), f=f)),
                             ref.multi_krum(x.astype(np.float64), f), rtol=1e-5)
