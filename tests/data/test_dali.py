"""The DALI pipeline (data.format: dali) on real CIFAR-10 JPEGs, run by DALI on the CPU.

The views are checked against the images they claim to come from: the indexes of a batch name the
files whose pixels the views hold, the targets are those files' classes, and the augmentations
are measured on the pixels (a flip mirrors, brightness scales, grayscale equalizes the channels).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from solo.config import ConfigError, ExperimentConfig, build
from solo.data import DALIPipeline, build_pipeline
from solo.data.augmentations import build_val_transform
from solo.data.datasets import image_folder, load_rgb, stratified_subset

pytest.importorskip("nvidia.dali")

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "data" / "cifar10-mini"
BATCH = 16
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
PLAIN = {"rrc": {"enabled": False}}  # no random op at all: resize (a no-op at 32 px) and normalize


def experiment(augmentations: list[dict] | None = None, **overrides: dict) -> ExperimentConfig:
    raw = {
        "name": "dali-test",
        "method": "simclr",
        "augmentations": augmentations or [{"crop_size": 32, "num_crops": 2}],
        "optimizer": {"name": "lars", "batch_size": BATCH, "lr": 0.3, "weight_decay": 1e-4},
        "data": {"dataset": "cifar10", "train_path": str(MINI / "train"),
                 "val_path": str(MINI / "test"), "format": "dali", "num_workers": 1},
        "dali": {"device": "cpu"},
    }
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return build(ExperimentConfig, raw)


def group(crop_size: int = 32, num_crops: int = 1, **recipe: dict) -> dict:
    return {"crop_size": crop_size, "num_crops": num_crops, "mean": list(CIFAR_MEAN),
            "std": list(CIFAR_STD), **recipe}


def pixels(views: torch.Tensor) -> torch.Tensor:
    """Normalized CIFAR views back to 0..255 pixel values."""
    mean, std = torch.tensor(CIFAR_MEAN).view(3, 1, 1), torch.tensor(CIFAR_STD).view(3, 1, 1)
    return (views * std + mean) * 255


def reference_views(folder: Path, indexes: torch.Tensor, crop_size: int = 32,
                    dataset: str = "cifar10") -> torch.Tensor:
    """The CPU pipeline's validation view of the images at ``indexes`` (PIL decoding)."""
    files = image_folder(str(folder), None).samples
    transform = build_val_transform(crop_size, CIFAR_MEAN, CIFAR_STD, dataset)
    return torch.stack([transform(load_rgb(files[i][0])) for i in indexes.tolist()])


def one_epoch(loader) -> list[tuple]:
    return list(loader)


# ---------------------------------------------------------------------------------------------
# selection and errors
# ---------------------------------------------------------------------------------------------
def test_format_dali_selects_the_dali_pipeline() -> None:
    assert isinstance(build_pipeline(experiment()), DALIPipeline)  # data.pipeline left at "auto"
    assert isinstance(build_pipeline(experiment(data={"format": "image_folder",
                                                      "pipeline": "dali"})), DALIPipeline)
    with pytest.raises(ConfigError, match=r"data\.format: 'dali' is read by the DALI pipeline, "
                                          r"not by pipeline 'gpu'.*'image_folder'"):
        build_pipeline(experiment(data={"pipeline": "gpu"}))


def test_unreadable_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.format: 'h5' is read by the 'cpu' pipeline"):
        build_pipeline(experiment(data={"format": "h5", "pipeline": "dali"}))
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(ConfigError, match=r"data\.train_path: .*torchvision's binary cifar10 files "
                                          r"\('cifar-10-batches-py'\).*data\.format 'image_folder'"):
        build_pipeline(experiment(data={"train_path": str(tmp_path)}))
    with pytest.raises(ConfigError, match=r"optimizer\.batch_size: 4000 is more than the 2000"):
        build_pipeline(experiment(optimizer={"batch_size": 4000})).train_loader()
    with pytest.raises(ConfigError, match=r"dali\.device: must be 'gpu' or 'cpu', got 'tpu'"):
        experiment(dali={"device": "tpu"})


