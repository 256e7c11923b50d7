"""Pretrain a backbone with a self-supervised method.

    python main_pretrain.py --config-path scripts/pretrain/cifar --config-name byol.yaml \
        ++data.train_path=./datasets ++max_epochs=5
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from solo.cli import add_hydra_defaults, exit_on_user_error
from solo.config import parse_config
from solo.pretrain import pretrain, summary


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(raw: DictConfig) -> None:
    with exit_on_user_error():
        cfg = parse_config(OmegaConf.to_container(raw, resolve=True))
        result = pretrain(cfg)
    if result.is_global_zero:
        print(summary(cfg, result))


if __name__ == "__main__":
    add_hydra_defaults(sys.argv)
    main()
