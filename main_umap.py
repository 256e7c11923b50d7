"""A 2-D UMAP of a pretrained backbone's features of a dataset, saved as a PNG and an .npz.

    python main_umap.py --config-path scripts/umap/cifar --config-name umap.yaml \
        ++pretrained_checkpoint_dir=trained_models/byol/abc123 \
        ++data.train_path=./datasets/cifar10/train ++data.val_path=./datasets/cifar10/test

Needs the umap extra: pip install 'solo[umap]'.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from solo.cli import add_hydra_defaults, exit_on_user_error
from solo.eval.eval_config import UmapConfig, parse_eval_config
from solo.eval.umap import run_umap


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(raw: DictConfig) -> None:
    with exit_on_user_error():
        cfg = parse_eval_config(UmapConfig, OmegaConf.to_container(raw, resolve=True))
        files = run_umap(cfg)
    print(f"UMAP plot: {files.png}\ncoordinates and labels: {files.npz}")


if __name__ == "__main__":
    add_hydra_defaults(sys.argv)
    main()
