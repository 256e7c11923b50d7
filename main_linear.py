"""Linear evaluation (or fine-tuning) of a pretrained backbone.

    python main_linear.py --config-path scripts/linear/cifar --config-name linear.yaml \
        '++pretrained_feature_extractor="trained_models/byol/RUNID/byol-cifar10-RUNID-ep=999.ckpt"'
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from solo.cli import add_hydra_defaults, exit_on_user_error
from solo.eval.linear_config import parse_linear_config
from solo.eval.linear_run import linear_eval, summary


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(raw: DictConfig) -> None:
    with exit_on_user_error():
        cfg = parse_linear_config(OmegaConf.to_container(raw, resolve=True))
        result = linear_eval(cfg)
    if result.is_global_zero:
        print(summary(cfg, result))


if __name__ == "__main__":
    add_hydra_defaults(sys.argv)
    main()
