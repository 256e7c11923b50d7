"""Datasets on real CIFAR-10 images: every format, the fraction subset and the errors."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.functional import pil_to_tensor

from solo.config import ConfigError, DataConfig
from solo.data import build_dataset, convert_image_folder_to_h5
from solo.data.datasets import dataset_targets, imagenet100_classes
from solo.data.h5 import H5Images

MINI = Path(__file__).resolve().parents[2] / "data" / "cifar10-mini"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def data_config(**overrides: object) -> DataConfig:
    values = {"dataset": "cifar10", "train_path": str(MINI / "train"),
              "val_path": str(MINI / "test"), "num_workers": 0}
    return DataConfig(**{**values, **overrides})


def mini_images(split: str, per_class: int, size: int = 32) -> tuple[np.ndarray, list[int]]:
    """The first ``per_class`` images of every class, decoded, as (N, size, size, 3) uint8."""
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        for path in sorted((MINI / split / name).iterdir())[:per_class]:
            image = Image.open(path).convert("RGB").resize((size, size))
            images.append(np.asarray(image))
            labels.append(label)
    return np.stack(images), labels


def copy_slice(dest: Path, classes: list[str], per_class: int) -> Path:
    for name in classes:
        (dest / name).mkdir(parents=True)
        for path in sorted((MINI / "train" / name).iterdir())[:per_class]:
            shutil.copy(path, dest / name / path.name)
    return dest


def test_cifar10_image_folder() -> None:
    data = data_config()
    train, val = build_dataset(data, "train", None), build_dataset(data, "val", None)
    assert len(train) == 2000 and len(val) == 1000
    index, image, target = train[1234]
    assert index == 1234 and image.mode == "RGB" and image.size == (32, 32)
    assert train.dataset.classes == CLASSES
    assert Counter(dataset_targets(train.dataset)) == {label: 200 for label in range(10)}
    image, target = val[999]
    assert isinstance(image, Image.Image) and target == 9


@pytest.mark.parametrize("layout", ["cifar10", "cifar100"])
def test_torchvision_cifar_files(tmp_path: Path, layout: str) -> None:
    train_images, train_labels = mini_images("train", per_class=5)
    test_images, test_labels = mini_images("test", per_class=2)

    def dump(name: str, images: np.ndarray, labels: list[int], key: str) -> None:
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CIFAR rows: R, G, B planes
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows, key: labels}, f)

    if layout == "cifar10":
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        for i in range(5):  # the images spread over the five training batches
            dump(f"data_batch_{i + 1}", train_images[i::5], train_labels[i::5], "labels")
        train_images = np.concatenate([train_images[i::5] for i in range(5)])
        train_labels = sum((train_labels[i::5] for i in range(5)), [])
        dump("test_batch", test_images, test_labels, "labels")
        meta = ("batches.meta", {"label_names": CLASSES})
    else:
        folder = tmp_path / "cifar-100-python"
        folder.mkdir()
        dump("train", train_images, train_labels, "fine_labels")
        dump("test", test_images, test_labels, "fine_labels")
        meta = ("meta", {"fine_label_names": CLASSES})
    with open(folder / meta[0], "wb") as f:
        pickle.dump(meta[1], f)

    data = data_config(dataset=layout, train_path=str(tmp_path), val_path=str(folder))
    train, val = build_dataset(data, "train", None), build_dataset(data, "val", None)
    assert len(train) == 50 and len(val) == 20
    for i in (0, 17, 49):
        index, image, target = train[i]
        assert index == i and target == train_labels[i]
        np.testing.assert_array_equal(np.asarray(image), train_images[i])
    image, target = val[19]
    np.testing.assert_array_equal(np.asarray(image), test_images[19])
    assert target == test_labels[19] and val.classes == CLASSES


def write_stl10_binary(root: Path) -> tuple[np.ndarray, list[int], np.ndarray, np.ndarray, list[int]]:
    """A small ``stl10_binary`` folder of real images: 10 labelled, 20 unlabelled, 10 test."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    train_images, train_labels = mini_images("train", per_class=1, size=96)
    unlabeled_images, _ = mini_images("train", per_class=2, size=96)
    test_images, test_labels = mini_images("test", per_class=1, size=96)
    for name, images in [("train", train_images), ("unlabeled", unlabeled_images),
                         ("test", test_images)]:
        # STL-10 stores each image column-major: (3, W, H)
        images.transpose(0, 3, 2, 1).tofile(folder / f"{name}_X.bin")
    for name, labels in [("train", train_labels), ("test", test_labels)]:
        (np.asarray(labels, dtype=np.uint8) + 1).tofile(folder / f"{name}_y.bin")  # 1-based
    return train_images, train_labels, unlabeled_images, test_images, test_labels


