"""Tests of byzjax.attacks against plain NumPy formulas."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
from byzjax import aggregators as AG
from byzjax import attacks as A

N, F, D = 11, 3, 40
H = N - F


# ---------------------------------------------------------------------------
# Small independent defences: JAX for the attack, NumPy for the brute force.


def mean_jax(x):
  return jnp.mean(x, axis=0)


def trimmed_mean_jax(x, f=F):
  return jnp.mean(jnp.sort(x, axis=0)[f:x.shape[0] - f], axis=0)


def krum_jax(x, f=F):
  n = x.shape[0]
  dist = jnp.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
  dist = dist + jnp.diag(jnp.full((n,), jnp.inf, x.dtype))
  scores = jnp.sum(jnp.sort(dist, axis=1)[:, :n - f - 2], axis=1)
  return x[jnp.argmin(scores)]


def mean_np(x):
  return x.mean(axis=0)


def trimmed_mean_np(x, f=F):
  return np.sort(x, axis=0)[f:x.shape[0] - f].mean(axis=0)


def krum_np(x, f=F):
  n = x.shape[0]
  dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  np.fill_diagonal(dist, np.inf)
  scores = np.sort(dist, axis=1)[:, :n - f - 2].sum(axis=1)
  return x[np.argmin(scores)]


DEFENCES = {"mean": (mean_jax, mean_np), "trimmed_mean": (trimmed_mean_jax, trimmed_mean_np),
            "krum": (krum_jax, krum_np)}


def random_x(seed=0, n=N, d=D, loc=0.5):
  rng = np.random.default_rng(seed)
  return rng.normal(loc, 1.0, size=(n, d)).astype(np.float32)


def run(name, x, *, f=F, key=0, aggregate=mean_jax, **hyper):
  attack = A.make(name, f=f, **hyper)
  state = attack.init(jnp.asarray(x), key=jax.random.key(key))
  out, state = attack.update(jnp.asarray(x), state, aggregate=aggregate)
  return np.asarray(out), state


def honest_stats(x, h=H, ddof=1):
  hon = x[:h].astype(np.float64)
  return hon.mean(0), hon.std(0, ddof=ddof)


# ---------------------------------------------------------------------------
# Formulas.


def test_sign_flip_and_foe():
  x = random_x(1)
  s, _ = honest_stats(x)
  out, _ = run("sign_flip", x)
  np.testing.assert_allclose(out[H:], np.broadcast_to(-s, (F, D)), rtol=1e-5, atol=1e-6)
  out, _ = run("foe", x)  # default eta = 0.1
  np.testing.assert_allclose(out[H:], np.broadcast_to(0.9 * s, (F, D)), rtol=1e-5, atol=1e-6)
  out, _ = run("foe", x, eta=3.0)
  np.testing.assert_allclose(out[H:], np.broadcast_to(-2.0 * s, (F, D)), rtol=1e-5, atol=1e-6)


def test_baruch_z_max():
  # n = 17, f = 4: s = floor(9.5) - 4 = 5, z = Phi^-1(12 / 17).
  assert A.baruch_z_max(17, 4) == pytest.approx(0.54139, abs=1e-4)
  scipy_stats = pytest.importorskip("scipy.stats")
  for n, f in [(17, 4), (17, 8), (10, 1), (25, 5)]:
    s = math.floor(n / 2 + 1) - f
    assert A.baruch_z_max(n, f) == pytest.approx(scipy_stats.norm.ppf((n - s) / n), rel=1e-9)
  with pytest.raises(ValueError, match="n=17, f=9"):
    A.baruch_z_max(17, 9)


@pytest.mark.parametrize("hyper,ddof", [({}, 1), ({"eta": 1.5}, 1), ({"eta": -2.0, "ddof": 0}, 0)])
def test_alie(hyper, ddof):
  x = random_x(2)
  s, sigma = honest_stats(x, ddof=ddof)
  eta = hyper.get("eta", A.baruch_z_max(N, F))
  out, _ = run("alie", x, **hyper)
  np.testing.assert_allclose(out[H:], np.broadcast_to(s + eta * sigma, (F, D)), rtol=1e-5,
                             atol=1e-5)


def test_alie_std_is_two_pass():
  # A large common offset: E[x^2] - s^2 would lose every digit of the spread.
  x = random_x(3) * 1e-3 + 1e4
  s, sigma = honest_stats(x)
  out, _ = run("alie", x, eta=1.0)
  np.testing.assert_allclose(out[H:] - s, np.broadcast_to(sigma, (F, D)), rtol=0.02, atol=2e-3)


def test_gradient_reverse():
  x = random_x(4)
  out, _ = run("gradient_reverse", x)
  np.testing.assert_allclose(out[H:], -100.0 * x[H:], rtol=1e-6)
  out, _ = run("gradient_reverse", x, scale=3.0)
  np.testing.assert_allclose(out[H:], -3.0 * x[H:], rtol=1e-6)


@pytest.mark.parametrize("f", [1, 2, 3, 5])
def test_coordinate_wise_is_fth_smallest(f):
  x = random_x(5)
  x[:, 0] = 1.0  # ties in a coordinate
  x[2, 1] = x[4, 1] = -7.0
  out, _ = run("coordinate_wise", x, f=f)
  expected = np.sort(x[:N - f], axis=0)[f - 1]
  np.testing.assert_array_equal(out[N - f:], np.broadcast_to(expected, (f, D)))


def test_norm_confusing():
  x = random_x(6)
  x[H + 1] = 0.0  # a zero own vector stays zero
  out, _ = run("norm_confusing", x)
  norms = np.linalg.norm(x[:H].astype(np.float64), axis=1)
  r = np.sort(norms)[::-1][F]  # (f+1)-th largest honest norm
  for j in range(H, N):
    own = np.linalg.norm(x[j])
    expected = -r / own * x[j] if own > 0 else np.zeros(D)
    np.testing.assert_allclose(out[j], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(out[H]), r, rtol=1e-5)


def test_mimic_fixed():
  x = random_x(7)
  out, _ = run("mimic_fixed", x)
  np.testing.assert_array_equal(out[H:], np.broadcast_to(x[0], (F, D)))
  out, _ = run("mimic_fixed", x, index=H - 1)
  np.testing.assert_array_equal(out[H:], np.broadcast_to(x[H - 1], (F, D)))


def test_attacks_declare_what_they_need_from_the_round():
  """The round fills the Byzantine rows with what each attack asks for: the
  trainer knows no attack by name."""
  x = random_x(8)
  attack = A.make("label_flip", f=F)
  assert (attack.inputs, attack.momentum) == ("flipped_gradients", False)
  assert A.make("label_flip", f=F, momentum=True).momentum
  for name in ("gradient_reverse", "norm_confusing"):
    assert A.make(name, f=F).inputs == "gradients"
  others = [n for n in A.names() if n not in ("label_flip", "gradient_reverse",
                                              "norm_confusing")]
  assert all(A.make(n, f=F).inputs == "none" for n in others)
  assert all(a in A.INPUTS for a in (A.make(n, f=F).inputs for n in A.names()))
  out, _ = run("label_flip", x)
  np.testing.assert_array_equal(out, x)
  _, state = run("optimized_alie", x)
  assert set(A.make("optimized_alie", f=F).metrics(state)) == {"eta"}
  assert A.make("sign_flip", f=F).metrics(None) == {}


@pytest.mark.parametrize("name,check", [("inf", np.isposinf), ("neg_inf", np.isneginf),
                                        ("nan", np.isnan)])
def test_non_finite_rows(name, check):
  x = random_x(9)
  out, _ = run(name, x)
  assert check(out[H:]).all()
  assert np.isfinite(out[:H]).all()


def test_gaussian_keys():
  x = random_x(10)
  a1, st1 = run("gaussian", x, key=1)
  a2, _ = run("gaussian", x, key=1)
  b, _ = run("gaussian", x, key=2)
  np.testing.assert_array_equal(a1, a2)
  assert not np.allclose(a1[H:], b[H:])
  assert not np.allclose(a1[H], a1[H + 1])  # independent rows
  # The key is split: the next update draws fresh noise.
  attack = A.make("gaussian", f=F)
  out2, _ = attack.update(jnp.asarray(x), st1)
  assert not np.allclose(np.asarray(out2)[H:], a1[H:])
  big, _ = run("gaussian", random_x(10, d=20000), key=3)
  assert np.std(big[H:]) == pytest.approx(200.0, rel=0.02)
  assert abs(np.mean(big[H:])) < 5.0
  small, _ = run("gaussian", x, std=0.0, mean=1.5)
  np.testing.assert_array_equal(small[H:], 1.5)


# ---------------------------------------------------------------------------
# Properties shared by all attacks.


@pytest.mark.parametrize("name", A.names())
def test_honest_rows_untouched_and_byzantine_rows_replaced(name):
  x = random_x(11)
  out, _ = run(name, x)
  assert out.shape == x.shape and out.dtype == x.dtype
  np.testing.assert_array_equal(out[:H], x[:H])
  changed = not np.array_equal(out[H:], x[H:], equal_nan=False)
  assert changed == (name != "label_flip")


@pytest.mark.parametrize("name", A.names())
def test_f_zero_is_identity(name):
  x = random_x(12)
  out, _ = run(name, x, f=0)
  np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("name", A.names())
def test_jit_does_not_retrace(name):
  attack = A.make(name, f=F)
  traces = []

  def update(x, state):
    traces.append(None)  # a Python side effect: runs once per trace
    return attack.update(x, state, aggregate=trimmed_mean_jax)

  jitted = jax.jit(update)
  x1, x2 = jnp.asarray(random_x(13)), jnp.asarray(random_x(14))
  state = attack.init(x1, key=jax.random.key(0))
  out1, state = jitted(x1, state)
  out2, state = jitted(x2, state)
  assert len(traces) == 1
  eager, _ = attack.update(x2, attack.init(x2, key=jax.random.key(0)),
                           aggregate=trimmed_mean_jax)
  if name not in ("gaussian", "mimic", "fang_trimmed_mean"):  # these depend on the step's key / history
    np.testing.assert_allclose(np.asarray(out2), np.asarray(eager), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out2)[:H], np.asarray(x2)[:H])


@pytest.mark.parametrize("name", ["alie", "coordinate_wise", "gaussian", "mimic", "optimized_alie"])
def test_vmap_over_seeds_matches_per_seed(name):
  # The training step runs seeds under jax.vmap.
  attack = A.make(name, f=F, **({"warmup": 2} if name == "mimic" else {}))
  xs = jnp.stack([jnp.asarray(random_x(s)) for s in range(3)])
  keys = jax.random.split(jax.random.key(7), 3)
  states = jax.vmap(lambda k, x: attack.init(x, key=k))(keys, xs)
  step = jax.jit(jax.vmap(functools.partial(attack.update, aggregate=trimmed_mean_jax)))
  for _ in range(3):
    out, states = step(xs, states)
  for i in range(3):
    state = attack.init(xs[i], key=keys[i])
    for _ in range(3):
      ref, state = attack.update(xs[i], state, aggregate=trimmed_mean_jax)
    np.testing.assert_allclose(np.asarray(out[i]), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_bfloat16_input_keeps_dtype():
  x = jnp.asarray(random_x(21)).astype(jnp.bfloat16)
  for name in A.names():
    attack = A.make(name, f=F)
    state = attack.init(x, key=jax.random.key(0))
    out, state = attack.update(x, state, aggregate=trimmed_mean_jax)
    out, _ = attack.update(x, state, aggregate=trimmed_mean_jax)
    assert out.dtype == jnp.bfloat16, name
    np.testing.assert_array_equal(np.asarray(out[:H], np.float32), np.asarray(x[:H], np.float32))


# ---------------------------------------------------------------------------
# Optimized attacks.


def brute_force_damages(x, etas, direction, defence_np, f=F):
  """||defence(x_eta) - s|| for every candidate, float64, Python loop."""
  h = x.shape[0] - f
  hon = x[:h].astype(np.float64)
  s = hon.mean(0)
  a = hon.std(0, ddof=1) if direction == "alie" else -s
  out = []
  for eta in etas:
    xe = x.astype(np.float64).copy()
    xe[h:] = s + eta * a
    out.append(np.linalg.norm(defence_np(xe) - s))
  return np.asarray(out)


def brute_force_eta(x, etas, direction, defence_np, f=F, tie_rtol=1e-5):
  """Python loop over the candidates with a NumPy defence, in float64.

  Returns the first candidate whose damage is within ``tie_rtol`` of the best (the
  documented tie rule; with tie_rtol=0 it is the first maximizer).
  """
  dists = brute_force_damages(x, etas, direction, defence_np, f)
  best = max(dists)
  return next(eta for eta, dist in zip(etas, dists) if dist >= best * (1 - tie_rtol))


@pytest.mark.parametrize("kind", ["alie", "foe"])
def test_optimized_grid_matches_brute_force_and_depends_on_defence(kind):
  x = random_x(15, loc=1.0)
  name = f"optimized_{kind}_grid"
  etas = np.linspace(0.0, 10.0, 21).astype(np.float32)
  chosen = {}
  for dname, (djax, dnp) in DEFENCES.items():
    out, state = run(name, x, aggregate=djax)
    expected = brute_force_eta(x, etas, kind, dnp)
    assert float(state.eta) == pytest.approx(float(expected)), dname
    chosen[dname] = float(state.eta)
    # The Byzantine rows are the attack vector at the chosen eta.
    s, sigma = honest_stats(x)
    a = sigma if kind == "alie" else -s
    np.testing.assert_allclose(out[H:], np.broadcast_to(s + chosen[dname] * a, (F, D)),
                               rtol=1e-4, atol=1e-4)
    # Mapping over the candidates in chunks gives the same eta.
    _, state_b = run(name, x, aggregate=djax, batch_size=4)
    assert float(state_b.eta) == chosen[dname]
  assert chosen["mean"] == 10.0  # the mean's damage grows with eta
  assert chosen["krum"] != chosen["mean"]
  assert chosen["trimmed_mean"] != chosen["mean"]


@pytest.mark.parametrize("kind", ["alie", "foe"])
@pytest.mark.parametrize("rule", ["nnm+trimmed_mean", "krum", "nnm+krum",
                                  "geometric_median", "bucketing+median"])
def test_optimized_grid_with_a_byzjax_rule_matches_brute_force(kind, rule):
  """With a byzjax Defence the candidates are evaluated on lazy mixtures of
  the honest rows, s and s + a (shared distances). The chosen eta must be the
  brute-force one (float64 NumPy rule, Python loop)."""
  composed = AG.compose(rule, f=F, n=N)
  key = jax.random.key(5)
  bound = composed.bind(key)
  references = _byzjax_references(composed, key)
  etas = np.linspace(0.0, 10.0, 21).astype(np.float32)
  for seed in range(3):
    x = random_x(40 + seed, loc=1.0)
    out, state = run(f"optimized_{kind}_grid", x, aggregate=bound,
                     knows_server_randomness=True)
    damage = brute_force_damages(x, etas, kind, references[rule])
    best = float(etas[np.argmax(damage)])
    chosen = int(np.argmin(np.abs(etas - float(state.eta))))
    if np.sort(damage)[-2] < damage.max() * (1 - 1e-3):  # a clear maximizer
      assert float(state.eta) == pytest.approx(best), (rule, seed)
    else:  # near-ties (GM's damage varies by ~1e-5 in eta): float32 resolution
      assert damage[chosen] >= damage.max() * (1 - 1e-4), (rule, seed)


def test_optimized_explicit_grid_and_state():
  x = random_x(16)
  etas = (0.5, 2.0, 1.0)
  out, state = run("optimized_alie_grid", x, aggregate=mean_jax, etas=etas)
  assert float(state.eta) == 2.0
  assert brute_force_eta(x, etas, "alie", mean_np) == 2.0
  for name in ("optimized_foe", "optimized_foe_grid"):
    attack = A.make(name, f=F)
    assert float(attack.init(jnp.asarray(x), key=jax.random.key(0)).eta) == 0.0


def _byzjax_references(composed, key):
  """float64 NumPy versions of byzjax rules (a randomized one: the rule itself)."""
  return {
      "nnm+trimmed_mean": lambda y: ref.trimmed_mean(ref.nnm(y, F), F),
      "krum": lambda y: ref.krum(y, F), "nnm+krum": lambda y: ref.krum(ref.nnm(y, F), F),
      "geometric_median": lambda y: ref.geometric_median(y, F),
      # bucketing is randomized: brute force with the same rule and key
      "bucketing+median": lambda y: np.asarray(composed(jnp.asarray(y, jnp.float32), key=key),
                                               np.float64),
  }


def line_maximize_reference(scape, evals=16, start=0., delta=1., ratio=0.8):
  """The authors' ``tools.line_maximize`` (LPD-EPFL/ByzantineMomentum), verbatim
  in logic, in float64 Python; also returns every evaluated point."""
  seen = []

  def evaluate(x):
    seen.append(x)
    return scape(x)

  best_x = start
  best_y = evaluate(best_x)
  evals -= 1
  while evals > 0:  # expansion
    prop_x = best_x + delta
    prop_y = evaluate(prop_x)
    evals -= 1
    if prop_y > best_y:
      best_y = prop_y
      best_x = prop_x
      delta *= 2
    else:
      delta *= ratio
      break
  while evals > 0:  # contraction
    if prop_x < best_x:
      prop_x += delta
    else:
      x = prop_x - delta
      while x < 0:
        x = (x + prop_x) / 2
      prop_x = x
    prop_y = evaluate(prop_x)
    evals -= 1
    if prop_y > best_y:
      best_y = prop_y
      best_x = prop_x
    delta *= ratio
  return best_x, seen


SCAPES = {  # name: (fn(x, xp) with xp numpy or jax.numpy, hyperparameters)
    "peak at 3.7": (lambda x, xp: -(x - 3.7) ** 2, {}),
    "increasing": (lambda x, xp: x, {}),
    "flat": (lambda x, xp: 1.0 + 0.0 * x, {}),
    "decreasing": (lambda x, xp: -x, {}),
    "wavy": (lambda x, xp: xp.sin(x) + x / 10, {"evals": 20}),
    "small steps": (lambda x, xp: -(x - 1.3) ** 2, {"start": 2.0, "delta": 0.5,
                                                    "ratio": 0.6, "evals": 7}),
    "one evaluation": (lambda x, xp: x, {"evals": 1}),
    "nan at 1": (lambda x, xp: xp.where(x == 1.0, xp.nan, -(x - 2.5) ** 2), {}),
}


@pytest.mark.parametrize("scape", sorted(SCAPES))
def test_line_maximize_matches_the_authors_procedure(scape):
  fn, hyper = SCAPES[scape]
  want, seen = line_maximize_reference(lambda x: float(fn(x, np)), **hyper)
  points = []

  def traced(x):
    jax.debug.callback(lambda v: points.append(float(v)), x)
    return fn(x, jnp)

  got, _ = jax.jit(lambda: A.line_maximize(traced, **hyper))()
  jax.effects_barrier()
  np.testing.assert_allclose(points, seen, rtol=1e-5, atol=1e-6)
  assert float(got) == pytest.approx(want, rel=1e-5, abs=1e-6)
  assert len(seen) == hyper.get("evals", 16)


def greedy_reference_eta(x, direction, defence_np, f=F, **hyper):
  """The authors' greedy search over eta with a float64 NumPy defence: the
  squared distance of the defence's output from the honest mean."""
  h = x.shape[0] - f
  hon = x[:h].astype(np.float64)
  s = hon.mean(0)
  a = hon.std(0, ddof=1) if direction == "alie" else -s

  def damage(eta):
    xe = x.astype(np.float64).copy()
    xe[h:] = s + eta * a
    return float(np.sum((defence_np(xe) - s) ** 2))

  return line_maximize_reference(damage, **hyper)[0], damage


