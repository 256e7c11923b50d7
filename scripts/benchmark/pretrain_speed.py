"""Pretraining speed, one recipe through every data pipeline, side by side.

With a GPU: trains the recipe for a few epochs through each pipeline (cpu: DataLoader workers;
gpu: views made on the device; dali: when installed) and prints seconds per epoch (steady state,
the first epoch left out), images per second, GPU busy time, peak GPU memory and the speed-up over
the CPU pipeline. Without a GPU: compares augmentation throughput alone, the per-image CPU
transforms against the batched augmentation on CPU tensors, so a CPU-only machine gets a number.

    python scripts/benchmark/pretrain_speed.py --train-path DATA/cifar10/train
    python scripts/benchmark/pretrain_speed.py --train-path DATA/cifar10/train --epochs 4 \
        --pipelines cpu,gpu,gpu-compiled --json speed.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from solo.config import ExperimentConfig, parse_config  # noqa: E402
from solo.utils.checkpoint import write_json_atomic  # noqa: E402


def load_config(config_path: Path, config_name: str, overrides: list[str]) -> ExperimentConfig:
    with initialize_config_dir(config_dir=str(config_path.resolve()), version_base="1.3"):
        composed = compose(config_name=config_name, overrides=overrides)
    return parse_config(OmegaConf.to_container(composed, resolve=True))


# ----------------------------------------------------------------------------------------------
# without a GPU: augmentation throughput
# ----------------------------------------------------------------------------------------------
def augmentation_throughput(cfg: ExperimentConfig, num_images: int, batch_size: int,
                            repeats: int) -> None:
    from torch.utils.data import DataLoader
    from torchvision.transforms.v2.functional import pil_to_tensor

    from solo.data.augmentations import MultiCropTransform
    from solo.data.batch_augment import BatchMultiCrop
    from solo.data.datasets import build_dataset

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    dataset = build_dataset(cfg.data, "train", None, indexed=False)
    count = min(num_images, len(dataset))
    pil_images = [dataset[i][0].convert("RGB") for i in range(count)]
    views = len(MultiCropTransform(cfg.augmentations))

    per_image = MultiCropTransform(cfg.augmentations)
    start = time.perf_counter()
    for image in pil_images:
        per_image(image)
    single = count / (time.perf_counter() - start)

    # the training path: the same transforms in `cores` worker processes
    loader = DataLoader(_Transformed(pil_images, per_image), batch_size=batch_size,
                        num_workers=cores, persistent_workers=True)
    for _ in loader:  # start the workers
        break
    start = time.perf_counter()
    for _ in loader:
        pass
    workers = count / (time.perf_counter() - start)

    tensors = torch.stack([pil_to_tensor(image) for image in pil_images])
    batched = BatchMultiCrop(cfg.augmentations)

    def batched_rate(threads: int) -> float:
        torch.set_num_threads(threads)
        batched(tensors[:batch_size])  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            for first in range(0, count - batch_size + 1, batch_size):
                batched(tensors[first: first + batch_size])
        return repeats * (count // batch_size) * batch_size / (time.perf_counter() - start)

    one_thread, fast = batched_rate(1), batched_rate(cores)

    size = "x".join(str(s) for s in tensors.shape[-2:])
    print(f"\naugmentation throughput, {views} views per {size} image, {cores} CPU cores, "
          f"torch {torch.__version__}")
    print(f"{'path':<44}{'images/s':>10}{'vs per-image':>14}")
    for name, rate in (("per-image transforms, 1 process", single),
                       (f"per-image transforms, {cores} worker processes", workers),
                       (f"batched ({batch_size} images), 1 thread", one_thread),
                       (f"batched ({batch_size} images), {cores} threads", fast)):
        print(f"{name:<44}{rate:>10.0f}{rate / single:>13.1f}x")
    print(f"batched vs per-image with {cores} workers: {fast / workers:.1f}x")


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, images: list, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.images[index])


# ----------------------------------------------------------------------------------------------
# with a GPU: training epochs per pipeline
# ----------------------------------------------------------------------------------------------
class GPUBusySampler:
    """Share of time the GPU runs a kernel, sampled by NVML (through nvidia-smi) every 100 ms."""

    def __init__(self, index: int) -> None:
        self.index, self.samples, self._stop = index, [], threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _read(self) -> Optional[float]:
        try:
            return float(torch.cuda.utilization(self.index))
        except Exception:  # no pynvml: ask nvidia-smi
            if shutil.which("nvidia-smi") is None:
                return None
            out = subprocess.run(["nvidia-smi", "-i", str(self.index), "--query-gpu=utilization.gpu",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True)
            return float(out.stdout.strip() or "nan")

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            value = self._read()
            if value is not None:
                self.samples.append(value)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> Optional[float]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        return statistics.mean(self.samples) if self.samples else None


def synchronize() -> None:
    """Wait for the GPU's queue, so that a timer measures work done, not work launched."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_pipeline(cfg: ExperimentConfig) -> dict[str, Optional[float]]:
    import lightning.pytorch as pl

    from solo.data import build_pipeline
    from solo.methods import METHODS
    from solo.pretrain import trainer_kwargs

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.sampler: Optional[GPUBusySampler] = None

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            synchronize()
            if trainer.current_epoch == 1 and on_gpu:  # steady state: after compile and warm-up
                self.sampler = GPUBusySampler(torch.cuda.current_device())
                self.sampler.start()
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            synchronize()
            self.times.append(time.perf_counter() - self.start)

    on_gpu = torch.cuda.is_available() and cfg.trainer.get("accelerator") != "cpu"
    pl.seed_everything(cfg.seed, verbose=False)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    timer = EpochTimer()
    kwargs = {**trainer_kwargs(cfg), "logger": False, "enable_checkpointing": False,
              "enable_progress_bar": False, "enable_model_summary": False,
              "num_sanity_val_steps": 0, "limit_val_batches": 0}
    trainer = pl.Trainer(callbacks=[timer], **kwargs)
    model = METHODS.get(cfg.method)(cfg)
    datamodule = build_pipeline(cfg)
    trainer.fit(model, datamodule=datamodule)
    busy = timer.sampler.stop() if timer.sampler else None
    steady = statistics.median(timer.times[1:]) if len(timer.times) > 1 else timer.times[0]
    steps = trainer.num_training_batches
    return {"seconds": steady, "images": steps * cfg.optimizer.batch_size * trainer.world_size / steady,
            "busy": busy, "memory": torch.cuda.max_memory_allocated() / 1024**3 if on_gpu else None}