def test_torchvision_stl10_files(tmp_path: Path) -> None:
    train_images, _, unlabeled_images, test_images, _ = write_stl10_binary(tmp_path)
    data = data_config(dataset="stl10", train_path=str(tmp_path), val_path=str(tmp_path))
    train, val = build_dataset(data, "train", None), build_dataset(data, "val", None)
    assert len(train) == 30 and len(val) == 10
    _, image, target = train[3]
    np.testing.assert_array_equal(np.asarray(image), train_images[3])
    assert target == 3
    _, image, target = train[10 + 7]  # the unlabelled images follow the labelled ones
    np.testing.assert_array_equal(np.asarray(image), unlabeled_images[7])
    assert target == -1
    image, target = val[9]
    np.testing.assert_array_equal(np.asarray(image), test_images[9])
    assert target == 9


def test_knn_bank_is_the_labelled_part_of_the_training_set(tmp_path: Path) -> None:
    train_images, train_labels, _, _, _ = write_stl10_binary(tmp_path)
    data = data_config(dataset="stl10", train_path=str(tmp_path), val_path=str(tmp_path))
    bank = build_dataset(data, "bank", None)
    assert len(bank) == 10  # train+unlabeled holds 30; only the 10 labelled ones vote
    for i in range(10):
        image, target = bank[i]
        np.testing.assert_array_equal(np.asarray(image), train_images[i])
        assert target == train_labels[i]
    # a folder without labels has no bank at all: a config error that says what to do
    copy_slice(tmp_path / "plain", ["cat"], 2)
    with pytest.raises(ConfigError, match=r"data.train_path: .* no labelled images.*knn_eval"):
        build_dataset(data_config(dataset="custom", no_labels=True,
                                  train_path=str(tmp_path / "plain")), "bank", None)


def test_custom_without_labels(tmp_path: Path) -> None:
    copy_slice(tmp_path / "a", ["cat"], 3)
    copy_slice(tmp_path / "b" / "deeper", ["dog", "frog"], 2)
    Image.open(MINI / "train" / "cat" / "0002.jpg").convert("L").save(tmp_path / "gray.png")
    (tmp_path / "notes.txt").write_text("not an image")
    data = data_config(dataset="custom", train_path=str(tmp_path), no_labels=True)
    train = build_dataset(data, "train", None)
    assert len(train) == 3 + 4 + 1
    items = [train[i] for i in range(len(train))]
    assert [target for _, _, target in items] == [-1] * 8
    assert all(image.mode == "RGB" for _, image, _ in items)  # the grayscale PNG too


