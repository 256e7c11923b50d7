"""Datasets, augmentations and the pipelines that turn them into batches of views."""

from solo.data.augmentations import MultiCropTransform, build_transform, build_val_transform
from solo.data.dali import DALIPipeline  # registers pipeline "dali"; NVIDIA DALI loads lazily
from solo.data.datasets import DATASETS, build_dataset
from solo.data.gpu_pipeline import GPUPipeline  # registers pipeline "gpu"
from solo.data.h5 import convert_image_folder_to_h5
from solo.data.pipelines import PIPELINES, CPUPipeline, build_pipeline

__all__ = [
    "DATASETS",
    "PIPELINES",
    "CPUPipeline",
    "DALIPipeline",
    "GPUPipeline",
    "MultiCropTransform",
    "build_dataset",
    "build_pipeline",
    "build_transform",
    "build_val_transform",
    "convert_image_folder_to_h5",
]
