"""DeepClusterV2's loss against a slow reference, its unassigned targets, and the lookup by index."""

from __future__ import annotations

import math

import torch

from solo.losses.deepclusterv2 import assignments_of, deepclusterv2_loss


def reference_loss(scores: list[torch.Tensor], assignments: torch.Tensor, t: float) -> float:
    """Per head: the mean over (crop, image) pairs with a target of -log softmax(s / t)[target];
    then the mean over heads (a head without any target counts 0)."""
    per_head = []
    for head, head_scores in enumerate(scores):
        terms = []
        for crop in range(head_scores.shape[0]):
            for image in range(head_scores.shape[1]):
                target = int(assignments[head, image])
                if target < 0:
                    continue
                logits = [float(v) / t for v in head_scores[crop, image]]
                log_norm = math.log(sum(math.exp(v) for v in logits))
                terms.append(log_norm - logits[target])
        per_head.append(sum(terms) / len(terms) if terms else 0.0)
    return sum(per_head) / len(per_head)


def test_loss_matches_the_reference_with_unassigned_images() -> None:
    torch.manual_seed(0)
    sizes = [5, 3, 7]  # heads of different sizes
    scores = [torch.randn(2, 6, k) for k in sizes]  # 2 crops, 6 images
    assignments = torch.stack([torch.randint(0, k, (6,)) for k in sizes])
    assignments[0, [1, 4]] = -1
    assignments[2, 0] = -1
    got = deepclusterv2_loss(scores, assignments, temperature=0.1)
    torch.testing.assert_close(got, torch.tensor(reference_loss(scores, assignments, 0.1)))
    # the crops of one image share its target: swapping crops changes nothing
    swapped = deepclusterv2_loss([s.flip(0) for s in scores], assignments, 0.1)
    torch.testing.assert_close(swapped, got)


def test_no_assignment_gives_zero_loss_and_zero_gradients() -> None:
    """The first epoch, before any clustering: no target, no NaN, nothing learnt."""
    scores = [torch.randn(2, 4, 3, requires_grad=True), torch.randn(2, 4, 5, requires_grad=True)]
    loss = deepclusterv2_loss(scores, torch.full((2, 4), -1), temperature=0.1)
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.count_nonzero(s.grad) == 0 for s in scores)
    # one head without targets counts 0 in the mean over heads
    partial = torch.stack([torch.tensor([0, 1, 2, 0]), torch.full((4,), -1)])
    expected = reference_loss([s.detach() for s in scores], partial, 0.1)
    torch.testing.assert_close(deepclusterv2_loss(scores, partial, 0.1), torch.tensor(expected))


def test_assignments_are_looked_up_by_dataset_index() -> None:
    table = torch.tensor([[3, 1, -1, 0], [2, 2, 0, 1]])  # 2 heads, 4 dataset indexes
    indexes = torch.tensor([3, 0, 7, 2])  # 7: beyond the table, unknown
    assert assignments_of(table, indexes).tolist() == [[0, 3, -1, -1], [1, 2, -1, 0]]
    empty = torch.full((2, 0), -1, dtype=torch.long)  # before the first clustering
    assert assignments_of(empty, indexes).tolist() == [[-1] * 4, [-1] * 4]