@pytest.mark.parametrize("kind", ["alie", "foe"])
def test_optimized_greedy_matches_float64_reference(kind):
  """The default search is the paper's greedy one: against small JAX defences
  and byzjax rules (lazy rows), the same eta as the float64 NumPy search."""
  cases = [(name, djax, dnp) for name, (djax, dnp) in DEFENCES.items()]
  key = jax.random.key(5)
  for rule in ("nnm+trimmed_mean", "krum", "nnm+krum", "bucketing+median"):
    composed = AG.compose(rule, f=F, n=N)
    cases.append((f"byzjax {rule}", composed.bind(key),
                  _byzjax_references(composed, key)[rule]))
  chosen = {}
  for seed in range(2):
    x = random_x(60 + seed, loc=1.0)
    for name, defence, reference in cases:
      out, state = run(f"optimized_{kind}", x, aggregate=defence,
                       knows_server_randomness=True)
      want, damage = greedy_reference_eta(x, kind, reference)
      got = float(state.eta)
      # Equal, or (a float32 near-tie on the path) as damaging.
      assert got == pytest.approx(want, rel=1e-4, abs=1e-5) or \
          damage(got) >= damage(want) * (1 - 1e-4), (name, seed, got, want)
      s, sigma = honest_stats(x)
      a = sigma if kind == "alie" else -s
      np.testing.assert_allclose(out[H:], np.broadcast_to(s + got * a, (F, D)),
                                 rtol=1e-4, atol=1e-4)
      chosen[name, seed] = got
  # The mean's damage grows with eta: the expansion doubles to 2^15 - 1.
  assert chosen["mean", 0] == 2.0 ** 15 - 1
  assert chosen["krum", 0] != chosen["mean", 0]


