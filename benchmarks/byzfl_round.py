"""Times one training round of ByzFL's own federated framework (MNIST, Table 3).

Runs under a separate ByzFL virtualenv (PyTorch, no JAX; see
``benchmarks/byzfl_reference.py`` for its setup and the torchvision stub); it
never imports byzjax or jax. ``benchmarks/round.py --byzfl-python PATH`` writes
the data and the cases to a temporary folder and runs this script on them, so
that both libraries train on the same shards in the same run.

What runs, per case: ByzFL's ``Client`` (one per honest worker, each with its
own ``DataLoader`` from ``DataDistributor.idx_to_dataloaders`` over the shard
byzjax drew), ``ByzantineClient`` and ``Server`` (its ``RobustAggregator``), in
the loop of ``byzfl/benchmark/train.py`` (algorithm "DSGD"): every client
``compute_gradients``; ``get_flat_gradients_with_momentum``;
``byz_client.apply_attack``; ``server.update_model_with_gradients``;
``client.set_model_state(server.get_dict_parameters())``.

Table 3 of Allouah et al. (2023), and where it needs more than ByzFL's classes:

* model C(20)-R-M-C(20)-R-M-L(500)-R-L(10)-S (176,050 parameters) with NLL
  loss. ByzFL's ``cnn_mnist`` is C(20)-C(50)-L(500) (431,080 parameters), so the
  Table-3 network is registered into ``byzfl.fed_framework.models`` as
  ``cnn_mnist_table3`` (the classes look models up there by name);
* per-worker gradient clipping at 2: ByzFL's ``Client`` has none (its
  ``Clipping`` is a server-side pre-aggregation), so the loop clips each
  client's gradient with ``torch.nn.utils.clip_grad_norm_`` right after
  ``compute_gradients``, before the momentum, as byzjax does;
* l2-regularization 1e-4: the server's SGD ``weight_decay`` (ByzFL's way);
* learning rate 0.75 / (1 + floor(t / 50)): ``Server.scheduler`` (a
  ``MultiStepLR``) is replaced by the matching ``LambdaLR``;
* momentum 0.9 at the clients (``Client`` ``momentum``), batch 25.

Images are handed over already normalized ((x - 0.1307) / 0.3081, float32
NCHW tensors in a ``TensorDataset``), so ByzFL's loaders skip the per-image
PIL/ToTensor/Normalize transforms of its own harness: this favours ByzFL.

Output (JSON): per case, the median, mean, min and max ms per round over the
timed rounds (rounds during which other processes used the CPU are re-run) and the median ms of each phase (gradients incl. clipping,
momentum, attack, aggregation + server step, broadcast).
"""

import argparse
from importlib import metadata
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from byzfl_reference import import_byzfl  # pylint: disable=wrong-import-position
from cpu_quiet import Window, flush_denormals, wait_for_quiet  # pylint: disable=wrong-import-position


def table3_model(torch):
  """The MNIST CNN of Table 3 as a torch module class (log-softmax output)."""
  nn, F = torch.nn, torch.nn.functional

  class cnn_mnist_table3(nn.Module):  # pylint: disable=invalid-name
    """C(20)-R-M-C(20)-R-M-L(500)-R-L(10)-S, kernel 5, valid, pool 2."""

    def __init__(self):
      super().__init__()
      self._c1 = nn.Conv2d(1, 20, 5, 1)
      self._c2 = nn.Conv2d(20, 20, 5, 1)
      self._f1 = nn.Linear(320, 500)
      self._f2 = nn.Linear(500, 10)

    def forward(self, x):
      x = F.max_pool2d(F.relu(self._c1(x)), 2, 2)
      x = F.max_pool2d(F.relu(self._c2(x)), 2, 2)
      x = F.relu(self._f1(x.reshape(-1, 320)))
      return F.log_softmax(self._f2(x), dim=1)

  return cnn_mnist_table3


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data", required=True,
                 help=".npz with x (N,1,28,28) float32, y (N,), and "
                      "h<H>_part_<i> index arrays: the shard of honest worker "
                      "i when there are H honest workers")
  p.add_argument("--cases", required=True, help="JSON list of cases")
  p.add_argument("--rounds", type=int, default=50, help="timed rounds")
  p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
  p.add_argument("--threads", type=int, default=2, help="torch threads")
  p.add_argument("--batch-size", type=int, default=25)
  p.add_argument("--lr", type=float, default=0.75)
  p.add_argument("--decay-every", type=int, default=50)
  p.add_argument("--momentum", type=float, default=0.9)
  p.add_argument("--weight-decay", type=float, default=1e-4)
  p.add_argument("--clip", type=float, default=2.0)
  p.add_argument("--seed", type=int, default=1)
  p.add_argument("--flush-denormals", action="store_true",
                 help="set FTZ/DAZ before torch starts its threads")
  p.add_argument("--out", required=True, help="output JSON")
  return p.parse_args(argv)


