"""Pretrain a backbone with a self-supervised method.

    python main_pretrain.py --config-path scripts/pretrain/cifar --config-name byol.yaml \
        ++data.train_path=./datasets ++max_epochs=5
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from solo.config import ConfigError, parse_config
from solo.pretrain import pretrain, summary

# keep the working directory and write no Hydra output folders, unless the user asks otherwise
HYDRA_DEFAULTS = ("hydra.run.dir=.", "hydra.output_subdir=null",
                  "hydra/job_logging=disabled", "hydra/hydra_logging=disabled")


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(raw: DictConfig) -> None:
    try:
        cfg = parse_config(OmegaConf.to_container(raw, resolve=True))
        result = pretrain(cfg)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        sys.exit(2)
    if result.is_global_zero:
        print(summary(cfg, result))


if __name__ == "__main__":
    given = {arg.split("=")[0].lstrip("+~") for arg in sys.argv[1:]}
    sys.argv += [arg for arg in HYDRA_DEFAULTS if arg.split("=")[0] not in given]
    main()
