import math
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from solo.losses import nt_xent_loss
from solo.utils.distributed import gather_no_grad, gather_with_grad, rank, world_size


def reference_nt_xent(z: torch.Tensor, indexes: torch.Tensor, t: float) -> float:
    """solo-learn's objective, row by row: every row is an anchor, candidates are all other rows,
    loss = -log(sum of exp(s/T) over its positives / sum of exp(s/T) over all other rows)."""
    rows = [[a / math.sqrt(sum(b * b for b in r)) for a in r] for r in z.tolist()]
    ids = indexes.tolist()
    total = 0.0
    for i, anchor in enumerate(rows):
        sims = {j: sum(a * b for a, b in zip(anchor, r)) / t for j, r in enumerate(rows) if j != i}
        everything = sum(math.exp(s) for s in sims.values())
        positives = sum(math.exp(s) for j, s in sims.items() if ids[j] == ids[i])
        total += -math.log(positives / everything)
    return total / len(rows)


def random_crops(seed: int, batch: int = 8, crops: int = 2, dim: int = 6):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(crops * batch, dim, generator=g)
    indexes = torch.arange(batch).repeat(crops)  # crops concatenated crop by crop
    return z, indexes


def test_hand_computed_two_samples_in_2d() -> None:
    t = 0.5
    # unit rows r0=(1,0), r1=(0,1), r2=(0.6,0.8), r3=(-0.8,0.6), some given unnormalized
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [-0.8, 0.6]])
    indexes = torch.tensor([0, 1, 0, 1])
    e = math.exp
    # cosines: r0r1=0, r0r2=.6, r0r3=-.8, r1r2=.8, r1r3=.6, r2r3=0; every positive pair has .6
    anchor_losses = [
        -0.6 / t + math.log(e(0.0) + e(0.6 / t) + e(-0.8 / t)),
        -0.6 / t + math.log(e(0.0) + e(0.8 / t) + e(0.6 / t)),
        -0.6 / t + math.log(e(0.6 / t) + e(0.8 / t) + e(0.0)),
        -0.6 / t + math.log(e(-0.8 / t) + e(0.6 / t) + e(0.0)),
    ]
    expected = sum(anchor_losses) / 4
    assert abs(nt_xent_loss(z, indexes, t).item() - expected) < 1e-5


@pytest.mark.parametrize("crops", [2, 3, 6])
def test_matches_loop_reference(crops: int) -> None:
    z, indexes = random_crops(0, crops=crops)
    for t in (0.1, 0.7):
        assert abs(nt_xent_loss(z, indexes, t).item() - reference_nt_xent(z, indexes, t)) < 1e-4


def test_two_crops_equals_simclr_cross_entropy() -> None:
    # SimCLR's formulation: each row's target is its other crop, self-similarity masked out
    z, indexes = random_crops(1, batch=5)
    t = 0.2
    zn = torch.nn.functional.normalize(z, dim=-1)
    logits = zn @ zn.T / t
    logits.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(5, 10), torch.arange(0, 5)])
    expected = torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(nt_xent_loss(z, indexes, t), expected, atol=1e-5)


def test_invariant_to_permutation_and_scale() -> None:
    z, indexes = random_crops(2, crops=3)
    loss = nt_xent_loss(z, indexes)
    perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(nt_xent_loss(z[perm], indexes[perm]), loss, atol=1e-5)
    scale = torch.rand(len(z), 1, generator=torch.Generator().manual_seed(4)) * 10 + 0.1
    assert torch.allclose(nt_xent_loss(z * scale, indexes), loss, atol=1e-5)


def test_gradient_reaches_every_row() -> None:
    z, indexes = random_crops(5)
    z.requires_grad_(True)
    nt_xent_loss(z, indexes).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert (z.grad.norm(dim=1) > 0).all()


def test_half_precision_inputs_give_float32_loss() -> None:
    z, indexes = random_crops(6)
    loss = nt_xent_loss(z.bfloat16(), indexes)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - reference_nt_xent(z.bfloat16().float(), indexes, 0.1)) < 1e-4


def test_anchor_without_positive_raises() -> None:
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"sample ids \[1\] have no positive"):
        nt_xent_loss(z, torch.tensor([0, 0, 1]))
    # unchecked (the methods' steps after the first, which would wait for the device): no
    # positive means an empty numerator, an infinite loss
    assert nt_xent_loss(z, torch.tensor([0, 0, 1]), check_positives=False).isinf()


# --- two gloo processes --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_rows(r: int, layout: str, batch: int) -> torch.Tensor:
    """Rows of the full crop-by-crop batch that rank r holds."""
    if layout == "half_batch":  # both crops of samples [r*B/2, (r+1)*B/2)
        half = torch.arange(r * batch // 2, (r + 1) * batch // 2)
        return torch.cat([half, half + batch])
    # "crop_per_rank": rank r holds crop r of every sample, so all positives live on the other rank
    return torch.arange(r * batch, (r + 1) * batch)


def _worker(
    r: int, port: int, out_dir: str, z: torch.Tensor, indexes: torch.Tensor, t: float
) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=r, world_size=2)
    try:
        batch = len(z) // 2
        result: dict = {"rank": rank(), "world_size": world_size()}
        result["gathered"] = gather_no_grad(torch.arange(3) + 10 * r)
        # gather_with_grad: d/dx_r of sum_r' <w_r', gather(x)> = sum_r' w_r'[rows of r]
        x = torch.full((2, 3), float(r), requires_grad=True)
        weights = torch.arange(12.0).reshape(4, 3) * (r + 1)
        (gather_with_grad(x) * weights).sum().backward()
        result["gather_grad"] = x.grad
        for layout in ("half_batch", "crop_per_rank"):
            rows = _local_rows(r, layout, batch)
            local = z[rows].clone().requires_grad_(True)
            loss = nt_xent_loss(local, indexes[rows], t)
            loss.backward()
            result[layout] = (rows, loss.detach(), local.grad)
        torch.save(result, Path(out_dir) / f"rank{r}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_gather_matches_single_process(tmp_path: Path) -> None:
    t = 0.3
    z, indexes = random_crops(7, batch=6, dim=5)
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), z, indexes, t), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    assert [res["rank"] for res in results] == [0, 1]
    assert all(res["world_size"] == 2 for res in results)
    for res in results:
        assert torch.equal(res["gathered"], torch.tensor([0, 1, 2, 10, 11, 12]))
    w = torch.arange(12.0).reshape(4, 3)
    for r, res in enumerate(results):
        # both ranks' weights (1x and 2x) reach rank r's two rows
        assert torch.allclose(res["gather_grad"], 3 * w[2 * r : 2 * r + 2])

    full = z.clone().requires_grad_(True)
    full_loss = nt_xent_loss(full, indexes, t)
    full_loss.backward()
    for layout in ("half_batch", "crop_per_rank"):
        losses = torch.stack([res[layout][1] for res in results])
        assert torch.allclose(losses.mean(), full_loss.detach(), atol=1e-5), layout
        for res in results:
            rows, _, grad = res[layout]
            # DDP averages gradients over the world size
            assert torch.allclose(grad / 2, full.grad[rows], atol=1e-5), layout
