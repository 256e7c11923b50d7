"""k-nearest-neighbour accuracy of a pretrained backbone (and projector), and optionally k-means.

    python main_knn.py --config-path scripts/knn/cifar --config-name knn.yaml \
        ++pretrained_checkpoint_dir=trained_models/byol/abc123 \
        ++data.train_path=./datasets/cifar10/train ++data.val_path=./datasets/cifar10/test
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from solo.cli import add_hydra_defaults, exit_on_user_error
from solo.eval.eval_config import KnnConfig, parse_eval_config
from solo.eval.knn import evaluate_knn


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(raw: DictConfig) -> None:
    with exit_on_user_error():
        cfg = parse_eval_config(KnnConfig, OmegaConf.to_container(raw, resolve=True))
        report = evaluate_knn(cfg)
    print(report.format())


if __name__ == "__main__":
    add_hydra_defaults(sys.argv)
    main()
