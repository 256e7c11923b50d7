"""TWIST's unsupervised classification through main_knn.py: the argmax of its class head on the
val set, scored with NMI, AMI, ARI and Hungarian accuracy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from solo.data import build_val_transform
from solo.eval.clustering import clustering_scores
from solo.methods import TWIST
from solo.pretrain import pretrain
from tests.helpers import ROOT, shipped_config

pytestmark = pytest.mark.slow


def link_slice(cifar_mini: Path, root: Path, per_class: dict[str, int]) -> Path:
    for split, count in per_class.items():
        for class_dir in sorted((cifar_mini / split).iterdir()):
            target = root / split / class_dir.name
            target.mkdir(parents=True)
            for image in sorted(class_dir.iterdir())[:count]:
                os.symlink(image, target / image.name)
    return root


def test_main_knn_scores_the_class_head_argmax(cifar_mini: Path, tmp_path: Path) -> None:
    data = link_slice(cifar_mini, tmp_path / "data", {"train": 2, "test": 6})
    cfg = shipped_config("twist", data, [
        "++checkpoint.enabled=True", f"++checkpoint.dir={tmp_path / 'ckpt'}", "++max_epochs=1",
        "++limit_train_batches=1", "++optimizer.batch_size=16", "++no_validation=True",
        "++knn_eval.enabled=False", "++enable_progress_bar=False", "++enable_model_summary=False",
        "++method_kwargs.proj_hidden_dim=64", "++method_kwargs.proj_output_dim=12"])
    run_dir = pretrain(cfg).run_dir
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "main_knn.py"), "--config-path",
         str(ROOT / "scripts" / "knn" / "cifar"), "--config-name", "knn.yaml",
         f"++pretrained_checkpoint_dir={run_dir}", f"++data.train_path={data / 'train'}",
         f"++data.val_path={data / 'test'}", "++accelerator=cpu", "++num_workers=0",
         "++batch_size=50", "++k=[5]", "++temperature=[0.1]", "++feature_type=[projector]",
         "++clustering.enabled=True", "++clustering.assign=argmax"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.findall(r"^projector\s+([\d.-]+)\s+([\d.-]+)\s+([\d.-]+)\s+([\d.-]+)$",
                       result.stdout, flags=re.M)
    assert len(found) == 1, result.stdout

    # the same scores from the checkpoint, by the head's argmax on the val images
    model = TWIST.load_from_checkpoint(next(run_dir.glob("*.ckpt")), map_location="cpu").eval()
    first = model.cfg.augmentations[0]
    transform = build_val_transform(first.crop_size, *first.normalization, "cifar10")
    images, labels = zip(*ImageFolder(str(data / "test"), transform=transform))
    with torch.no_grad():
        logits = torch.cat([model.projector(model.backbone(x))
                            for x in DataLoader(torch.stack(images), batch_size=50)])
    expected = clustering_scores(logits.argmax(1), torch.tensor(labels))
    got = [float(x) for x in found[0]]
    want = [100 * expected.nmi, 100 * expected.ami, 100 * expected.ari, 100 * expected.acc]
    assert got == pytest.approx(want, abs=0.006)
    assert want[3] >= 10  # one class in ten at least under the best mapping


def test_argmax_assignment_refuses_backbone_features(cifar_mini: Path, tmp_path: Path) -> None:
    from solo.config import ConfigError
    from solo.eval.eval_config import KnnConfig, parse_eval_config

    checkpoint = tmp_path / "x.ckpt"
    checkpoint.write_bytes(b"")
    raw = {"pretrained_checkpoint_dir": str(checkpoint),
           "data": {"dataset": "cifar10", "train_path": str(cifar_mini / "train"),
                    "val_path": str(cifar_mini / "test")},
           "feature_type": ["backbone", "projector"],
           "clustering": {"enabled": True, "assign": "argmax"}}
    with pytest.raises(ConfigError, match=r"assign: 'argmax' reads the class logits"):
        parse_eval_config(KnnConfig, raw)
    raw["clustering"]["assign"] = "mode"
    with pytest.raises(ConfigError, match=r"assign: 'mode' is not one of \('kmeans', 'argmax'\)"):
        parse_eval_config(KnnConfig, raw)