# what each variant adds to the recipe
VARIANTS = {
    "cpu": ["++data.pipeline=cpu"],
    "gpu": ["++data.pipeline=gpu"],
    "gpu-compiled": ["++data.pipeline=gpu", "++performance.compile=True"],
    "dali": ["++data.format=dali"],
}


def train_all(args: argparse.Namespace, overrides: list[str]) -> dict[str, dict]:
    """Each pipeline in turn; with ``--json``, the figures so far are written after each one, so
    a run stopped at a time limit keeps the pipelines it finished."""
    for variant in args.pipelines:
        if variant not in VARIANTS:
            raise SystemExit(f"unknown pipeline '{variant}'; choose from {', '.join(VARIANTS)}")
    name = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.cpu else "CPU"
    report = {"device": name, "torch": torch.__version__, "recipe": args.config_name,
              "epochs": args.epochs, "results": {}}
    results = report["results"]
    for variant in args.pipelines:
        cfg = load_config(args.config_path, args.config_name, overrides + VARIANTS[variant])
        print(f"--- {variant}: {cfg.method}, batch {cfg.optimizer.batch_size}, "
              f"{cfg.trainer.get('precision')}, {args.epochs} epochs", flush=True)
        results[variant] = time_pipeline(cfg)
        base = results.get("cpu", {}).get("seconds")
        for r in results.values():
            r["vs_cpu"] = base / r["seconds"] if base else None
        if args.json is not None:
            write_json_atomic(args.json, report)
    print(f"\n{name}, torch {torch.__version__}, {args.config_name} on {args.train_path}")
    print(f"{'pipeline':<14}{'s/epoch':>9}{'images/s':>10}{'GPU busy':>10}{'peak GiB':>10}"
          f"{'vs cpu':>8}")
    for variant, r in results.items():
        busy = f"{r['busy']:.0f}%" if r["busy"] is not None else "n/a"
        ratio = f"{r['vs_cpu']:.1f}x" if r["vs_cpu"] else "n/a"
        memory = f"{r['memory']:.2f}" if r["memory"] is not None else "n/a"
        print(f"{variant:<14}{r['seconds']:>9.2f}{r['images']:>10.0f}{busy:>10}{memory:>10}"
              f"{ratio:>8}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config-path", type=Path, default=ROOT / "scripts" / "pretrain" / "cifar")
    parser.add_argument("--config-name", default="byol.yaml")
    parser.add_argument("--train-path", required=True, help="the training images (ImageFolder)")
    parser.add_argument("--epochs", type=int, default=3, help="the first is left out as warm-up")
    parser.add_argument("--pipelines", default=None,
                        help="comma-separated, of cpu, gpu, gpu-compiled, dali (default: cpu, gpu "
                             "and dali where installed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--num-workers", type=int, default=None, help="CPU pipeline workers")
    parser.add_argument("--aug-images", type=int, default=2048, help="CPU-only comparison: images")
    parser.add_argument("--cpu", action="store_true",
                        help="train on the CPU even without a GPU (slow; checks the whole path)")
    parser.add_argument("-o", "--override", action="append", default=[],
                        help="a Hydra override for the recipe, e.g. -o ++optimizer.batch_size=512")
    args = parser.parse_args()

    overrides = [f"++data.train_path={args.train_path}", "++data.val_path=null",
                 f"++max_epochs={args.epochs}", "++knn_eval.enabled=False",
                 "++checkpoint.enabled=False", "++auto_resume.enabled=False",
                 "++wandb.enabled=False", "++devices=1", "++strategy=auto"]
    if args.num_workers is not None:
        overrides.append(f"++data.num_workers={args.num_workers}")
    overrides += args.override
    if args.cpu:
        overrides += ["++accelerator=cpu"]
    if not torch.cuda.is_available() and not args.cpu:
        cfg = load_config(args.config_path, args.config_name, overrides + ["++accelerator=cpu"])
        print("no GPU: comparing augmentation throughput only")
        augmentation_throughput(cfg, args.aug_images, cfg.optimizer.batch_size, repeats=3)
        return
    if args.pipelines is None:
        args.pipelines = ["cpu", "gpu"]  # "gpu" makes its views on whatever device trains
        try:
            import nvidia.dali  # noqa: F401
            args.pipelines.append("dali")
        except ImportError:
            pass
    else:
        args.pipelines = args.pipelines.split(",")
    train_all(args, overrides)


if __name__ == "__main__":
    main()
