"""Training-step speed and peak memory of a backbone: one BYOL step on two views, per backbone.

Times the whole Lightning training step (both views through backbone, projector and predictor,
the momentum network, backward, LARS, the EMA update) on a fixed batch of real images resized to
--image-size, so the figure is the model's cost alone, without data loading. On a GPU: bf16
autocast where the GPU supports it, channels_last for convolutional backbones only, fused
attention (scaled_dot_product_attention) in ViTs. Prints one row per backbone.

    python scripts/benchmark/backbone_step.py --train-path DATA/cifar10/train          # ViT-S/16
    python scripts/benchmark/backbone_step.py --train-path DATA/cifar10/train \
        --backbones vit_small,resnet50 --batch-size 128 --json step.json
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.benchmark.pretrain_speed import load_config  # noqa: E402
from solo.utils.checkpoint import write_json_atomic  # noqa: E402


def real_batch(train_path: Path, count: int, size: int) -> torch.Tensor:
    """``count`` training images, resized to ``size`` and normalized with ImageNet's statistics."""
    from torchvision.io import decode_image
    from torchvision.transforms.v2 import functional as TF

    files = sorted(train_path.rglob("*.jpg"))
    if not files:
        raise SystemExit(f"--train-path: no .jpg images under '{train_path}'")
    files = files[:: max(1, len(files) // count)][:count]  # spread over the classes
    images = [TF.resize(decode_image(str(f)), [size, size], antialias=True) for f in files]
    batch = torch.stack(images).float() / 255
    return TF.normalize(batch, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def time_backbone(name: str, args: argparse.Namespace, images: torch.Tensor) -> dict[str, Any]:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from solo.methods import METHODS
    from solo.pretrain import trainer_kwargs

    on_gpu = torch.cuda.is_available() and not args.cpu
    overrides = [f"++backbone.name={name}", f"++optimizer.batch_size={args.batch_size}",
                 "++data.train_path=unused", "++data.val_path=null", "++knn_eval.enabled=False",
                 f"++accelerator={'gpu' if on_gpu else 'cpu'}", "++devices=1", "++strategy=auto",
                 f"++precision={args.precision or ('16' if on_gpu else '32')}",
                 "++checkpoint.enabled=False", "++auto_resume.enabled=False",
                 "++wandb.enabled=False", *args.override]
    cfg = load_config(ROOT / "scripts" / "pretrain" / "imagenet-100", "byol.yaml", overrides)
    model = METHODS.get(cfg.method)(cfg)
    batch = (torch.arange(len(images)), [images, images.flip(-1)], torch.full((len(images),), -1))
    steps = args.warmup + args.steps
    times: list[float] = []

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if on_gpu:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if on_gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)

    kwargs = {**trainer_kwargs(cfg), "max_epochs": 1, "limit_train_batches": steps,
              "limit_val_batches": 0, "logger": False, "enable_progress_bar": False,
              "enable_model_summary": False, "enable_checkpointing": False}
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loader = DataLoader(range(steps), batch_size=None, collate_fn=lambda _: batch)
    trainer = pl.Trainer(callbacks=[StepTimer()], **kwargs)
    trainer.fit(model, train_dataloaders=loader)
    steady = sorted(times[args.warmup:])
    seconds = steady[len(steady) // 2]  # the median step
    memory = (torch.cuda.max_memory_allocated() / 2**30 if on_gpu else
              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)  # kB -> GiB
    attention = [m.fused_attn for m in model.backbone.modules() if hasattr(m, "fused_attn")]
    return {"backbone": name, "device": torch.cuda.get_device_name() if on_gpu else "cpu",
            "image_size": images.shape[-1], "batch_size": len(images),
            "precision": str(trainer.precision), "step_seconds": seconds,
            "images_per_second": len(images) / seconds, "peak_memory_gib": memory,
            "memory_kind": "peak allocated" if on_gpu else "process peak RSS",
            "process_rss_before_gib": None if on_gpu else rss_before / 2**20,
            "channels_last": model.channels_last,
            "fused_attention": all(attention) if attention else None,
            "parameters_m": sum(p.numel() for p in model.backbone.parameters()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-path", type=Path, required=True, help="real images (ImageFolder)")
    parser.add_argument("--backbones", default="vit_small", help="comma-separated names")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=None, help="default 128 GPU, 8 CPU")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (the median is shown)")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out first")
    parser.add_argument("--precision", default=None, help="default 16 (bf16 where supported) on "
                                                           "a GPU, 32 on the CPU")
    parser.add_argument("--cpu", action="store_true", help="the CPU even where a GPU is")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("-o", "--override", action="append", default=[],
                        help="a Hydra override of the ImageNet-100 BYOL recipe")
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available() and not args.cpu
    args.batch_size = args.batch_size or (128 if on_gpu else 8)
    images = real_batch(args.train_path, args.batch_size, args.image_size)
    if on_gpu:
        images = images.cuda()
    rows = []
    for name in args.backbones.split(","):
        rows.append(time_backbone(name, args, images))
        if args.json:  # after each backbone: a run stopped at a time limit keeps those it timed
            write_json_atomic(args.json, rows)
    print("| backbone | device | px | batch | precision | images/s | step s | peak GiB | "
          "channels_last | fused attention |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['backbone']} ({r['parameters_m']:.0f} M) | {r['device']} | {r['image_size']} "
              f"| {r['batch_size']} | {r['precision']} | {r['images_per_second']:.1f} | "
              f"{r['step_seconds']:.3f} | {r['peak_memory_gib']:.2f} ({r['memory_kind']}) | "
              f"{r['channels_last']} | {r['fused_attention']} |")


if __name__ == "__main__":
    main()