@pytest.mark.parametrize("name", ["optimized_alie", "optimized_alie_grid"])
def test_attacker_simulates_bucketing_with_its_own_key(name):
  """Against a randomized defence the attacker draws its own permutation
  (from its state key, split every update); the server's key is used only
  with ``knows_server_randomness``."""
  f = 2  # buckets of floor(n / 2f) = 2 rows: the permutation matters
  composed = AG.compose("bucketing+krum", f=f, n=N)
  x = jnp.asarray(random_x(70, loc=1.0))
  attack_key = jax.random.key(3)
  own = jax.random.split(attack_key)[1]
  attack = A.make(name, f=f)
  informed = A.make(name, f=f, knows_server_randomness=True)
  state = attack.init(x, key=attack_key)
  _, with_own = informed.update(x, state, aggregate=composed.bind(own))
  blind, told = set(), set()
  for k in range(6):
    server = composed.bind(jax.random.key(100 + k))
    _, after = attack.update(x, state, aggregate=server)
    blind.add(float(after.eta))
    told.add(float(informed.update(x, state, aggregate=server)[1].eta))
  assert blind == {float(with_own.eta)}  # whatever the server's key
  assert len(told) > 1  # the informed attacker follows the server's draws
  assert not np.array_equal(jax.random.key_data(after.key),
                            jax.random.key_data(state.key))
  # A plain Composed rule works too (simulated with the attacker's key).
  _, plain = attack.update(x, state, aggregate=composed)
  assert float(plain.eta) == float(with_own.eta)


