#!/usr/bin/env bash
# The baselines of this project, as runnable commands: keep every experiment you
# report in a script like this one, so that it can be found and rerun later.
#
#   bash experiments/baseline_experiments.sh            # all Iris baselines
#   EXTRA_ARGS="--num_epochs=1" bash experiments/...    # a quick check
#   CIFAR10_ROOT=/data/cifar10 bash experiments/...     # also the CIFAR-10 ones
#
# Running it again resumes unfinished runs and skips finished ones.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
RUNS="${RUNS_DIR:-runs}/baselines"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

# Iris (shipped with the package, runs offline in seconds).
"$PYTHON" bin/train.py iris "$RUNS/iris_linear" --model=linear "${EXTRA[@]}"
"$PYTHON" bin/train.py iris "$RUNS/iris_mlp" --model=mlp "${EXTRA[@]}"
"$PYTHON" bin/train.py iris "$RUNS/iris_mlp_fixed" --model=mlp_fixed "${EXTRA[@]}"
"$PYTHON" bin/train.py iris "$RUNS/iris_mlp_xavier" --model=mlp --training_model=XavierInitModel "${EXTRA[@]}"
# The seed's JSON interface: linear model, setosa against the rest.
"$PYTHON" training_scripts/run_experiment.py '{"model": "BaseModel", "dataset": "iris", "network": "linear",
    "network_args": {"output_shape": 1}, "loss": "BCEWithLogitsLoss", "num_epochs": 3}' "$RUNS/iris_linear_binary_json" \
    "${EXTRA[@]}"

for run in iris_linear iris_mlp iris_mlp_fixed iris_mlp_xavier; do
    "$PYTHON" bin/evaluate.py "$RUNS/$run"
done

# CIFAR-10 (needs the binary version under CIFAR10_ROOT, or downloads it there).
if [[ -n "${CIFAR10_ROOT:-}" ]]; then
    "$PYTHON" bin/train.py cifar10 "$RUNS/cifar10_cnn" --data.root="$CIFAR10_ROOT" "${EXTRA[@]}"
    "$PYTHON" bin/train.py cifar10 "$RUNS/cifar10_cnn10" --data.root="$CIFAR10_ROOT" --model.n_filters=10 "${EXTRA[@]}"
    "$PYTHON" bin/train.py cifar10 "$RUNS/cifar10_lenet" --data.root="$CIFAR10_ROOT" --model=lenet "${EXTRA[@]}"
    "$PYTHON" bin/train.py cifar10 "$RUNS/cifar10_resnet18" --data.root="$CIFAR10_ROOT" --model=resnet18 "${EXTRA[@]}"
else
    echo "CIFAR10_ROOT is not set: skipping the CIFAR-10 baselines."
fi
