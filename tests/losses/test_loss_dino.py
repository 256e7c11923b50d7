"""DINO's loss against a loop over crop pairs written from the paper's equation 3; the center's
update against its equation; on two gloo processes the loss, gradients and center equal those of
one process on the global batch."""

from __future__ import annotations

import math

import pytest
import torch

from solo.losses import DINOLoss, dino_loss, updated_center
from tests.multiprocess import average_gradients, run_processes


def softmax(row: list[float], temperature: float) -> list[float]:
    exps = [math.exp(x / temperature) for x in row]
    return [e / sum(exps) for e in exps]


def reference(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor,
              ts: float, tt: float) -> float:
    """mean over pairs (i, j != i) of mean over images b of
    -sum_k softmax((t_ib - c) / tt)_k * log softmax(s_jb / ts)_k."""
    c = center.flatten().tolist()
    pair_losses = []
    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            if i == j:
                continue
            per_image = []
            for t_row, s_row in zip(t.tolist(), s.tolist()):
                p = softmax([x - ck for x, ck in zip(t_row, c)], tt)
                q = softmax(s_row, ts)
                per_image.append(-sum(pk * math.log(qk) for pk, qk in zip(p, q)))
            pair_losses.append(sum(per_image) / len(per_image))
    return sum(pair_losses) / len(pair_losses)


