"""Tests of byzjax.train: the jitted round against a plain NumPy reference round,
learning on small offline data, determinism, strategies and input checks."""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
from byzjax import data as data_lib
from byzjax import workers
from byzjax import train

# Logistic regression on scikit-learn's 8x8 digits: its gradient has a closed
# form, so the reference round below is independent of JAX's autodiff.
BASE = train.RunConfig(
    dataset="digits", model="logistic_regression", n=7, f=2, split="dirichlet",
    alpha=1.0, aggregator="nnm+trimmed_mean", attack="sign_flip", steps=4,
    batch_size=6, learning_rate=0.5, schedule="inverse_step", decay_every=2,
    momentum=0.9, clip=1.0, weight_decay=1e-2, eval_every=2, seeds=(3,))


@functools.lru_cache(maxsize=None)
def digits():
  return data_lib.load("digits", seed=0)


# ---------------------------------------------------------------------------
# The reference round: NumPy, float64, loops over workers.


def softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def logreg_loss_grad(theta_tree, images, labels, num_classes=10):
  """Mean cross-entropy and its gradient for logistic regression (closed form)."""
  w = np.asarray(theta_tree["Linear_0"]["kernel"], np.float64)
  b = np.asarray(theta_tree["Linear_0"]["bias"], np.float64)
  x = np.asarray(images, np.float64).reshape(len(images), -1)
  p = softmax(x @ w + b)
  y = np.eye(num_classes)[np.asarray(labels)]
  loss = -np.mean(np.log(p[np.arange(len(x)), labels]))
  grad = {"Linear_0": {"kernel": x.T @ (p - y) / len(x),
                       "bias": (p - y).mean(0)}}
  return loss, np.asarray(jax.flatten_util.ravel_pytree(grad)[0], np.float64)


