#!/usr/bin/env bash
# Sets up the environment, then pretrains BYOL briefly (3 epochs, ~5 minutes on 2 cores) on the CIFAR-10 subset shipped in
# data/cifar10-mini (2,000 train / 1,000 test images) on the CPU and prints the kNN accuracy of
# the backbone on the held-out images before and after pretraining.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python main_pretrain.py --config-path scripts/pretrain/cifar --config-name byol.yaml \
  ++name=byol-cifar10-demo \
  ++data.train_path=data/cifar10-mini/train ++data.val_path=data/cifar10-mini/test \
  ++data.num_workers=2 ++optimizer.batch_size=64 \
  ++scheduler.warmup_epochs=1 ++max_epochs=${EPOCHS:-3} \
  ++accelerator=cpu ++devices=1 ++precision=bf16-mixed ++strategy=auto \
  ++checkpoint.dir=trained_models/demo ++auto_resume.enabled=False "$@"
