"""Plain NumPy (float64) implementations of the rules, written from the papers'
formulas, independent of byzjax's distance-space kernels."""

import itertools

import numpy as np


def sqdist(a, b):
  return float(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def mean(x, f):
  return x.mean(0)


def median(x, f):
  return np.median(x, axis=0)


def trimmed_mean(x, f):
  s = np.sort(x, axis=0)
  return s[f:len(x) - f].mean(0)


def _closest_to_median_mean(values, keep):
  out = np.empty(values.shape[1])
  for c in range(values.shape[1]):
    v = values[:, c]
    med = np.median(v)
    idx = np.argsort(np.abs(v - med), kind="stable")[:keep]
    out[c] = v[idx].mean()
  return out


def meamed(x, f):
  return _closest_to_median_mean(x, len(x) - f)


def krum_scores(x, k):
  n = len(x)
  scores = []
  for i in range(n):
    d = sorted(sqdist(x[i], x[j]) for j in range(n) if j != i)
    scores.append(sum(d[:k]))
  return np.array(scores)


def krum(x, f, neighbours=None):
  k = len(x) - f - 2 if neighbours is None else neighbours
  return x[int(np.argmin(krum_scores(x, k)))]


def multi_krum(x, f, m=None, neighbours=None):
  n = len(x)
  k = n - f - 2 if neighbours is None else neighbours
  m = n - f if m is None else m
  idx = np.argsort(krum_scores(x, k), kind="stable")[:m]
  return x[idx].mean(0)


def bulyan(x, f, selection="krum"):
  n = len(x)
  theta = n - 2 * f
  if selection == "krum":
    remaining = list(range(n))
    chosen = []
    for _ in range(theta):
      k = max(len(remaining) - f - 2, 1)
      scores = krum_scores(x[remaining], k)
      pick = remaining[int(np.argmin(scores))]
      chosen.append(pick)
      remaining.remove(pick)
  else:
    chosen = list(np.argsort(krum_scores(x, n - f - 2), kind="stable")[:theta])
  return _closest_to_median_mean(x[chosen], theta - 2 * f)


def mda(x, f):
  n = len(x)
  best, best_diam = None, np.inf
  for subset in itertools.combinations(range(n), n - f):
    diam = max((sqdist(x[i], x[j]) for i, j in itertools.combinations(subset, 2)),
               default=0.0)
    if diam < best_diam:
      best, best_diam = subset, diam
  return x[list(best)].mean(0)


def cge(x, f, reduction="mean"):
  """Gupta, Liu, Vaidya, eq. (7): the n - f smallest-norm rows, summed (the
  paper) or averaged."""
  norms = np.linalg.norm(x, axis=1)
  kept = x[np.argsort(norms, kind="stable")[:len(x) - f]]
  return kept.sum(0) if reduction == "sum" else kept.mean(0)


def monna(x, f, index=0):
  d = np.array([sqdist(x[index], x[j]) for j in range(len(x))])
  return x[np.argsort(d, kind="stable")[:len(x) - f]].mean(0)


def geometric_median(x, f, nu=1e-6, iterations=100, tolerance=1e-6,
                     init="median"):
  if init == "zero":
    z = np.zeros(x.shape[1])
  elif init == "median":
    z = np.median(x, axis=0)
  else:
    z = x.mean(0)
  objective = lambda z: np.sum(np.linalg.norm(x - z, axis=1))
  prev = objective(z)
  for t in range(iterations):
    dist = np.linalg.norm(x - z, axis=1)
    if t > 0 and tolerance > 0:  # tolerance 0: all the iterations
      now = dist.sum()
      if prev - now <= tolerance * now:
        break
      prev = now
    w = 1.0 / np.maximum(dist, nu)
    z = (w[:, None] * x).sum(0) / w.sum()
  return z


def median_of_means(x, f, num_groups, **gm):
  b = len(x) // num_groups
  means = np.stack([x[g * b:(g + 1) * b].mean(0) for g in range(num_groups)])
  return geometric_median(means, f, **gm)


def centered_clipping(x, f, tau=100.0, iterations=1, center=None):
  v = np.zeros(x.shape[1]) if center is None else np.asarray(center, np.float64)
  for _ in range(iterations):
    diffs = x - v
    norms = np.linalg.norm(diffs, axis=1)
    scale = np.minimum(1.0, tau / np.maximum(norms, 1e-30))
    v = v + (diffs * scale[:, None]).mean(0)
  return v


def caf(x, f):
  """CAF with the exact top eigenpair of the d x d weighted covariance."""
  n = len(x)
  c = np.ones(n)
  best_mu, best_lam = x.mean(0), np.inf
  while c.sum() > n - 2 * f:
    mu = (c[:, None] * x).sum(0) / c.sum()
    diffs = x - mu
    cov = (c[:, None, None] * diffs[:, :, None] * diffs[:, None, :]).sum(0) / c.sum()
    lam, vecs = np.linalg.eigh(cov)
    if lam[-1] < best_lam:
      best_lam, best_mu = lam[-1], mu
    tau = (diffs @ vecs[:, -1]) ** 2
    tau_max = tau[c > 0].max()
    if tau_max <= 0:
      break
    c = np.maximum(c * (1 - tau / tau_max), 0.0)
  return best_mu


def smea(x, f):
  n = len(x)
  best, best_lam = None, np.inf
  for subset in itertools.combinations(range(n), n - f):
    sub = x[list(subset)]
    diffs = sub - sub.mean(0)
    lam = np.linalg.eigvalsh(diffs.T @ diffs / len(sub))[-1]
    if lam < best_lam:
      best, best_lam = subset, lam
  return x[list(best)].mean(0)


def nnm(x, f):
  n = len(x)
  out = []
  for i in range(n):
    d = np.array([sqdist(x[i], x[j]) for j in range(n)])
    out.append(x[np.argsort(d, kind="stable")[:n - f]].mean(0))
  return np.stack(out)


def bucketing(x, f, perm, bucket_size):
  xp = x[perm]
  return np.stack([xp[i:i + bucket_size].mean(0)
                   for i in range(0, len(x), bucket_size)])


def clipping(x, f, threshold=2.0):
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x * np.minimum(1.0, threshold / np.maximum(norms, 1e-300))


def arc(x, f):
  n = len(x)
  k = int(2 * f * (n - f) / n)
  norms = np.linalg.norm(x, axis=1)
  order = np.argsort(-norms, kind="stable")
  out = x.copy()
  if k == 0:
    return out
  thr = norms[order[k]]
  for i in order[:k]:
    if norms[i] > thr:
      out[i] = x[i] * thr / norms[i]
  return out