def test_h5_round_trip(tmp_path: Path) -> None:
    folder = copy_slice(tmp_path / "slice", ["bird", "airplane", "truck"], 4)
    h5_file = tmp_path / "slice.h5"
    assert convert_image_folder_to_h5(str(folder), str(h5_file)) == 12

    from_folder = build_dataset(data_config(dataset="custom", train_path=str(folder)), "train",
                                pil_to_tensor)
    from_h5 = build_dataset(data_config(dataset="custom", format="h5", train_path=str(h5_file)),
                            "train", pil_to_tensor)
    assert len(from_h5) == len(from_folder) == 12
    assert from_h5.dataset.classes == ["airplane", "bird", "truck"]
    for i in range(12):
        index, image, target = from_h5[i]
        _, expected, expected_target = from_folder[i]
        assert index == i and target == expected_target
        assert torch.equal(image, expected)

    # the parent's open handle must not leak into the workers: each opens the file itself
    loader = DataLoader(from_h5, batch_size=4, num_workers=2)
    indexes, images, targets = map(torch.cat, zip(*loader))
    assert indexes.tolist() == list(range(12)) and images.shape == (12, 3, 32, 32)
    assert targets.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_fraction_is_stratified_and_deterministic() -> None:
    data = data_config(fraction=0.1)
    first, second = build_dataset(data, "train", None), build_dataset(data, "train", None)
    assert len(first) == 200
    assert Counter(dataset_targets(first.dataset)) == {label: 20 for label in range(10)}
    assert first.dataset.indices == second.dataset.indices
    index, image, target = first[199]  # the index is the position in the subset
    assert index == 199 and target == 9
    assert len(build_dataset(data, "val", None)) == 1000  # the validation set stays whole


def test_imagenet100_keeps_the_standard_subset(tmp_path: Path) -> None:
    wnids = imagenet100_classes()
    assert len(wnids) == len(set(wnids)) == 100
    extra = ["n01440764", "n15075141"]  # ImageNet classes that are not in the subset
    pixel = Image.new("RGB", (4, 4), (255, 0, 0))
    for wnid in list(wnids) + extra:
        (tmp_path / "all" / wnid).mkdir(parents=True)
        pixel.save(tmp_path / "all" / wnid / "0.png")
    data = data_config(dataset="imagenet100", train_path=str(tmp_path / "all"))
    train = build_dataset(data, "train", None)
    assert train.dataset.classes == sorted(wnids) and len(train) == 100

    for wnid in wnids[:3]:  # a folder with only a few classes is used as it is
        (tmp_path / "few" / wnid).mkdir(parents=True)
        pixel.save(tmp_path / "few" / wnid / "0.png")
    few = build_dataset(data_config(dataset="imagenet100", train_path=str(tmp_path / "few")),
                        "train", None)
    assert len(few) == 3


def test_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data\.train_path: '/no/such/folder'"):
        build_dataset(data_config(train_path="/no/such/folder"), "train", None)
    with pytest.raises(FileNotFoundError, match=r"data\.val_path: .*cifar-10-batches-py"):
        build_dataset(data_config(val_path=str(tmp_path)), "val", None)  # empty folder
    with pytest.raises(FileNotFoundError, match=r"data\.train_path: .*HDF5"):
        build_dataset(data_config(format="h5", train_path=str(tmp_path / "x.h5")), "train", None)
    with pytest.raises(ConfigError, match=r"data\.val_path is not set"):
        build_dataset(data_config(val_path=None), "val", None)
    with pytest.raises(ConfigError, match=r"data\.format: 'dali' is read by the DALI pipeline"):
        build_dataset(data_config(format="dali", pipeline="gpu"), "train", None)
    with pytest.raises(ValueError, match="split"):
        build_dataset(data_config(), "test", None)


def test_h5_command_line_converts_a_folder(tmp_path: Path, cifar_mini: Path) -> None:
    for name in ("cat", "dog"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for image in sorted((cifar_mini / "test" / name).glob("*.jpg"))[:3]:
            shutil.copy(image, tmp_path / "images" / name)
    out = tmp_path / "images.h5"
    result = subprocess.run([sys.executable, "-m", "solo.data.h5", str(tmp_path / "images"), str(out)],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert "wrote 6 images" in result.stdout
    assert H5Images(str(out)).targets == [0, 0, 0, 1, 1, 1]
