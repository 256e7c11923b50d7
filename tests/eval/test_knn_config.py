"""The kNN and UMAP configs: the shipped YAMLs parse; typos and impossible values fail by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from solo.config import ConfigError
from solo.eval.eval_config import KnnConfig, UmapConfig, checkpoint_file, parse_eval_config
from tests.helpers import ROOT, load_raw


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """A run folder as main_pretrain.py leaves it, with checkpoints of epochs 2 and 10."""
    folder = tmp_path / "byol" / "abc123"
    folder.mkdir(parents=True)
    for epoch in (2, 10):
        (folder / f"byol-cifar10-abc123-ep={epoch}.ckpt").write_bytes(b"x")
    (folder / "args.json").write_text("{}")
    return folder


def knn_raw(cifar_mini: Path, run_dir: Path, *overrides: str) -> dict:
    return load_raw(ROOT / "scripts" / "knn" / "cifar", "knn.yaml", [
        f"++pretrained_checkpoint_dir={run_dir}", f"++data.train_path={cifar_mini / 'train'}",
        f"++data.val_path={cifar_mini / 'test'}", *overrides])


def test_shipped_knn_yaml_parses_with_solo_learn_defaults(cifar_mini: Path, run_dir: Path) -> None:
    cfg = parse_eval_config(KnnConfig, knn_raw(cifar_mini, run_dir))
    assert cfg.k == [10, 20, 100, 200]
    assert cfg.temperature == [0.01, 0.02, 0.05, 0.07, 0.1, 0.2, 0.5, 1.0]
    assert cfg.feature_type == ["backbone", "projector"]
    assert cfg.distance_function == ["euclidean", "cosine"]
    assert cfg.data.num_classes == 10 and not cfg.clustering.enabled
    # the run folder's checkpoint of the highest epoch: 10, not the "ep=2" that sorts last by name
    assert checkpoint_file(cfg).name == "byol-cifar10-abc123-ep=10.ckpt"


def test_single_values_become_lists_and_num_workers_overrides(cifar_mini: Path, run_dir: Path) -> None:
    cfg = parse_eval_config(KnnConfig, knn_raw(cifar_mini, run_dir, "++k=5", "++temperature=0.1",
                                               "++feature_type=backbone", "++num_workers=0"))
    assert (cfg.k, cfg.temperature, cfg.feature_type) == ([5], [0.1], ["backbone"])
    assert cfg.workers == 0 and cfg.data.num_workers == 4  # the top-level key wins


@pytest.mark.parametrize("override, expected", [
    ("++temperatur=[0.1]", "unknown key 'temperatur' (did you mean \"temperature\"?)"),
    ("++feature_type=[projecter]", "feature_type: 'projecter' is not one of ('backbone', "
                                   "'projector') (did you mean \"projector\"?)"),
    ("++distance_function=[manhattan]", "distance_function: 'manhattan' is not one of"),
    ("++k=[0,10]", "k: needs values >= 1"),
    ("++clustering.num_cluster=5", "unknown key 'clustering.num_cluster' (did you mean "
                                   "\"num_clusters\"?)"),
    ("++accelerator=tpu", "accelerator: 'tpu' is not one of"),
    ("++data.val_path=null", "data.val_path: is not set"),
    ("++pretrained_feature_extractor=/some/file.ckpt", "set exactly one of pretrained_checkpoint_dir"),
    ("++pretrained_checkpoint_dir=/nonexistent/run", "pretrained_checkpoint_dir: '/nonexistent/run' "
                                                    "does not exist"),
    ("++data.train_path=/nonexistent/train", "data.train_path: '/nonexistent/train' does not exist"),
])
def test_bad_values_fail_naming_the_key(cifar_mini: Path, run_dir: Path, override: str,
                                        expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_eval_config(KnnConfig, knn_raw(cifar_mini, run_dir, override))
    assert expected in str(error.value)


def test_neither_checkpoint_key_and_empty_folder(cifar_mini: Path, tmp_path: Path) -> None:
    raw = knn_raw(cifar_mini, tmp_path)
    raw["pretrained_checkpoint_dir"] = None
    with pytest.raises(ConfigError, match="got neither"):
        parse_eval_config(KnnConfig, raw)
    with pytest.raises(ConfigError, match="holds no .ckpt file"):
        parse_eval_config(KnnConfig, knn_raw(cifar_mini, tmp_path))
    raw = knn_raw(cifar_mini, tmp_path)
    raw["pretrained_checkpoint_dir"], raw["pretrained_feature_extractor"] = None, str(tmp_path)
    with pytest.raises(ConfigError, match="is a folder; give a checkpoint file"):
        parse_eval_config(KnnConfig, raw)


def test_shipped_umap_yaml_parses_and_checks_its_split(cifar_mini: Path, run_dir: Path) -> None:
    ckpt = run_dir / "byol-cifar10-abc123-ep=2.ckpt"
    # Hydra reads the '=' of "ep=2" as an assignment unless the value is quoted
    overrides = [f"++pretrained_checkpoint_dir='{ckpt}'", f"++data.train_path={cifar_mini / 'train'}",
                 f"++data.val_path={cifar_mini / 'test'}"]
    raw = load_raw(ROOT / "scripts" / "umap" / "cifar", "umap.yaml", overrides)
    cfg = parse_eval_config(UmapConfig, raw)
    assert (cfg.split, cfg.n_neighbors, cfg.seed) == ("val", 15, 0)
    assert checkpoint_file(cfg) == ckpt  # a file is used as it is
    with pytest.raises(ConfigError, match="split: 'test' is not one of"):
        parse_eval_config(UmapConfig, {**raw, "split": "test"})
    with pytest.raises(ConfigError, match="unknown key 'k'"):  # a kNN key in a UMAP config
        parse_eval_config(UmapConfig, {**raw, "k": [20]})


@pytest.mark.parametrize("schema, folder, name", [(KnnConfig, "knn", "knn.yaml"),
                                                  (UmapConfig, "umap", "umap.yaml")])
def test_imagenet100_yamls_parse(schema: type, folder: str, name: str, cifar_mini: Path,
                                 run_dir: Path) -> None:
    raw = load_raw(ROOT / "scripts" / folder / "imagenet-100", name, [
        f"++pretrained_checkpoint_dir={run_dir}", f"++data.train_path={cifar_mini / 'train'}",
        f"++data.val_path={cifar_mini / 'test'}"])
    cfg = parse_eval_config(schema, raw)
    assert cfg.data.dataset == "imagenet100" and cfg.data.num_classes == 100
    assert cfg.precision == "bf16"
