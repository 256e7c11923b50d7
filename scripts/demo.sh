#!/usr/bin/env bash
# The first run: pretrains SimCLR on the CIFAR-10 subset shipped in data/cifar10-mini (2,000
# training / 1,000 test images) and prints the backbone's kNN accuracy on the held-out images
# before and after, with the commands to try next. About five minutes of training on a 2-core
# CPU; on a GPU, the shipped SimCLR recipe for longer. Installs only the core package into .venv
# (no DALI, UMAP or wandb). Extra arguments are config overrides, e.g. ++max_epochs=10.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/python -m solo.demo "$@"
