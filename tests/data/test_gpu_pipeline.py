"""The device pipeline on the CPU, with real CIFAR-10 images: the batch contract, resident and
streamed sources, the epoch order across ranks, validation views equal to the CPU pipeline's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from solo.config import ConfigError
from solo.data import build_pipeline
from solo.data.augmentations import build_val_transform
from solo.data.datasets import build_dataset
from solo.data.gpu_pipeline import GPUPipeline, epoch_order
from tests.helpers import shipped_config

BATCH = 16


def pipeline_config(cifar_mini: Path, *extra: str):
    return shipped_config("byol", cifar_mini, ["++data.pipeline=gpu", "++data.fraction=0.05",
                                               "++knn_eval.enabled=True", *extra])


def test_epoch_order_is_shared_split_and_reseeded_each_epoch() -> None:
    cpu = torch.device("cpu")
    shards = [epoch_order(103, True, True, 5, 0, rank, 4, cpu) for rank in range(4)]
    together = torch.cat(shards)
    assert len(together) == 100 and len(set(together.tolist())) == 100  # disjoint, 103 % 4 dropped
    again = torch.cat([epoch_order(103, True, True, 5, 0, rank, 4, cpu) for rank in range(4)])
    assert torch.equal(together, again)  # every process computes the same permutation
    assert not torch.equal(shards[0], epoch_order(103, True, True, 5, 1, 0, 4, cpu))  # next epoch
    # validation: every item once, padded by wrapping so that all ranks get as many
    padded = [epoch_order(10, False, False, 5, 0, rank, 4, cpu) for rank in range(4)]
    assert [len(p) for p in padded] == [3] * 4
    assert set(torch.cat(padded).tolist()) == set(range(10))


@pytest.mark.parametrize("resident_max_gb", [16.0, 0.0], ids=["resident", "streamed"])
def test_training_batches_follow_the_contract(cifar_mini: Path, resident_max_gb: float) -> None:
    cfg = pipeline_config(cifar_mini, f"++data.resident_max_gb={resident_max_gb}")
    pipeline = build_pipeline(cfg)
    assert isinstance(pipeline, GPUPipeline)
    loader = pipeline.train_dataloader()
    dataset_targets = build_dataset(cfg.data, "train", None, indexed=False)
    num_items = len(dataset_targets)  # 5% of 2000
    assert len(loader) == num_items // BATCH
    seen = []
    for indexes, views, targets in loader:
        assert indexes.dtype == torch.int64 and indexes.shape == (BATCH,)
        assert [tuple(v.shape) for v in views] == [(BATCH, 3, 32, 32)] * 2
        assert all(v.dtype == torch.float32 for v in views)
        expected = torch.tensor([dataset_targets[int(i)][1] for i in indexes])
        assert torch.equal(targets, expected)  # each index names its image and label
        assert not torch.equal(views[0], views[1])  # two views drawn apart
        seen.extend(indexes.tolist())
    assert len(seen) == len(set(seen)) == len(loader) * BATCH


def test_streamed_and_resident_validation_views_equal_the_cpu_transform(cifar_mini: Path) -> None:
    resident = build_pipeline(pipeline_config(cifar_mini))
    streamed = build_pipeline(pipeline_config(cifar_mini, "++data.resident_max_gb=0"))
    (val_resident, bank_resident), (val_streamed, _) = (resident.val_dataloader(),
                                                          streamed.val_dataloader())
    images_r, targets_r = next(iter(val_resident))
    images_s, targets_s = next(iter(val_streamed))
    assert torch.equal(targets_r, targets_s)
    torch.testing.assert_close(images_r, images_s, atol=0.05, rtol=0)  # two JPEG decoders

    cfg = resident.cfg
    first = cfg.augmentations[0]
    transform = build_val_transform(first.crop_size, *first.normalization, cfg.data.dataset)
    reference = build_dataset(cfg.data, "val", transform)
    expected = torch.stack([reference[i][0] for i in range(len(images_r))])
    torch.testing.assert_close(images_r, expected, atol=1e-4, rtol=0)
    # the kNN bank: the training images in order, with the validation view
    train_set = build_dataset(cfg.data, "train", transform, indexed=False)
    assert len(bank_resident) == -(-len(train_set) // BATCH)
    bank_images, bank_targets = next(iter(bank_resident))
    torch.testing.assert_close(bank_images[0], train_set[0][0], atol=1e-4, rtol=0)
    assert bank_targets.tolist() == [train_set[i][1] for i in range(BATCH)]


def test_mixed_image_sizes_are_streamed_or_named(tmp_path: Path, cifar_mini: Path) -> None:
    for label, size in (("a", (40, 30)), ("b", (32, 32))):
        folder = tmp_path / "train" / label
        folder.mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", size, (i * 30, 100, 50)).save(folder / f"{i}.jpg")
    overrides = [f"++data.train_path={tmp_path / 'train'}", "++data.val_path=null",
                 "++data.dataset=custom", "++data.fraction=-1", "++optimizer.batch_size=4"]
    resident = build_pipeline(pipeline_config(cifar_mini, *overrides))
    with pytest.raises(ConfigError, match="resident_max_gb=0"):
        next(iter(resident.train_dataloader()))
    streamed = build_pipeline(pipeline_config(cifar_mini, *overrides, "++data.resident_max_gb=0"))
    indexes, views, targets = next(iter(streamed.train_dataloader()))
    assert [tuple(v.shape) for v in views] == [(4, 3, 32, 32)] * 2 and torch.isfinite(views[0]).all()


def test_the_pipeline_trains_a_method(cifar_mini: Path) -> None:
    from tests.methods.test_training_options import train

    cfg = pipeline_config(cifar_mini, "++knn_eval.enabled=False")
    model, trainer, _ = train(cfg, epochs=1)
    assert trainer.global_step == 1
    assert torch.isfinite(trainer.callback_metrics["train_loss"])


def test_streamed_epochs_reshuffle_with_persistent_workers(cifar_mini: Path) -> None:
    from solo.data.datasets import dataset_files
    from solo.data.gpu_pipeline import StreamedBatches

    cfg = pipeline_config(cifar_mini)
    files = dataset_files(build_dataset(cfg.data, "train", None, indexed=False))[:64]
    epoch = [0]
    batches = StreamedBatches(files, lambda indexes, images, targets, key: (indexes, targets),
                              16, True, 5, lambda: epoch[0], 0, 1, 2, torch.device("cpu"))
    first = torch.cat([indexes for indexes, _ in batches])
    workers = batches.loader._iterator  # the worker processes of this epoch
    epoch[0] = 1
    second = torch.cat([indexes for indexes, targets in batches])
    assert batches.loader._iterator is workers  # not started again for the next epoch
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(64))
    assert not torch.equal(first, second)  # the next epoch has its own order


@pytest.mark.parametrize("resident_max_gb", [16.0, 0.0], ids=["resident", "streamed"])
def test_knn_bank_keeps_only_labelled_training_images(cifar_mini: Path, tmp_path: Path,
                                                      resident_max_gb: float) -> None:
    """A custom folder where some images have no label: the bank is built from the training split
    already on the device (not read twice) and holds only the labelled ones."""
    cfg = pipeline_config(cifar_mini, f"++data.resident_max_gb={resident_max_gb}")
    pipeline = build_pipeline(cfg)
    pipeline._split("train")  # read once
    if resident_max_gb > 0:
        images, targets = pipeline._splits["train"]
        targets[::3] = -1  # as STL-10's unlabelled images are
        labelled = int((targets >= 0).sum())
    else:
        files = pipeline._splits["train"]
        pipeline._splits["train"] = files = [(p, -1 if i % 3 == 0 else t)
                                             for i, (p, t) in enumerate(files)]
        labelled = sum(t >= 0 for _, t in files)
    _, bank = pipeline.val_dataloader()
    seen = torch.cat([batch_targets for _, batch_targets in bank])
    assert (seen >= 0).all() and len(seen) == labelled


DEVICES = [pytest.param("cpu"),
           pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
               not torch.cuda.is_available(), reason="needs a CUDA GPU")])]


@pytest.mark.parametrize("device", DEVICES)
def test_streamed_decoding_reads_cmyk_and_equals_libjpeg(cifar_mini: Path, device: str) -> None:
    """nvJPEG's batched decoder refuses CMYK JPEGs (ImageNet has about 22) and fails the whole
    batch: those files are decoded on the CPU, every other one on the device."""
    import io

    import numpy as np
    from torchvision.io import ImageReadMode, decode_jpeg

    from solo.data.device_images import decode_on_device

    paths = sorted((cifar_mini / "train" / "cat").iterdir())[:4]
    encoded = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    buffer = io.BytesIO()
    Image.open(paths[0]).convert("CMYK").save(buffer, "JPEG")
    cmyk = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    png = io.BytesIO()
    Image.open(paths[1]).convert("RGB").save(png, "PNG")
    plain = torch.from_numpy(np.array(Image.open(io.BytesIO(png.getvalue())))).permute(2, 0, 1)
    images = decode_on_device([*encoded, cmyk, plain], [True] * 5 + [False], torch.device(device))
    assert len(images) == 6 and all(image.device.type == device for image in images)
    for data, image in zip([*encoded, cmyk], images):
        reference = decode_jpeg(data, mode=ImageReadMode.RGB)  # libjpeg, on the CPU
        # nvJPEG and libjpeg may round a level apart
        assert (image.cpu().int() - reference.int()).abs().max() <= 2
    assert torch.equal(images[-1].cpu(), plain)


def test_oversized_streamed_images_are_shrunk_before_padding(cifar_mini: Path) -> None:
    from solo.data.device_images import pad_batch, shrink_oversized

    pipeline = build_pipeline(pipeline_config(cifar_mini, "++data.resident_max_gb=0"))
    # 32 px crops down to 8% of the area: 114 px keeps even the smallest crop at 32 px or more
    assert pipeline.max_short_side == 114
    huge = torch.randint(0, 256, (3, 3000, 4000), dtype=torch.uint8)
    small = torch.randint(0, 256, (3, 32, 40), dtype=torch.uint8)
    shrunk = shrink_oversized([huge, small], pipeline.max_short_side)
    assert tuple(shrunk[0].shape) == (3, 114, 152) and shrunk[1] is small
    padded, sizes = pad_batch(shrunk)
    assert tuple(padded.shape) == (2, 3, 114, 152)
    assert sizes.tolist() == [[114, 152], [32, 40]]
    indexes, views, _ = pipeline._train_batch(torch.arange(2), [huge, small], torch.zeros(2))
    assert [tuple(v.shape) for v in views] == [(2, 3, 32, 32)] * 2
