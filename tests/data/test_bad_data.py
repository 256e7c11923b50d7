"""Bad data on real files: odd image modes become RGB, unreadable files fail with one line naming
them (from worker processes too) or, with data.skip_corrupt, are replaced and listed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from solo.config import ConfigError, DataConfig, ExperimentConfig, build
from solo.data import CPUPipeline, build_dataset
from solo.data.dali import DALIPipeline
from solo.data.decoding import (
    SKIPPED_FILES,
    SKIPPED_FILES_VARIABLE,
    UnreadableImageError,
    skipped_files,
)
from solo.data.device_images import EncodedFiles, decode_on_device
from solo.data.gpu_pipeline import GPUPipeline

MINI = Path(__file__).resolve().parents[2] / "data" / "cifar10-mini"
RGB = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
NOT_AN_IMAGE = "not an image: PIL recognizes no image format in it"
ADVICE = "replace or delete the file, or set ++data.skip_corrupt=true to skip unreadable images"


def unreadable(path: Path, reason: str) -> str:
    return f"unreadable image '{path}' ({reason}); {ADVICE}"


def truncated_jpeg(path: Path) -> Path:
    source = sorted((MINI / "train" / "cat").iterdir())[0]
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def data_config(train: Path, **overrides: object) -> DataConfig:
    return DataConfig(**{"dataset": "custom", "train_path": str(train), "num_workers": 0,
                         **overrides})


def experiment(train: Path, batch_size: int = 2, pipeline: str = "cpu",
               **data: object) -> ExperimentConfig:
    return build(ExperimentConfig, {
        "name": "bad-data", "method": "simclr", "augmentations": [{"crop_size": 8, "num_crops": 2}],
        "optimizer": {"name": "sgd", "batch_size": batch_size, "lr": 0.1, "weight_decay": 0.0},
        "data": {"dataset": "custom", "train_path": str(train), "num_workers": 0,
                 "pipeline": pipeline, **data}})


def good_and_bad(root: Path) -> tuple[Path, Path, Path]:
    """Class folder 'a': 0.png readable, 1.jpg truncated, 2.jpg a text file, 3.png readable."""
    (root / "a").mkdir(parents=True)
    Image.fromarray(RGB).save(root / "a" / "0.png")
    truncated = truncated_jpeg(root / "a" / "1.jpg")
    text = root / "a" / "2.jpg"
    text.write_text("not an image\n")
    Image.fromarray(255 - RGB).save(root / "a" / "3.png")
    return root, truncated, text


# ----------------------------------------------------------------------------------------------
# modes that are converted
# ----------------------------------------------------------------------------------------------
def test_cmyk_rgba_gray_and_16_bit_images_become_8_bit_rgb(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    Image.fromarray(RGB).convert("CMYK").save(folder / "0_cmyk.jpg", quality=100)
    alpha = np.full((8, 8, 1), 7, dtype=np.uint8)
    Image.fromarray(np.concatenate([RGB, alpha], axis=2)).save(folder / "1_rgba.png")
    Image.fromarray(RGB[..., 0]).save(folder / "2_gray.png")
    sixteen = np.array([[0, 256, 32896, 65535] * 2] * 8, dtype=np.uint16)
    Image.fromarray(sixteen).save(folder / "3_16bit.png")
    assert Image.open(folder / "3_16bit.png").mode == "I;16"

    dataset = build_dataset(data_config(tmp_path, val_path=str(tmp_path)), "val", None)
    images = [dataset[i][0] for i in range(4)]
    assert all(image.mode == "RGB" and image.size == (8, 8) for image in images)
    cmyk, rgba, gray, deep = (np.asarray(image).astype(int) for image in images)
    assert np.abs(cmyk - RGB).max() <= 8  # JPEG's rounding
    assert (rgba == RGB).all()  # the alpha channel is dropped
    assert (gray == RGB[..., :1]).all()
    # 16-bit values scaled by 255/65535 (PIL's own conversion clips all but 0 to 255)
    assert (deep == np.array([0, 1, 128, 255] * 2)[None, :, None]).all()

    # the gpu pipeline's workers decode non-JPEG files the same way
    files = [(str(path), 0) for path in sorted(folder.iterdir())]
    _, decoded, is_jpeg, _ = EncodedFiles(files)[3]
    assert not is_jpeg and decoded.dtype == torch.uint8
    assert torch.equal(decoded, torch.from_numpy(deep.astype(np.uint8)).permute(2, 0, 1))


# ----------------------------------------------------------------------------------------------
# unreadable files: one line naming the file
# ----------------------------------------------------------------------------------------------
def test_unreadable_files_fail_naming_the_file(tmp_path: Path) -> None:
    root, truncated, text = good_and_bad(tmp_path / "train")
    dataset = build_dataset(data_config(root), "train", None)
    assert dataset[0][0] == 0
    with pytest.raises(UnreadableImageError) as error:
        dataset[1]
    assert str(error.value) == unreadable(truncated, "OSError: Truncated File Read")
    with pytest.raises(UnreadableImageError) as error:
        dataset[2]
    assert str(error.value) == unreadable(
        text, NOT_AN_IMAGE)
    assert isinstance(error.value, ConfigError)  # the entry points print it as one line


def test_an_error_in_a_worker_process_is_one_line_naming_the_file(tmp_path: Path) -> None:
    root, _, text = good_and_bad(tmp_path / "train")
    (root / "a" / "1.jpg").unlink()  # leave only the text file named .jpg
    cfg = experiment(root, batch_size=3, num_workers=1)
    loader = CPUPipeline(cfg).train_dataloader()
    with pytest.raises(UnreadableImageError) as error:
        for _ in loader:
            pass
    assert str(error.value) == unreadable(
        text, NOT_AN_IMAGE)


def test_gpu_pipeline_names_a_jpeg_that_no_decoder_reads(tmp_path: Path) -> None:
    truncated = truncated_jpeg(tmp_path / "cut.jpg")
    good = sorted((MINI / "train" / "dog").iterdir())[0]
    files = [(str(good), 1), (str(truncated), 1)]
    encoded = [EncodedFiles(files)[i][1] for i in range(2)]
    with pytest.raises(UnreadableImageError) as error:
        decode_on_device(encoded, [True, True], torch.device("cpu"), lambda i: files[i][0])
    assert str(error.value).startswith(f"unreadable image '{truncated}' (RuntimeError: ")
    assert str(error.value).endswith(ADVICE)


# ----------------------------------------------------------------------------------------------
# data.skip_corrupt
# ----------------------------------------------------------------------------------------------
def test_skip_corrupt_serves_the_next_readable_image_and_lists_the_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, truncated, text = good_and_bad(tmp_path / "train")
    listing = tmp_path / "run" / SKIPPED_FILES
    monkeypatch.setenv(SKIPPED_FILES_VARIABLE, str(listing))
    dataset = build_dataset(data_config(root, skip_corrupt=True), "train", None)
    with pytest.warns(UserWarning, match="data.skip_corrupt: skipped unreadable image"):
        items = [dataset[i] for i in range(len(dataset))]
    pixels = [np.asarray(views) for _, views, _ in items]
    # items 1 and 2 are unreadable: both get item 3, the next readable one; the order is stable
    assert [index for index, _, _ in items] == [0, 1, 2, 3]
    assert (pixels[0] == RGB).all() and all((p == 255 - RGB).all() for p in pixels[1:])
    assert skipped_files(str(listing)) == [str(truncated), str(text)]
    assert dataset.dataset.targets == [0] * 4  # the wrapper keeps the dataset's attributes


def test_skip_corrupt_on_the_gpu_pipeline_streamed(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root, truncated, text = good_and_bad(tmp_path / "train")
    listing = tmp_path / SKIPPED_FILES
    monkeypatch.setenv(SKIPPED_FILES_VARIABLE, str(listing))
    cfg = experiment(root, batch_size=4, pipeline="gpu", skip_corrupt=True, resident_max_gb=0)
    (batch,) = list(GPUPipeline(cfg).train_dataloader())
    indexes, crops, _ = batch
    # both unreadable files are served as item 3, with its index: a full batch all the same
    assert sorted(indexes.tolist()) == [0, 3, 3, 3] and crops[0].shape == (4, 3, 8, 8)
    assert sorted(skipped_files(str(listing))) == sorted([str(truncated), str(text)])
    reasons = dict(line.split("\t") for line in listing.read_text().splitlines())
    assert reasons[str(text)] == NOT_AN_IMAGE  # decoded by a worker
    assert reasons[str(truncated)].startswith("RuntimeError: ")  # by the device's decoder


def test_skip_corrupt_in_pretraining_writes_the_list_in_the_run_folder(tmp_path: Path) -> None:
    from solo.pretrain import pretrain
    from tests.helpers import shipped_config

    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            for path in sorted((MINI / split / name).iterdir())[:2]:
                shutil.copy(path, tmp_path / split / name / path.name)
    truncated = truncated_jpeg(tmp_path / "train" / "dog" / "bad.jpg")
    cfg = shipped_config("simclr", tmp_path, [
        f"++checkpoint.dir={tmp_path / 'runs'}", "++max_epochs=1", "++optimizer.batch_size=5",
        "++data.dataset=custom", "++data.skip_corrupt=true", "++data.num_classes=2",
        "++enable_progress_bar=False", "++enable_model_summary=False"])
    with pytest.warns(UserWarning, match="1 unreadable images were skipped"):
        result = pretrain(cfg)
    assert (result.run_dir / SKIPPED_FILES).read_text().split("\t")[0] == str(truncated)
    assert len((result.run_dir / SKIPPED_FILES).read_text().splitlines()) == 1


# ----------------------------------------------------------------------------------------------
# empty folders, missing paths, too few images
# ----------------------------------------------------------------------------------------------
def test_an_empty_class_folder_is_named(tmp_path: Path) -> None:
    root, _, _ = good_and_bad(tmp_path / "train")
    (root / "b").mkdir()
    (root / "c").mkdir()
    (root / "c" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError) as error:
        build_dataset(data_config(root, dataset="imagenet"), "train", None)
    assert str(error.value) == (f"data.train_path: class folder '{root / 'b'}' (and 1 more) holds "
                                "no image files; add images to it or remove it")


def test_dali_checks_paths_before_dali_starts(tmp_path: Path) -> None:
    # DALI is not installed here: these fail before it is imported
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError, match=rf"^data\.train_path: '{missing}' does not exist$"):
        DALIPipeline(experiment(missing, pipeline="dali", format="dali"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"^data\.val_path: '.*empty' is an empty folder"):
        DALIPipeline(experiment(MINI / "train", pipeline="dali", format="dali",
                                val_path=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match=r"^data\.skip_corrupt: DALI's reader cannot skip"):
        DALIPipeline(experiment(MINI / "train", pipeline="dali", format="dali", skip_corrupt=True))


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
def test_a_dataset_smaller_than_one_batch_is_refused(tmp_path: Path, pipeline: str) -> None:
    root = tmp_path / "train"
    (root / "a").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(RGB).save(root / "a" / f"{i}.png")
    cfg = experiment(root, batch_size=8, pipeline=pipeline)
    module = CPUPipeline(cfg) if pipeline == "cpu" else GPUPipeline(cfg)
    with pytest.raises(ConfigError) as error:
        module.train_dataloader()
    assert str(error.value) == (f"optimizer.batch_size: 8 is more than the 4 training images of "
                                f"data.train_path '{root}', so training would have no full batch; "
                                "lower optimizer.batch_size or add images")
