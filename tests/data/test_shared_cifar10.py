"""The full CIFAR-10 from ../shared, in its ImageFolder layout, read through the config."""

from pathlib import Path

from solo.config import DataConfig
from solo.data import build_dataset


def test_whole_shared_cifar10_loads_as_image_folder(cifar10_full: Path) -> None:
    data = DataConfig(dataset="cifar10", train_path=str(cifar10_full / "train"),
                      val_path=str(cifar10_full / "test"))
    train = build_dataset(data, "train", transform=None)
    val = build_dataset(data, "val", transform=None)
    assert (len(train), len(val)) == (50_000, 10_000)
    index, image, target = train[49_999]
    assert index == 49_999 and image.size == (32, 32) and target == 9  # truck, the last class
    image, target = val[0]
    assert target == 0 and image.mode == "RGB"  # airplane