def test_optimized_needs_aggregate():
  x = jnp.asarray(random_x(17))
  for name in ("optimized_alie", "optimized_foe", "optimized_alie_grid",
               "optimized_foe_grid"):
    attack = A.make(name, f=F)
    state = attack.init(x, key=jax.random.key(0))
    with pytest.raises(ValueError, match="aggregate"):
      attack.update(x, state)


# ---------------------------------------------------------------------------
# Mimic heuristic.


def mimic_reference(xs, z0, warmup, h, absolute=False):
  """NumPy transcription of Karimireddy et al.'s MimicVariantAttacker."""
  mu, z, target, outs, targets = None, z0.astype(np.float64), None, [], []
  for t, x in enumerate(xs):
    hon = x[:h].astype(np.float64)
    if t < warmup:
      s = hon.mean(0)
      mu = s if t == 0 else t / (t + 1) * mu + s / (t + 1)
      dev = hon - mu
      c = (dev @ z) @ dev
      c = c / np.linalg.norm(c)
      z = t / (t + 1) * z + c / (t + 1)
      z = z / np.linalg.norm(z)
      proj = hon @ z
      target = int(np.argmax(np.abs(proj) if absolute else proj))
    outs.append(x[target])
    targets.append(target)
  return outs, targets, z


def test_mimic_heuristic_matches_reference():
  rng = np.random.default_rng(18)
  warmup, steps = 4, 7
  xs = [rng.normal(size=(N, D)).astype(np.float32) for _ in range(steps)]
  attack = A.make("mimic", f=F, warmup=warmup)
  state = attack.init(jnp.asarray(xs[0]), key=jax.random.key(5))
  ref_outs, ref_targets, ref_z = mimic_reference(xs, np.asarray(state.z), warmup, H)
  update = jax.jit(attack.update)
  for t, x in enumerate(xs):
    out, state = update(jnp.asarray(x), state)
    assert int(state.target) == ref_targets[t], t
    np.testing.assert_array_equal(np.asarray(out)[H:], np.broadcast_to(ref_outs[t], (F, D)))
  assert int(state.step) == steps
  np.testing.assert_allclose(np.asarray(state.z), ref_z, rtol=1e-4, atol=1e-5)
  # After the warm-up the target is frozen.
  assert len(set(ref_targets[warmup - 1:])) == 1