def crops(seed: int, batch: int = 4, dim: int = 7, large: int = 2,
          small: int = 2) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Student logits of every crop (large first) and teacher logits of the large ones."""
    g = torch.Generator().manual_seed(seed)
    student = [torch.randn(batch, dim, generator=g) for _ in range(large + small)]
    teacher = [torch.randn(batch, dim, generator=g) for _ in range(large)]
    return student, teacher


@pytest.mark.parametrize("large, small", [(2, 0), (2, 3), (3, 1)])
def test_matches_the_loop_over_crop_pairs(large: int, small: int) -> None:
    student, teacher = crops(0, large=large, small=small)
    center = torch.randn(1, 7, generator=torch.Generator().manual_seed(1))
    for ts, tt in ((0.1, 0.04), (0.1, 0.07), (1.0, 0.5)):
        got = dino_loss(student, teacher, center, ts, tt).item()
        assert got == pytest.approx(reference(student, teacher, center, ts, tt), rel=1e-5)


def test_invariant_to_permuting_the_images_and_to_shifting_the_logits() -> None:
    student, teacher = crops(2)
    center = torch.randn(1, 7, generator=torch.Generator().manual_seed(3))
    loss = dino_loss(student, teacher, center, 0.1, 0.04)
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(dino_loss([s[perm] for s in student], [t[perm] for t in teacher],
                                         center, 0.1, 0.04), loss)
    # a constant added to every logit of a row changes no softmax
    shift = torch.randn(4, 1)
    torch.testing.assert_close(dino_loss([s + shift for s in student],
                                         [t - 3 * shift for t in teacher], center, 0.1, 0.04), loss)
    # but the center is a per-prototype offset: moving it moves the targets
    assert not torch.allclose(dino_loss(student, teacher, center.roll(1, dims=1), 0.1, 0.04), loss)


def test_gradient_reaches_the_student_only_and_half_inputs_give_float32() -> None:
    student, teacher = crops(5)
    student = [s.requires_grad_(True) for s in student]
    teacher = [t.requires_grad_(True) for t in teacher]
    loss = dino_loss([s.bfloat16() for s in student], [t.bfloat16() for t in teacher],
                     torch.zeros(1, 7))
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(t.grad is None for t in teacher)
    assert all((s.grad.norm(dim=1) > 0).all() for s in student)


def test_a_single_crop_pair_of_the_same_view_is_an_error() -> None:
    student, teacher = crops(6, large=1, small=0)
    with pytest.raises(ValueError, match="no pair of different views"):
        dino_loss(student, teacher, torch.zeros(1, 7))
    with pytest.raises(ValueError, match="teacher crops <= student crops"):
        dino_loss(student[:1], teacher * 2, torch.zeros(1, 7))


def test_logged_target_entropy_is_the_teachers_mean_entropy() -> None:
    student, teacher = crops(12)
    center = torch.randn(1, 7, generator=torch.Generator().manual_seed(13))
    criterion = DINOLoss(7)
    criterion.center.copy_(center)
    _, entropy = criterion(student, teacher, 0.5)  # a warm teacher: an entropy well above 0
    c = center.flatten().tolist()
    entropies = [-sum(p * math.log(p) for p in softmax([x - ck for x, ck in zip(row, c)], 0.5))
                 for t in teacher for row in t.tolist()]
    assert entropy.item() == pytest.approx(sum(entropies) / len(entropies), rel=1e-5)


def column_means(rows: list[list[float]]) -> list[float]:
    return [sum(column) / len(rows) for column in zip(*rows)]


def test_center_moves_after_the_loss_as_the_ema_of_the_teacher_mean() -> None:
    criterion = DINOLoss(num_prototypes=7, student_temperature=0.1, center_momentum=0.9)
    assert torch.equal(criterion.center, torch.zeros(1, 7))
    assert "center" in criterion.state_dict()  # saved in checkpoints
    center = [0.0] * 7
    for seed in (7, 8):
        student, teacher = crops(seed)
        loss, _ = criterion(student, teacher, 0.04)
        # the loss used the center before this step's update
        used = torch.tensor([center])
        assert loss.item() == pytest.approx(reference(student, teacher, used, 0.1, 0.04), rel=1e-5)
        # center <- 0.9 center + 0.1 mean over every teacher row of the step (both crops)
        means = column_means([row for t in teacher for row in t.tolist()])
        center = [0.9 * c + 0.1 * m for c, m in zip(center, means)]
        torch.testing.assert_close(criterion.center, torch.tensor([center]))


def test_updated_center_momentum_bounds() -> None:
    center, teacher = torch.randn(1, 5), torch.randn(6, 5)
    torch.testing.assert_close(updated_center(center, teacher, 1.0), center)
    torch.testing.assert_close(updated_center(center, teacher, 0.0), teacher.mean(0, keepdim=True))


def _two_processes(rank: int, world: int, student: list[torch.Tensor],
                   teacher_steps: list[list[torch.Tensor]]) -> dict:
    rows = slice(rank * 4 // world, (rank + 1) * 4 // world)
    weight = torch.eye(7).requires_grad_(True)  # the student's "network"
    criterion = DINOLoss(7, 0.1, 0.9)
    losses, centers = [], []
    for teacher in teacher_steps:
        loss, _ = criterion([s[rows] @ weight for s in student], [t[rows] for t in teacher], 0.04)
        loss.backward()
        losses.append(loss.detach())
        centers.append(criterion.center.clone())
    return {"losses": losses, "centers": centers, "grad": average_gradients([weight])[0]}


def test_two_processes_equal_one_on_the_global_batch() -> None:
    student, _ = crops(9, batch=4)
    teacher_steps = [crops(seed, batch=4)[1] for seed in (10, 11)]  # two steps of teachers
    weight = torch.eye(7).requires_grad_(True)
    criterion = DINOLoss(7, 0.1, 0.9)
    losses, centers = [], []
    for teacher in teacher_steps:
        loss, _ = criterion([s @ weight for s in student], teacher, 0.04)
        loss.backward()
        losses.append(loss.detach())
        centers.append(criterion.center.clone())

    results = run_processes(_two_processes, student, teacher_steps)
    for step in range(2):
        # the center averages the teacher rows of both processes: the same everywhere, and that
        # of one process on the whole batch, so the second step's targets agree too
        for r in results:
            torch.testing.assert_close(r["centers"][step], centers[step])
        torch.testing.assert_close(sum(r["losses"][step] for r in results) / 2, losses[step])
    for r in results:
        torch.testing.assert_close(r["grad"], weight.grad)
    assert not torch.allclose(results[0]["losses"][0], results[1]["losses"][0])  # a real split