def test_missing_dali_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # as if DALI were not installed
    with pytest.raises(ConfigError, match=r"needs NVIDIA DALI.*pip install 'solo\[dali\]'"):
        build_pipeline(experiment())
    # and solo itself imports without it
    code = "import sys; sys.modules['nvidia.dali'] = None; import solo.data, solo.pretrain"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without GPU")
def test_gpu_requested_without_gpu_warns_and_runs_on_the_cpu() -> None:
    pipeline = build_pipeline(experiment(dali={"device": "gpu"}, data={"fraction": 0.1}))
    with pytest.warns(UserWarning, match="dali.device is 'gpu' but training does not run on a CUDA"):
        loader = pipeline.train_dataloader()
    _, crops, _ = next(iter(loader))
    assert crops[0].device.type == "cpu"


# ---------------------------------------------------------------------------------------------
# the batch contract
# ---------------------------------------------------------------------------------------------
def test_train_batch_contract() -> None:
    # a small group listed between two large ones: the large crops still come first
    cfg = experiment([group(32, 1, horizontal_flip={"prob": 0.5}), group(16, 2),
                      group(32, 1, color_jitter={"prob": 0.8, "brightness": 0.4})])
    loader = build_pipeline(cfg).train_dataloader()
    assert len(loader) == 2000 // BATCH

    batches = one_epoch(loader)
    assert len(batches) == len(loader)
    indexes, crops, targets = batches[0]
    assert indexes.shape == targets.shape == (BATCH,)
    assert indexes.dtype == targets.dtype == torch.int64
    assert [tuple(c.shape) for c in crops] == [(BATCH, 3, 32, 32)] * 2 + [(BATCH, 3, 16, 16)] * 2
    assert all(c.dtype == torch.float32 for c in crops)
    # shuffled (the folder is sorted by class), and every image once per epoch
    assert indexes.tolist() != sorted(indexes.tolist())
    seen = torch.cat([b[0] for b in batches])
    assert len(set(seen.tolist())) == len(seen) == 2000 // BATCH * BATCH
    # the targets are the ImageFolder's classes of the images at the indexes
    folder_targets = image_folder(str(MINI / "train"), None).targets
    for indexes, _, targets in batches:
        assert targets.tolist() == [folder_targets[i] for i in indexes.tolist()]


def test_views_hold_the_images_at_their_indexes() -> None:
    cfg = experiment([group(**PLAIN)], data={"fraction": 0.1})
    indexes, (views,), targets = next(iter(build_pipeline(cfg).train_dataloader()))
    # fraction 0.1 keeps a stratified tenth; the indexes are positions in that subset
    subset = stratified_subset(image_folder(str(MINI / "train"), None), 0.1)
    positions = torch.tensor(subset.indices)[indexes]
    torch.testing.assert_close(views, reference_views(MINI / "train", positions), atol=1e-5, rtol=0)
    full_targets = image_folder(str(MINI / "train"), None).targets
    assert targets.tolist() == [full_targets[i] for i in positions.tolist()]


def test_epochs_are_reshuffled_and_unfinished_epochs_drained() -> None:
    loader = build_pipeline(experiment(data={"fraction": 0.1})).train_dataloader()
    first = torch.cat([b[0] for b in one_epoch(loader)])
    iterator = iter(loader)
    next(iterator), next(iterator)  # stopped early, like Lightning's sanity check
    second = torch.cat([b[0] for b in one_epoch(loader)])  # a whole, fresh epoch
    assert len(second) == len(first) == 200 // BATCH * BATCH
    assert len(set(second.tolist())) == len(second)
    assert second.tolist() != first.tolist()


def test_shards_are_disjoint() -> None:
    pipeline = build_pipeline(experiment(data={"fraction": 0.5}))  # 1000 images
    loaders = [pipeline.train_loader(shard_id=rank, num_shards=2) for rank in (0, 1)]
    assert len(loaders[0]) == len(loaders[1]) == 500 // BATCH  # the same step count in each process
    for _ in range(2):  # epochs
        seen = [set(torch.cat([b[0] for b in one_epoch(loader)]).tolist()) for loader in loaders]
        assert len(seen[0]) == len(seen[1]) == 500 // BATCH * BATCH
        assert not seen[0] & seen[1]
        assert max(seen[0] | seen[1]) < 1000