def test_mimic_picks_extreme_worker_along_top_direction():
  rng = np.random.default_rng(19)
  u = rng.normal(size=D)
  u /= np.linalg.norm(u)
  c = np.array([0.5, -1.0, 2.0, 9.0, -3.0, 1.0, -0.5, 0.0])  # worker 3 is extreme
  assert len(c) == H
  xs = []
  for _ in range(5):
    x = rng.normal(scale=0.05, size=(N, D))
    x[:H] += c[:, None] * u[None, :]
    xs.append(x.astype(np.float32))
  for absolute in (False, True):
    attack = A.make("mimic", f=F, warmup=3, absolute=absolute)
    state = attack.init(jnp.asarray(xs[0]), key=jax.random.key(1))
    for x in xs:
      out, state = attack.update(jnp.asarray(x), state)
    z = np.asarray(state.z)
    assert abs(z @ u) > 0.99  # the direction of maximal variance
    proj = xs[2][:H] @ z  # last warm-up step fixed the target
    expected = np.argmax(np.abs(proj)) if absolute else np.argmax(proj)
    assert int(state.target) == expected
    if absolute:
      assert int(state.target) == 3
    np.testing.assert_array_equal(np.asarray(out)[H:], np.broadcast_to(xs[-1][int(state.target)],
                                                                       (F, D)))