def build(byzfl, torch, np, case, data, args):
  """ByzFL's clients, Byzantine client and server for one case."""
  from torch.utils.data import DataLoader, TensorDataset  # pylint: disable=import-outside-toplevel

  x = torch.from_numpy(data["x"])
  y = torch.from_numpy(data["y"].astype(np.int64))
  dataset = TensorDataset(x, y)
  dataset.targets = y
  h = case["honest"]
  parts = [data[f"h{h}_part_{i}"] for i in range(h)]
  distributor = byzfl.DataDistributor({
      "data_distribution_name": "dirichlet_niid",
      "distribution_parameter": float(case["alpha"]), "nb_honest": case["honest"],
      "data_loader": DataLoader(dataset, batch_size=args.batch_size),
      "batch_size": args.batch_size})
  # The split byzjax drew, turned into ByzFL's loaders (shuffle, batch 25).
  loaders = distributor.idx_to_dataloaders([p.tolist() for p in parts])
  common = {"model_name": "cnn_mnist_table3", "device": "cpu",
            "optimizer_name": "SGD", "learning_rate": args.lr,
            "weight_decay": args.weight_decay, "milestones": [10 ** 9],
            "learning_rate_decay": 1.0}
  clients = [byzfl.Client(dict(common, **{
      "loss_name": "NLLLoss", "LabelFlipping": False, "nb_labels": 10,
      "momentum": args.momentum, "training_dataloader": loaders[i],
      "store_per_client_metrics": False})) for i in range(case["honest"])]
  test = DataLoader(TensorDataset(x[:500], y[:500]), batch_size=500)
  server = byzfl.Server(dict(common, **{
      "test_loader": test, "aggregator_info": case["aggregator_info"],
      "pre_agg_list": case["pre_agg_list"]}))
  every = args.decay_every
  server.scheduler = torch.optim.lr_scheduler.LambdaLR(
      server.optimizer, lambda t: 1.0 / (1.0 + t // every))
  attack_parameters = dict(case["attack_parameters"])
  attack_parameters["aggregator_info"] = case["aggregator_info"]
  attack_parameters["pre_agg_list"] = case["pre_agg_list"]
  attack_parameters["f"] = case["f"]
  byz = byzfl.ByzantineClient({"name": case["attack"], "f": case["f"],
                               "parameters": attack_parameters})
  return clients, server, byz


def run_case(byzfl, torch, np, case, data, args):
  """Median ms per round (and per phase) of ByzFL's DSGD loop."""
  byzfl.utils.misc.set_random_seed(args.seed)
  clients, server, byz = build(byzfl, torch, np, case, data, args)
  model = server.get_dict_parameters()
  for client in clients:
    client.set_model_state(model)
  clip = torch.nn.utils.clip_grad_norm_
  waited = wait_for_quiet()
  phases = {k: [] for k in ("gradients", "momentum", "attack", "aggregate_step",
                            "broadcast", "total")}
  losses, step, rejected = [], 0, 0
  # Rounds during which other processes used the CPU are not kept (the loop
  # goes on until ``rounds`` clean rounds, at most 3x as many in all).
  while len(phases["total"]) < args.rounds and step < args.warmup + 3 * args.rounds:
    with Window() as window:
      t0 = time.perf_counter()
      loss = 0.0
      for client in clients:
        loss += client.compute_gradients()
        if args.clip:
          clip(client.model.parameters(), args.clip)  # per-worker clip, Table 3
      t1 = time.perf_counter()
      honest = [client.get_flat_gradients_with_momentum() for client in clients]
      t2 = time.perf_counter()
      byz_vectors = byz.apply_attack(honest)
      t3 = time.perf_counter()
      server.update_model_with_gradients(honest + byz_vectors)
      t4 = time.perf_counter()
      model = server.get_dict_parameters()
      for client in clients:
        client.set_model_state(model)
      t5 = time.perf_counter()
    losses.append(loss / len(clients))
    if step >= args.warmup:
      if window.clean:
        for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4,
                                  t5 - t0)):
          phases[k].append(v * 1e3)
      else:
        rejected += 1
        waited += wait_for_quiet()
    step += 1
  total = phases["total"]
  params = sum(p.numel() for p in server.model.parameters())
  return {
      "median_ms": statistics.median(total), "mean_ms": statistics.fmean(total),
      "min_ms": min(total), "max_ms": max(total), "rounds": len(total),
      "phases_median_ms": {k: statistics.median(v) for k, v in phases.items()
                           if k != "total"},
      "parameters": params, "first_loss": losses[0], "last_loss": losses[-1],
      "waited_s": waited, "rejected_rounds": rejected,
  }


def main(argv=None):
  args = parse_args(argv)
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(args.threads)  # before numpy/torch load BLAS
  if args.flush_denormals:
    flush_denormals()  # inherited by the threads torch starts
  np, torch, byzfl = import_byzfl()
  import byzfl.utils.misc  # pylint: disable=import-outside-toplevel,unused-import
  import byzfl.fed_framework.models as byzfl_models  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(args.threads)
  byzfl_models.cnn_mnist_table3 = table3_model(torch)
  info = {"byzfl": metadata.version("byzfl"), "torch": torch.__version__,
          "numpy": np.__version__, "python": platform.python_version(),
          "torch_threads": torch.get_num_threads(),
          "flush_denormals": bool(args.flush_denormals),
          "byzfl_cnn_mnist_parameters": sum(
              p.numel() for p in byzfl_models.cnn_mnist().parameters())}
  print(f"ByzFL side: {info}", file=sys.stderr)
  data = dict(np.load(args.data))
  cases = json.load(open(args.cases))
  results = {}
  for case in cases:
    results[case["label"]] = run_case(byzfl, torch, np, case, data, args)
    print(f"  {case['label']}: {results[case['label']]['median_ms']:.1f} ms/round",
          file=sys.stderr)
  with open(args.out, "w") as fh:
    json.dump({"info": info, "results": results}, fh, indent=2)


if __name__ == "__main__":
  main()
