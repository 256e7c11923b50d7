"""ResNet-18 (ImageNet stem) forward + backward on 32 px images: torchvision's convolutions
against solo's, which compute the last two stages (2x2 and 1x1 feature maps) as matrix products.

    python scripts/benchmark/small_input_conv.py [--batch-size 256] [--steps 8]

Prints the median milliseconds per step for fp32 and bf16 autocast on this machine's CPU (or
GPU, if present), on a batch of the bundled CIFAR-10 images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.benchmark.backbone_step import real_batch  # noqa: E402
from scripts.benchmark.pretrain_speed import synchronize  # noqa: E402
from solo.backbones import build_backbone  # noqa: E402


def median_step_ms(model: nn.Module, images: torch.Tensor, bf16: bool, steps: int) -> float:
    times = []
    for step in range(steps + 2):  # two warm-up steps
        synchronize()
        start = time.perf_counter()
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
            features = model(images)
        features.float().square().mean().backward()
        synchronize()
        if step >= 2:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images = real_batch(ROOT / "data" / "cifar10-mini" / "train", args.batch_size, 32).to(device)
    ours = build_backbone("resnet18").to(device)
    plain = torchvision.models.resnet18(weights=None).to(device)
    plain.fc = nn.Identity()
    plain.load_state_dict(ours.state_dict())
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size} x 3 x 32 x 32")
    print(f"{'precision':<10}{'torchvision ms':>16}{'solo ms':>10}{'speed-up':>10}")
    for bf16 in (False, True):
        reference = median_step_ms(plain, images, bf16, args.steps)
        fast = median_step_ms(ours, images, bf16, args.steps)
        print(f"{'bf16' if bf16 else 'fp32':<10}{reference:>16.0f}{fast:>10.0f}"
              f"{reference / fast:>9.2f}x")


if __name__ == "__main__":
    main()
