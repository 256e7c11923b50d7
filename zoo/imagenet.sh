#!/usr/bin/env bash
# Download (and verify) every published imagenet checkpoint into trained_models/zoo/imagenet.
# Extra arguments go to `python -m solo.zoo download`: --base-url URL (a mirror), --manifest FILE,
# --quiet; a later --dir replaces this one. Set PYTHON to choose the interpreter.
set -euo pipefail
exec "${PYTHON:-python}" -m solo.zoo download --dataset imagenet --dir trained_models/zoo/imagenet "$@"