def reference_rounds(exp, rounds, rule):
  """Runs ``rounds`` rounds the slow, plain way; returns (theta, metrics).

  Only the minibatch draws come from byzjax (workers.sample_batches with the
  round's key), so both runs see the same samples.
  """
  c = exp.config
  h, f, n = c.honest, c.f, c.n
  state = exp.init(c.seeds[0])
  data = exp.data(0)
  theta = np.asarray(state.params, np.float64)
  momentum = np.zeros((n, theta.size))
  key = state.key
  metrics = []
  for t in range(rounds):
    key, k_batch, _, _ = jax.random.split(key, 4)
    k_sample, _ = jax.random.split(k_batch)
    images, labels = workers.sample_batches(k_sample, data.workers,
                                             batch_size=c.batch_size)
    tree = exp.unravel(jnp.asarray(theta, jnp.float32))
    losses, rows = [], []
    for i in range(h):
      loss, g = logreg_loss_grad(tree, images[i], np.asarray(labels[i]))
      losses.append(loss)
      rows.append(g)
    def l2_clip(g):
      g = g + c.weight_decay * theta
      return g * min(1.0, c.clip / np.linalg.norm(g))

    raw_flip = c.attack == "label_flip" and not c.attack_args.get("momentum")
    if c.attack == "label_flip":
      flipped = [logreg_loss_grad(tree, images[i], 9 - np.asarray(labels[i]))[1]
                 for i in range(h)]
      if raw_flip:  # clipped one by one, averaged, sent without momentum
        flipped = [l2_clip(g) for g in flipped]
      rows += [np.mean(flipped, axis=0)] * f
    else:
      rows += [np.zeros_like(theta)] * f
    sent = []
    for i in range(n):
      momentum[i] = c.momentum * momentum[i] + (1 - c.momentum) * l2_clip(rows[i])
      sent.append(rows[i] if raw_flip and i >= h else momentum[i].copy())
    sent = np.stack(sent)
    honest_mean = sent[:h].mean(0)
    if c.attack == "sign_flip":
      sent[h:] = -honest_mean
    out = rule(sent)
    lr = c.learning_rate / (1 + t // c.decay_every)
    theta = theta - lr * out
    error = np.linalg.norm(out - honest_mean)
    # Eq. (26) of Allouah et al. 2023: kappa_hat_t^2 = ||R_t - m_bar||^2 /
    # ((1/|H|) sum_H ||m_i - m_bar||^2).
    spread = np.mean([np.sum((m - honest_mean) ** 2) for m in sent[:h]])
    metrics.append((np.mean(losses), error, error / np.sqrt(spread)))
  return theta, metrics


def nnm_trimmed_mean(x, f):
  return ref.trimmed_mean(ref.nnm(x, f), f)


REFERENCE_RULES = {"nnm+trimmed_mean": nnm_trimmed_mean,
                   "mean": lambda x, f: x.mean(0)}


@pytest.mark.parametrize("attack,attack_args,aggregator", [
    ("sign_flip", {}, "nnm+trimmed_mean"),
    ("label_flip", {}, "nnm+trimmed_mean"), ("label_flip", {}, "mean"),
    ("label_flip", {"momentum": True}, "nnm+trimmed_mean"),
    ("label_flip", {"momentum": True}, "mean")])
def test_jitted_round_equals_plain_reference_round(attack, attack_args,
                                                    aggregator):
  config = BASE.replace(attack=attack, attack_args=attack_args,
                        aggregator=aggregator)
  exp = train.Experiment(config, dataset=digits())
  step = jax.jit(exp.round)
  state, data = exp.init(config.seeds[0]), exp.data(0)
  got = []
  for _ in range(3):
    state, m = step(state, data)
    got.append(m)
  theta, want = reference_rounds(
      exp, 3, lambda x: REFERENCE_RULES[aggregator](x, config.f))
  np.testing.assert_allclose(np.asarray(state.params), theta, rtol=2e-4,
                             atol=2e-6)
  for m, (loss, error, kappa) in zip(got, want):
    np.testing.assert_allclose(float(m.loss), loss, rtol=1e-4)
    np.testing.assert_allclose(float(m.aggregate_error), error, rtol=1e-3,
                               atol=1e-6)
    np.testing.assert_allclose(float(m.kappa_hat), kappa, rtol=1e-3, atol=1e-6)
  assert int(state.step) == 3


def test_influence_is_the_byzantine_weight_of_a_selection_rule():
  """Krum outputs one row: the influence is 1 when it is Byzantine, else 0;
  for the mean it is f / n."""
  config = BASE.replace(aggregator="krum", attack="mimic_fixed")
  exp = train.Experiment(config, dataset=digits())
  step = jax.jit(exp.round)
  state, data = exp.init(3), exp.data(0)
  for _ in range(3):
    state, m = step(state, data)
    # mimic copies honest row 0: Krum may pick it or a copy; either way the
    # output is one row, so the influence is exactly 0 or 1.
    assert float(m.byzantine_influence) in (0.0, 1.0)
  mean_exp = train.Experiment(config.replace(aggregator="mean"), dataset=digits())
  _, m = jax.jit(mean_exp.round)(mean_exp.init(3), mean_exp.data(0))
  np.testing.assert_allclose(float(m.byzantine_influence), 2 / 7, rtol=1e-6)


@pytest.mark.parametrize("aggregator", ["geometric_median", "nnm+trimmed_mean", "cge"])
def test_diagnostics_never_change_a_number(aggregator):
  """The influence is an observation: a run with diagnostics rounds exactly as
  without (GM's aggregate once came from jax.jvp's primal output and differed
  in the 7th digit from round 5, and training amplified it)."""
  config = BASE.replace(aggregator=aggregator, attack="label_flip", steps=8,
                        eval_every=4, seeds=(1,))
  off, on = (train.train(config.replace(diagnostics=d), dataset=digits(),
                         progress=False)[0] for d in (False, True))
  for field in ("loss", "test_accuracy", "aggregate_error", "kappa_hat"):
    np.testing.assert_array_equal(getattr(on, field), getattr(off, field),
                                  err_msg=field)
  assert np.isnan(off.byzantine_influence).all()
  assert np.isfinite(on.byzantine_influence).all()


def test_evaluating_never_changes_training():
  """The rounds between two evaluations form one lax.scan: evaluating every 2
  or every 3 rounds trains the same rounds, bitwise (Table 2's ablation reads
  an every-50 evaluation off runs evaluated every 5)."""
  config = BASE.replace(aggregator="geometric_median", attack="optimized_alie",
                        steps=6, seeds=(1,), diagnostics=False)
  two, three = (train.train(config.replace(eval_every=e), dataset=digits(),
                            progress=False)[0] for e in (2, 3))
  assert two.eval_steps == [0, 2, 4, 6] and three.eval_steps == [0, 3, 6]
  np.testing.assert_array_equal(two.loss, three.loss)
  np.testing.assert_array_equal(two.eta, three.eta)
  np.testing.assert_array_equal(two.test_accuracy[::3], three.test_accuracy[::2])


def test_dgd_uses_every_local_sample():
  """D-GD: each honest worker's gradient is over its whole shard."""
  config = BASE.replace(algorithm="dgd", attack="sign_flip", aggregator="mean",
                        f=0, n=3, clip=None, weight_decay=0.0, steps=2)
  exp = train.Experiment(config, dataset=digits())
  state, data = exp.init(3), exp.data(0)
  new, m = jax.jit(exp.round)(state, data)
  tree = exp.unravel(state.params)
  ds = digits()
  parts = data_lib.split(ds.train_y, num_workers=3, scheme="dirichlet",
                         alpha=1.0, seed=3, min_size=1)
  grads = [logreg_loss_grad(tree, ds.train_x[p], ds.train_y[p])[1] for p in parts]
  want = np.asarray(state.params) - config.learning_rate * np.mean(grads, axis=0)
  np.testing.assert_allclose(np.asarray(new.params), want, rtol=1e-4, atol=1e-6)


def test_gradient_averaging_is_a_server_side_ema_per_sender():
  """CGE paper (Section 3.5): h_i <- alpha h_i + (1 - alpha) g_i after the attack."""
  config = BASE.replace(aggregator="mean", algorithm="dsgd", clip=None,
                        weight_decay=0.0, gradient_averaging=0.5,
                        attack="gaussian", f=1)
  exp = train.Experiment(config, dataset=digits())
  state, data = exp.init(3), exp.data(0)
  s1, _ = jax.jit(exp.round)(state, data)
  s2, _ = jax.jit(exp.round)(s1, data)
  received = s2.received_state.momentum
  assert received.shape == (config.n, exp.dim)
  # the aggregate (mean) of the averaged vectors moved theta: theta_2 =
  # theta_1 - lr_1 * mean(h_2)
  lr1 = config.learning_rate / (1 + 1 // config.decay_every)
  np.testing.assert_allclose(np.asarray(s2.params),
                             np.asarray(s1.params) - lr1 * np.mean(received, 0),
                             rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Learning on small offline data.

LEARN = train.RunConfig(dataset="digits", model="mlp", model_args={"hidden_sizes": (32,)},
                        n=9, f=4, split="iid", alpha=None, steps=100,
                        batch_size=16, learning_rate=0.2, schedule="constant",
                        momentum=0.9, clip=None, weight_decay=0.0,
                        eval_every=100, seeds=(1,))


def final_accuracy(**changes):
  return train.train(LEARN.replace(**changes), dataset=digits())[0].final_accuracy


def test_dshb_learns_without_faults():
  # f = 0, averaging: 9 workers, batches of 16 digits, 100 rounds of D-SHB
  # reach 91.6% test accuracy (10 classes).
  assert final_accuracy(f=0, aggregator="mean") > 0.9


def test_sign_flip_cripples_the_mean_but_not_robust_rules():
  """With f = 4 of n = 9, sign flipping shrinks the mean to s/9 (one ninth
  of the honest step); the trimmed mean and NNM + trimmed mean keep
  learning."""
  # Measured: mean 54.3%, trimmed mean 82.2%, NNM + trimmed mean 89.7%
  # (91.6% without faults).
  crippled = final_accuracy(aggregator="mean", attack="sign_flip")
  robust = [final_accuracy(aggregator=a, attack="sign_flip")
            for a in ("trimmed_mean", "nnm+trimmed_mean")]
  assert min(robust) > 0.8
  assert crippled < 0.65


def test_gradient_reverse_destroys_the_mean_but_not_cge():
  """CGE paper, Section 3.3: -100 x own gradient; CGE drops the largest norms."""
  # Measured: mean 10% (chance), CGE 91.9%.
  config = dict(n=7, f=2, byzantine_data=True, attack="gradient_reverse",
                algorithm="dsgd")
  assert final_accuracy(aggregator="mean", **config) < 0.2
  assert final_accuracy(aggregator="cge", **config) > 0.85


# ---------------------------------------------------------------------------
# Determinism, strategies, results.

SMALL = LEARN.replace(steps=6, eval_every=4, seeds=(1, 2), aggregator="nnm+krum",
                      attack="alie")


@functools.lru_cache(maxsize=None)
def small_run(per_worker="auto", seed_batching="auto", **changes):
  return train.train(SMALL.replace(**changes), dataset=digits(),
                     execution=train.Execution(per_worker, seed_batching))


def test_same_seed_same_numbers_and_different_seeds_differ():
  config = SMALL.replace(attack="optimized_alie", attack_args={"evals": 3},
                         aggregator="krum", steps=4)
  a = train.train(config, dataset=digits())
  b = train.train(config, dataset=digits())
  for ra, rb in zip(a, b):
    assert ra.test_accuracy == rb.test_accuracy and ra.loss == rb.loss
    assert ra.eta == rb.eta and ra.aggregate_error == rb.aggregate_error
  assert a[0].loss != a[1].loss
  assert a[0].eval_steps == [0, 4]
  assert len(a[0].loss) == 4 and a[0].config.seeds == (1,)
  assert small_run()[0].eval_steps == [0, 4, 6]


@pytest.mark.parametrize("seed_batching", ["sequential", "vmap"])
def test_a_seed_gives_the_same_numbers_whatever_seeds_run_with_it(seed_batching):
  """Splits of other seeds pad the index arrays; the draws must not notice."""
  config = SMALL.replace(split="dirichlet", alpha=0.3, steps=3, eval_every=3)
  execution = train.Execution(seed_batching=seed_batching)
  alone = train.train(config.replace(seeds=(2,)), dataset=digits(),
                      execution=execution)[0]
  together = train.train(config.replace(seeds=(5, 2, 9)), dataset=digits(),
                         execution=execution)[1]
  assert together.seed == 2
  # Each result says how it was computed: alone, or with which seeds.
  want = [2] if seed_batching == "sequential" else [5, 2, 9]
  assert together.execution == {
      "per_worker": "loop", "seed_batching": seed_batching,
      "seeds_together": want, "batch": len(want), "mesh": None}
  assert alone.execution["seeds_together"] == [2]
  assert train.RunResult.from_dict(together.to_dict()).execution == together.execution
  if seed_batching == "sequential":  # the same program: bitwise
    np.testing.assert_array_equal(alone.loss, together.loss)
    np.testing.assert_array_equal(alone.test_accuracy, together.test_accuracy)
  else:  # a batch of 1 or 3 seeds may round differently in the last bit
    np.testing.assert_allclose(alone.loss, together.loss, rtol=1e-5)
    np.testing.assert_allclose(alone.test_accuracy, together.test_accuracy,
                               atol=1e-6)


@pytest.mark.parametrize("per_worker,seed_batching",
                         [("vmap", "sequential"), ("loop", "vmap")])
def test_strategies_give_the_same_numbers(per_worker, seed_batching):
  want = small_run(per_worker="loop", seed_batching="sequential")
  got = small_run(per_worker=per_worker, seed_batching=seed_batching)
  for w, g in zip(want, got):
    np.testing.assert_allclose(g.loss, w.loss, rtol=1e-4)
    np.testing.assert_allclose(g.test_accuracy, w.test_accuracy, atol=1e-6)


def test_result_round_trips_through_a_dict():
  result = small_run(per_worker="loop", seed_batching="sequential")[0]
  back = train.RunResult.from_dict(result.to_dict())
  assert back == result
  assert result.to_dict()["max_accuracy"] == result.max_accuracy


def test_on_result_sees_each_seed_as_it_finishes():
  seen = []
  train.train(SMALL.replace(steps=2, eval_every=2), dataset=digits(),
              on_result=lambda r: seen.append(r.seed))
  assert seen == [1, 2]


# ---------------------------------------------------------------------------
# Bad input fails before training, naming the value and the bound.


@pytest.mark.parametrize("changes,message", [
    (dict(f=9, n=17), "f must be < n/2"),
    (dict(alpha=0.0), "alpha > 0"),
    (dict(alpha=-1.0), "alpha > 0"),
    (dict(aggregator="bulyan", f=4, n=17), "bulyan needs n >= 4f \\+ 3"),
    (dict(aggregator="nnm+krun"), "Did you mean 'krum'"),
    (dict(attack="sign_flp"), "Did you mean 'sign_flip'"),
    (dict(dataset="mnsit"), "Did you mean 'mnist'"),
    (dict(model="mnist_cn"), "mnist_cnn"),
    (dict(algorithm="shb"), "algorithm must be one of"),
    (dict(momentum=1.0), "momentum must be in \\[0, 1\\)"),
    (dict(steps=0), "steps must be an int >= 1"),
    (dict(aggregator_args={"krum": {"neighbours": 3}}), "not in aggregator"),
])
def test_bad_configs_are_refused_before_training(changes, message):
  with pytest.raises(ValueError, match=message):
    train.validate(BASE.replace(**changes))


def test_batch_larger_than_a_worker_shard_is_refused():
  with pytest.raises(ValueError, match="batch_size=400"):
    train.Experiment(BASE.replace(batch_size=400), dataset=digits())


def test_unknown_config_keys_name_the_closest_field():
  with pytest.raises(ValueError, match="did you mean 'batch_size'"):
    train.RunConfig.from_dict({"batchsize": 3})