# ---------------------------------------------------------------------------------------------
# augmentations, measured on the pixels
# ---------------------------------------------------------------------------------------------
def by_index(cfg: ExperimentConfig) -> dict[int, list[torch.Tensor]]:
    """Every image's crops over one epoch, by index."""
    views: dict[int, list[torch.Tensor]] = {}
    for indexes, crops, _ in build_pipeline(cfg).train_dataloader():
        for row, index in enumerate(indexes.tolist()):
            views[index] = [crop[row] for crop in crops]
    return views


def test_flip_with_probability_one_mirrors_the_plain_view() -> None:
    plain = by_index(experiment([group(**PLAIN)], data={"fraction": 0.1}))
    flipped = by_index(experiment([group(**PLAIN, horizontal_flip={"prob": 1.0})],
                                  data={"fraction": 0.1}))
    assert plain.keys() == flipped.keys()
    for index, (view,) in plain.items():
        assert torch.equal(flipped[index][0], view.flip(-1))
        assert not torch.equal(flipped[index][0], view)


def test_random_parameters_are_drawn_per_sample_and_per_crop() -> None:
    flips = by_index(experiment([group(num_crops=2, **PLAIN, horizontal_flip={"prob": 0.5})],
                                data={"fraction": 0.1}))
    plain = by_index(experiment([group(**PLAIN)], data={"fraction": 0.1}))
    flipped = [[not torch.equal(view, plain[i][0]) for view in views] for i, views in flips.items()]
    for i, views in flips.items():  # each view is the image or its mirror
        assert all(torch.equal(v, plain[i][0]) or torch.equal(v, plain[i][0].flip(-1)) for v in views)
    share = sum(f for pair in flipped for f in pair) / (2 * len(flipped))
    assert 0.35 < share < 0.65
    assert any(a != b for a, b in flipped)  # the two crops of one image decide apart

    crops = by_index(experiment([group(num_crops=2)], data={"fraction": 0.1}))  # random crops
    assert all(not torch.equal(a, b) for a, b in crops.values())


def test_brightness_factor_is_drawn_per_sample() -> None:
    recipe = {**PLAIN, "color_jitter": {"prob": 1.0, "brightness": 0.4}}
    jittered = by_index(experiment([group(**recipe)], data={"fraction": 0.1}))
    plain = by_index(experiment([group(**PLAIN)], data={"fraction": 0.1}))
    factors = []
    for index, (view,) in jittered.items():
        before, after = pixels(plain[index][0]), pixels(view)
        unclipped = (after < 254) & (before > 20)
        factor = (after[unclipped] / before[unclipped]).median().item()
        # one factor for the whole image: the ratio is constant up to rounding
        assert torch.allclose(after[unclipped], factor * before[unclipped], atol=1.0)
        factors.append(factor)
    assert 0.6 - 0.01 <= min(factors) and max(factors) <= 1.4 + 0.01
    assert max(factors) - min(factors) > 0.4  # spread over the range, not one draw for all


def test_grayscale_solarization_and_equalization() -> None:
    plain = by_index(experiment([group(**PLAIN)], data={"fraction": 0.1}))
    gray = by_index(experiment([group(**PLAIN, grayscale={"prob": 1.0})], data={"fraction": 0.1}))
    solar = by_index(experiment([group(**PLAIN, solarization={"prob": 1.0, "threshold": 0.5})],
                                data={"fraction": 0.1}))
    equal = by_index(experiment([group(**PLAIN, equalization={"prob": 1.0})],
                                data={"fraction": 0.1}))
    for index, (view,) in plain.items():
        image = pixels(view).round().to(torch.uint8)
        # ITU-R 601 luma in every channel, as torchvision's grayscale (DALI rounds a little apart)
        luma = TF.rgb_to_grayscale(image, num_output_channels=3).float()
        torch.testing.assert_close(pixels(gray[index][0]), luma, atol=2.5, rtol=0)
        # pixels at or above 128 inverted, exactly as torchvision's solarize
        torch.testing.assert_close(pixels(solar[index][0]), TF.solarize(image, 127.5).float(),
                                   atol=1e-3, rtol=0)
        # equalized channels span the whole range
        channels = pixels(equal[index][0]).flatten(1)
        assert (channels.amax(1) > 254).all()