def test_mimic_init_deterministic_by_key():
  x = jnp.asarray(random_x(20))
  attack = A.make("mimic", f=F)
  s1, s2 = attack.init(x, key=jax.random.key(3)), attack.init(x, key=jax.random.key(3))
  s3 = attack.init(x, key=jax.random.key(4))
  np.testing.assert_array_equal(np.asarray(s1.z), np.asarray(s2.z))
  assert not np.allclose(np.asarray(s1.z), np.asarray(s3.z))


# ---------------------------------------------------------------------------
# Registry and validation.


def test_registry():
  names = A.names()
  for name in ["sign_flip", "foe", "alie", "optimized_alie", "optimized_foe",
               "optimized_alie_grid", "optimized_foe_grid", "label_flip",
               "mimic", "mimic_fixed", "gradient_reverse", "coordinate_wise",
               "norm_confusing", "gaussian", "inf", "neg_inf", "nan"]:
    assert name in names
    assert A.make(name, f=2).name == name
  assert A.get("alie") is A.alie
  assert A.get("ALIE") is A.alie
  with pytest.raises(ValueError, match="Valid names:.*sign_flip"):
    A.make("sign_flipp", f=1)
  with pytest.raises(ValueError, match="Did you mean 'sign_flip'"):
    A.get("sign_flipp")


