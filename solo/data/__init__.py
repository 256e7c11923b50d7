"""Datasets, augmentations and the pipelines that turn them into batches of views."""

from solo.data.augmentations import MultiCropTransform, build_transform, build_val_transform
from solo.data.datasets import DATASETS, build_dataset
from solo.data.h5 import convert_image_folder_to_h5
from solo.data.pipelines import PIPELINES, CPUPipeline, build_pipeline

__all__ = [
    "DATASETS",
    "PIPELINES",
    "CPUPipeline",
    "MultiCropTransform",
    "build_dataset",
    "build_pipeline",
    "build_transform",
    "build_val_transform",
    "convert_image_folder_to_h5",
]