# ---------------------------------------------------------------------------------------------
# validation loaders and normalization
# ---------------------------------------------------------------------------------------------
def test_val_loaders_and_normalization() -> None:
    cfg = experiment([group()], knn_eval={"enabled": True})
    val, bank = build_pipeline(cfg).val_dataloader()
    assert len(val) == math.ceil(1000 / BATCH) and len(bank) == math.ceil(2000 / BATCH)
    batches = one_epoch(val)
    images = torch.cat([b[0] for b in batches])
    targets = torch.cat([b[1] for b in batches])
    assert images.shape == (1000, 3, 32, 32) and images.dtype == torch.float32
    assert len(batches[-1][1]) == 1000 % BATCH  # the short last batch is kept
    # every validation image once, in the folder's order, with its class
    assert targets.tolist() == image_folder(str(MINI / "test"), None).targets
    torch.testing.assert_close(images[:40], reference_views(MINI / "test", torch.arange(40)),
                               atol=1e-5, rtol=0)
    # CIFAR statistics make the channels roughly standard
    per_channel = images.transpose(0, 1).flatten(1)
    assert per_channel.mean(1).abs().max() < 0.1
    assert (per_channel.std(1) - 1).abs().max() < 0.1

    bank_images, bank_targets = next(iter(bank))
    assert bank_targets.tolist() == [0] * BATCH  # the training set in order
    torch.testing.assert_close(bank_images, reference_views(MINI / "train", torch.arange(BATCH)),
                               atol=1e-5, rtol=0)
    assert torch.equal(next(iter(bank))[0], bank_images)  # deterministic, and restarts cleanly


def test_imagenet_like_validation_view() -> None:
    # resize to 256/224 of the crop (27 px), then the centre 24 px, as build_val_transform
    cfg = experiment([group(24)], data={"dataset": "custom", "num_classes": 10})
    images, _ = next(iter(build_pipeline(cfg).val_dataloader()[0]))
    reference = reference_views(MINI / "test", torch.arange(BATCH), 24, "custom")
    assert images.shape == reference.shape == (BATCH, 3, 24, 24)
    # both antialiased bilinear resizes; they round differently
    assert (pixels(images) - pixels(reference)).abs().mean() < 1.5


def test_no_validation() -> None:
    assert build_pipeline(experiment(data={"val_path": None})).val_dataloader() == []
    assert build_pipeline(experiment(no_validation=True)).val_dataloader() == []


# ---------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pretrain_byol_with_dali(tmp_path: Path) -> None:
    from solo.pretrain import pretrain
    from tests.helpers import shipped_config

    cfg = shipped_config("byol", MINI, [
        "++data.format=dali", "++dali.device=cpu", "++optimizer.batch_size=8",
        "++data.fraction=0.05", "++max_epochs=1", "++limit_train_batches=2",
        "++limit_val_batches=2", "++num_sanity_val_steps=1", "++enable_progress_bar=False",
        f"++checkpoint.dir={tmp_path}", "++method_kwargs.proj_hidden_dim=256",
        "++method_kwargs.pred_hidden_dim=256"])
    assert cfg.knn_eval.enabled  # validation runs both DALI loaders, twice, stopping early
    result = pretrain(cfg)
    assert math.isfinite(result.metrics["train_loss_epoch"])
    assert 0 <= result.metrics["knn_acc1"] <= 1 and 0 <= result.before["knn_acc1"] <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dali_gpu_operators_make_the_batch_contract_on_the_device() -> None:
    """DALI's "mixed" decoder and GPU operators, where DALI and a GPU are both there."""
    cfg = experiment(dali={"device": "gpu"}, knn_eval={"enabled": True})
    pipeline = build_pipeline(cfg)
    indexes, crops, targets = next(iter(pipeline.train_loader(device_id=0)))
    assert all(crop.is_cuda and crop.dtype == torch.float32 for crop in crops)
    assert len(indexes) == len(targets) == BATCH
    val, bank = (pipeline.val_loader(split, device_id=0) for split in ("val", "bank"))
    images, _ = next(iter(val))
    assert images.is_cuda
    # the same views as the CPU pipeline's, two JPEG decoders apart
    torch.testing.assert_close(images[:8].cpu(), reference_views(MINI / "test", torch.arange(8)),
                               atol=0.05, rtol=0)
    next(iter(bank))
