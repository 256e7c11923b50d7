"""main_knn.py and main_umap.py run as a user runs them, on a checkpoint that main_pretrain's code
wrote, over a slice of the repository's CIFAR-10 images, on the CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from solo.data import build_val_transform
from solo.methods import BYOL
from solo.pretrain import pretrain
from tests.data.test_datasets import write_stl10_binary
from tests.helpers import ROOT, shipped_config
from tests.solo_learn import write_solo_learn_run

pytestmark = pytest.mark.slow
TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 10


@pytest.fixture(scope="module")
def data_slice(cifar_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 20 training and 10 test images of every class, linked into an ImageFolder tree."""
    root = tmp_path_factory.mktemp("cifar-slice")
    for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for class_dir in sorted((cifar_mini / split).iterdir()):
            target = root / split / class_dir.name
            target.mkdir(parents=True)
            for image in sorted(class_dir.iterdir())[:count]:
                os.symlink(image, target / image.name)
    return root


@pytest.fixture(scope="module")
def run_dir(data_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BYOL run folder written by solo.pretrain (Checkpointer, args.json): one training step."""
    checkpoints = tmp_path_factory.mktemp("ckpt")
    cfg = shipped_config("byol", data_slice, [
        "++checkpoint.enabled=True", f"++checkpoint.dir={checkpoints}", "++max_epochs=1",
        "++limit_train_batches=1", "++optimizer.batch_size=8", "++no_validation=True",
        "++knn_eval.enabled=False", "++enable_progress_bar=False", "++enable_model_summary=False",
        "++method_kwargs.proj_hidden_dim=64", "++method_kwargs.pred_hidden_dim=64",
        "++method_kwargs.proj_output_dim=32"])
    result = pretrain(cfg)
    assert len(list(result.run_dir.glob("*.ckpt"))) == 1
    return result.run_dir


def run(script: str, cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / script), *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def config(kind: str) -> list[str]:
    return ["--config-path", str(ROOT / "scripts" / kind / "cifar"), "--config-name", f"{kind}.yaml"]


def data_overrides(data: Path) -> list[str]:
    return [f"++data.train_path={data / 'train'}", f"++data.val_path={data / 'test'}",
            "++accelerator=cpu", "++num_workers=0", "++batch_size=50"]


def table_rows(stdout: str) -> dict[tuple[str, str, int, float | None], tuple[float, float]]:
    """The kNN table's rows by (feature, distance, k, T); T is None for euclidean ("-")."""
    rows = {}
    for line in stdout.splitlines():
        match = re.fullmatch(r"(backbone|projector)\s+(euclidean|cosine)\s+(\d+)\s+([\d.e-]+|-)\s+"
                             r"([\d.]+)\s+([\d.]+)", line.strip())
        if match:
            feature, distance, k, t, acc1, acc5 = match.groups()
            temperature = None if t == "-" else float(t)
            rows[(feature, distance, int(k), temperature)] = (float(acc1), float(acc5))
    return rows


def nearest_neighbour_accuracy(checkpoint: Path, data: Path) -> float:
    """acc@1 of 1-NN with cosine similarity, from the Lightning checkpoint loaded the usual way."""
    model = BYOL.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    first = model.cfg.augmentations[0]
    transform = build_val_transform(first.crop_size, *first.normalization, "cifar10")
    encoded = []
    for split in ("train", "test"):
        images, labels = zip(*ImageFolder(str(data / split), transform=transform))
        with torch.no_grad():
            feats = torch.cat([model.backbone(batch) for batch in
                               DataLoader(torch.stack(images), batch_size=100)])
        encoded.append((torch.nn.functional.normalize(feats, dim=1), torch.tensor(labels)))
    (bank, bank_labels), (queries, labels) = encoded
    nearest = (queries @ bank.T).argmax(dim=1)
    return float((bank_labels[nearest] == labels).float().mean())


def test_knn_table_and_clustering(run_dir: Path, data_slice: Path, tmp_path: Path) -> None:
    result = run("main_knn.py", tmp_path, *config("knn"), f"++pretrained_checkpoint_dir={run_dir}",
                 *data_overrides(data_slice), "++k=[1,5,20]", "++temperature=[0.07,1]",
                 "++clustering.enabled=True")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert f"kNN of {10 * TEST_PER_CLASS} evaluation images against {10 * TRAIN_PER_CLASS} " \
           "training images on cpu" in out
    rows = table_rows(out)
    # one table: every feature x k x (cosine x temperature, euclidean without one), each once
    expected_rows = [(f, "cosine", k, t) for f in ("backbone", "projector") for k in (1, 5, 20)
                     for t in (0.07, 1.0)]
    expected_rows += [(f, "euclidean", k, None) for f in ("backbone", "projector") for k in (1, 5, 20)]
    assert sorted(rows, key=str) == sorted(expected_rows, key=str)
    for acc1, acc5 in rows.values():
        assert 0 <= acc1 <= acc5 <= 100
    for feature in ("backbone", "projector"):  # one neighbour: the temperature cannot matter
        assert rows[(feature, "cosine", 1, 0.07)] == rows[(feature, "cosine", 1, 1.0)]
    # the backbone's 1-NN accuracy, recomputed here from the checkpoint by other means
    checkpoint = next(run_dir.glob("*.ckpt"))
    expected = 100 * nearest_neighbour_accuracy(checkpoint, data_slice)
    assert rows[("backbone", "cosine", 1, 0.07)][0] == pytest.approx(expected, abs=0.006)

    clustering = re.findall(r"^(backbone|projector)\s+([\d.-]+)\s+([\d.-]+)\s+([\d.-]+)\s+([\d.-]+)$",
                            out, flags=re.M)
    assert [c[0] for c in clustering] == ["backbone", "projector"]
    for _, nmi, ami, ari, acc in clustering:
        assert 0 <= float(nmi) <= 100 and -100 <= float(ami) <= 100 and -100 <= float(ari) <= 100
        assert 10 <= float(acc) <= 100  # the best mapping is never worse than one class in ten


@pytest.mark.parametrize("method", ["byol", "simclr", "mocov2plus"])
def test_knn_on_a_solo_learn_run_folder(method: str, data_slice: Path, tmp_path: Path) -> None:
    """The shipped kNN config, backbone and projector features, on a run folder as solo-learn
    leaves it: its projector is rebuilt from its own args.json."""
    checkpoint, _ = write_solo_learn_run(tmp_path / "trained_models", method, data_slice)
    result = run("main_knn.py", tmp_path, *config("knn"),
                 f"++pretrained_checkpoint_dir={checkpoint.parent}", *data_overrides(data_slice),
                 "++k=[5]", "++temperature=[0.1]")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ignored" not in result.stderr  # every key of solo-learn's args.json is known
    rows = table_rows(result.stdout)
    assert set(rows) == {(f, "cosine", 5, 0.1) for f in ("backbone", "projector")} | {
        (f, "euclidean", 5, None) for f in ("backbone", "projector")}


def test_knn_on_stl10_votes_with_the_labelled_training_images(run_dir: Path, tmp_path: Path) -> None:
    """STL-10's train split is train+unlabeled: the unlabelled images are left out of the bank
    (they have no class to vote for) instead of the dataset being refused."""
    write_stl10_binary(tmp_path / "stl10")
    result = run("main_knn.py", tmp_path, *config("knn"), f"++pretrained_checkpoint_dir={run_dir}",
                 "++data.dataset=stl10", f"++data.train_path={tmp_path / 'stl10'}",
                 f"++data.val_path={tmp_path / 'stl10'}", "++accelerator=cpu", "++num_workers=0",
                 "++k=[1,5]", "++temperature=[0.1]")
    assert result.returncode == 0, result.stderr[-3000:]
    # 10 labelled + 20 unlabelled training images: the bank holds the 10 labelled ones
    assert "kNN of 10 evaluation images against 10 training images on cpu" in result.stdout
    rows = table_rows(result.stdout)
    assert ("backbone", "cosine", 5, 0.1) in rows and ("projector", "euclidean", 1, None) in rows


def test_knn_without_projector_fails_clearly(run_dir: Path, data_slice: Path, tmp_path: Path) -> None:
    # a backbone saved without its projector: projector features cannot be made, and main_knn
    # says so before reading any image (typos in the config: tests/eval/test_knn_config.py)
    model = BYOL.load_from_checkpoint(next(run_dir.glob("*.ckpt")), map_location="cpu")
    torch.save(model.backbone.state_dict(), tmp_path / "backbone.pth")
    result = run("main_knn.py", tmp_path, *config("knn"), "++pretrained_checkpoint_dir=null",
                 f"++pretrained_feature_extractor={tmp_path / 'backbone.pth'}",
                 *data_overrides(data_slice))
    assert result.returncode == 2
    assert "no projector weights (no 'projector.*' keys); use ++feature_type=[backbone]" in result.stderr



def test_umap_png_and_npz(run_dir: Path, data_slice: Path, tmp_path: Path) -> None:
    pytest.importorskip("umap", reason="the umap extra (umap-learn) is not installed")
    pytest.importorskip("matplotlib", reason="the umap extra (matplotlib) is not installed")
    result = run("main_umap.py", tmp_path, *config("umap"), f"++pretrained_checkpoint_dir={run_dir}",
                 *data_overrides(data_slice), f"++output_dir={tmp_path / 'plots'}",
                 "++n_neighbors=10")
    assert result.returncode == 0, result.stderr[-3000:]
    stem = next(run_dir.glob("*.ckpt")).stem + "-val"
    png, npz = tmp_path / "plots" / f"{stem}.png", tmp_path / "plots" / f"{stem}.npz"
    assert f"UMAP plot: {png}" in result.stdout and f"coordinates and labels: {npz}" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = np.load(npz)
    test_set = ImageFolder(str(data_slice / "test"))
    assert saved["coords"].shape == (10 * TEST_PER_CLASS, 2) and np.isfinite(saved["coords"]).all()
    np.testing.assert_array_equal(saved["labels"], np.asarray(test_set.targets))
    assert saved["class_names"].tolist() == test_set.classes