@pytest.mark.parametrize("call,match", [
    (lambda: A.make("alie", f=-1), "f must be an int >= 0, got f=-1"),
    (lambda: A.make("alie", f=1.5), "f must be an int >= 0, got 1.5"),
    (lambda: A.alie(f=-2), "f=-2"),
    (lambda: A.make("alie", f=1, tau=2.0), r"unknown hyperparameter.*'tau'.*valid.*eta"),
    (lambda: A.make("alie", f=1, eta=float("nan")), "eta must be finite"),
    (lambda: A.make("foe", f=1, eta="big"), "eta must be a finite real"),
    (lambda: A.make("optimized_alie_grid", f=1, eta_min=5.0, eta_max=1.0),
     "eta_min < eta_max, got eta_min=5.0, eta_max=1.0"),
    (lambda: A.make("optimized_foe_grid", f=1, eta_min=-1.0), "0 <= eta_min.*eta_min=-1.0"),
    (lambda: A.make("optimized_foe_grid", f=1, num_etas=1), "num_etas must be an int >= 2"),
    (lambda: A.make("optimized_alie_grid", f=1, etas=[]), "etas must be a non-empty"),
    (lambda: A.make("optimized_alie_grid", f=1, etas=[1.0, np.inf]), "etas must be"),
    (lambda: A.make("optimized_alie_grid", f=1, batch_size=0), "batch_size must be an int >= 1"),
    (lambda: A.make("optimized_alie", f=1, ratio=0.5), r"ratio must be in \(0.5, 1\)"),
    (lambda: A.make("optimized_foe", f=1, delta=0.0), "delta must be > 0"),
    (lambda: A.make("optimized_foe", f=1, start=-1.0), "start must be >= 0"),
    (lambda: A.make("optimized_alie", f=1, evals=0), "evals must be an int >= 1"),
    (lambda: A.make("optimized_alie", f=1, eta_max=3.0), "unknown hyperparameter"),
    (lambda: A.make("optimized_alie", f=1, knows_server_randomness="yes"),
     "knows_server_randomness must be True or False"),
    (lambda: A.make("label_flip", f=1, momentum=1), "momentum must be True or False"),
    (lambda: A.make("mimic", f=1, warmup=0), "warmup must be an int >= 1, got warmup=0"),
    (lambda: A.make("mimic_fixed", f=1, index=-1), "index must be an int >= 0"),
    (lambda: A.make("gaussian", f=1, std=-1.0), "std must be >= 0, got std=-1.0"),
])
def test_bad_hyperparameters(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_bad_shapes_at_init():
  x = jnp.zeros((5, 4))
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="n - f >= 1 honest rows, got n=5, f=5"):
    A.make("sign_flip", f=5).init(x, key=key)
  with pytest.raises(ValueError, match="n - f >= 2 honest rows, got n=5, f=4"):
    A.make("alie", f=4, eta=1.0).init(x, key=key)
  with pytest.raises(ValueError, match="n - f >= 3 honest rows, got n=5, f=3"):
    A.make("coordinate_wise", f=3).init(x, key=key)
  with pytest.raises(ValueError, match="n - f >= 4 honest rows, got n=5, f=3"):
    A.make("norm_confusing", f=3).init(x, key=key)
  with pytest.raises(ValueError, match=r"index must be an honest row in \[0, n - f\) = \[0, 3\)"):
    A.make("mimic_fixed", f=2, index=3).init(x, key=key)
  with pytest.raises(ValueError, match="z_max.*n=5, f=3"):
    A.make("alie", f=3).init(jnp.zeros((5, 4)), key=key)
  with pytest.raises(ValueError, match=r"\(n, d\) matrix"):
    A.make("sign_flip", f=1).init(jnp.zeros((5,)), key=key)
