"""SwAV's Sinkhorn codes and swapped prediction loss against loops over the paper's equations; the
codes' row and column sums; on two gloo processes the codes (with and without a queue), the loss
and its gradients equal those of one process on the global batch."""

from __future__ import annotations

import math

import torch

from solo.losses import local_share, sinkhorn_codes, swav_loss
from tests.multiprocess import average_gradients, run_processes


def reference_codes(scores: torch.Tensor, iters: int, epsilon: float) -> list[list[float]]:
    """Algorithm 1 of the paper, entry by entry: Q = exp(S^T / eps) / sum; ``iters`` times every
    prototype row scaled to sum 1/K, then every sample column to 1/N; returned as N x K, times N."""
    s = scores.tolist()
    n, k = len(s), len(s[0])
    q = [[math.exp(s[i][c] / epsilon) for i in range(n)] for c in range(k)]  # K x N
    total = sum(sum(row) for row in q)
    q = [[x / total for x in row] for row in q]
    for _ in range(iters):
        for c in range(k):
            row_sum = sum(q[c])
            q[c] = [x / row_sum / k for x in q[c]]
        for i in range(n):
            col_sum = sum(q[c][i] for c in range(k))
            for c in range(k):
                q[c][i] = q[c][i] / col_sum / n
    return [[q[c][i] * n for c in range(k)] for i in range(n)]


def reference_loss(scores: list[torch.Tensor], codes: list[torch.Tensor], t: float) -> float:
    """Mean over pairs (large crop i, any other crop j) of the batch mean of
    -sum_k code_i[b, k] * log softmax(scores_j[b] / t)_k."""
    pairs = []
    for i, code in enumerate(codes):
        for j, score in enumerate(scores):
            if j == i:
                continue
            total = 0.0
            for q_b, s_b in zip(code.tolist(), score.tolist()):
                log_z = math.log(sum(math.exp(x / t) for x in s_b))
                total += -sum(q * (x / t - log_z) for q, x in zip(q_b, s_b))
            pairs.append(total / len(code))
    return sum(pairs) / len(pairs)


def cosine_scores(seed: int, n: int = 8, k: int = 5, dim: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    prototypes = torch.nn.functional.normalize(torch.randn(k, dim, generator=g), dim=1)
    return z @ prototypes.T  # (n, k) in [-1, 1], as SwAV's


def test_codes_match_the_loop_reference() -> None:
    scores = cosine_scores(0)
    for iters, epsilon in ((3, 0.05), (1, 0.5), (10, 0.1)):
        want = torch.tensor(reference_codes(scores, iters, epsilon))
        torch.testing.assert_close(sinkhorn_codes(scores, iters, epsilon), want.float(),
                                   rtol=1e-4, atol=1e-6)


def test_every_code_sums_to_one_and_the_clusters_balance_as_it_converges() -> None:
    scores = cosine_scores(1, n=10, k=5)
    for iters in (1, 3):
        codes = sinkhorn_codes(scores, iters, 0.05)
        assert (codes >= 0).all()
        torch.testing.assert_close(codes.sum(dim=1), torch.ones(10))
    # many iterations: each prototype holds N / K = 2 samples' worth (the equipartition)
    converged = sinkhorn_codes(scores, 300, 0.5)
    torch.testing.assert_close(converged.sum(dim=0), torch.full((5,), 2.0), rtol=1e-4, atol=1e-4)
    # ... which the 3 iterations do not reach: the test can tell the two apart
    assert not torch.allclose(sinkhorn_codes(scores, 1, 0.05).sum(dim=0), torch.full((5,), 2.0),
                              atol=1e-2)


def test_codes_follow_a_permutation_of_the_samples_and_ignore_half_precision() -> None:
    scores = cosine_scores(2)
    perm = torch.randperm(len(scores), generator=torch.Generator().manual_seed(3))
    codes = sinkhorn_codes(scores, 3, 0.05)
    torch.testing.assert_close(sinkhorn_codes(scores[perm], 3, 0.05), codes[perm])
    assert sinkhorn_codes(scores.bfloat16(), 3, 0.05).dtype == torch.float32


def test_loss_matches_the_loop_reference_with_small_crops() -> None:
    g = torch.Generator().manual_seed(4)
    scores = [torch.randn(6, 5, generator=g) for _ in range(4)]  # 2 large crops, then 2 small
    codes = [torch.softmax(torch.randn(6, 5, generator=g), dim=1) for _ in range(2)]
    for t in (0.1, 1.0):
        assert abs(swav_loss(scores, codes, t).item() - reference_loss(scores, codes, t)) < 1e-5


def test_gradient_reaches_the_scores_only() -> None:
    g = torch.Generator().manual_seed(5)
    scores = [torch.randn(6, 5, generator=g).requires_grad_(True) for _ in range(3)]
    codes = [torch.softmax(torch.randn(6, 5, generator=g), dim=1).requires_grad_(True)
             for _ in range(2)]
    swav_loss(scores, codes, 0.1).backward()
    assert all(c.grad is None for c in codes)
    assert all(s.grad.norm() > 0 for s in scores)


def _two_processes(rank: int, world: int, scores: torch.Tensor, crops: list[torch.Tensor],
                   queue: torch.Tensor) -> dict:
    rows = slice(rank * len(scores) // world, (rank + 1) * len(scores) // world)
    # SwAV's queue: every process holds all of it and adds its share to its batch's rows
    with_queue = sinkhorn_codes(torch.cat([scores[rows], local_share(queue)]), 3, 0.05)
    weight = torch.eye(crops[0].shape[1]).requires_grad_(True)  # the scores' "network"
    mine = [c[rows] @ weight for c in crops]
    codes = [sinkhorn_codes(c.detach(), 3, 0.05) for c in mine[:2]]
    loss = swav_loss(mine, codes, 0.1)
    loss.backward()
    return {"codes": sinkhorn_codes(scores[rows], 3, 0.05), "share": local_share(queue),
            "with_queue": with_queue[: len(scores) // world], "loss": loss.detach(),
            "grad": average_gradients([weight])[0]}


def test_two_processes_equal_one_on_the_global_batch() -> None:
    scores = cosine_scores(6, n=8, k=5)
    g = torch.Generator().manual_seed(7)
    crops = [torch.randn(8, 5, generator=g) for _ in range(3)]
    queue = cosine_scores(8, n=12, k=5)  # the scores of 12 queued projections
    results = run_processes(_two_processes, scores, crops, queue)

    # the codes: the sums over the batch are over both processes' rows
    torch.testing.assert_close(torch.cat([r["codes"] for r in results]),
                               sinkhorn_codes(scores, 3, 0.05))
    # ... and differ from those of each half alone: the all-reduce matters
    assert not torch.allclose(results[0]["codes"], sinkhorn_codes(scores[:4], 3, 0.05), atol=1e-3)
    # with the queue: the processes' shares are the queue once, the batch's codes those of one
    # process on the global batch and the whole queue
    torch.testing.assert_close(torch.cat([r["share"] for r in results]), queue)
    with_queue = sinkhorn_codes(torch.cat([scores, queue]), 3, 0.05)[:8]
    torch.testing.assert_close(torch.cat([r["with_queue"] for r in results]), with_queue)
    assert not torch.allclose(with_queue, sinkhorn_codes(scores, 3, 0.05), atol=1e-3)

    weight = torch.eye(5).requires_grad_(True)
    single = [c @ weight for c in crops]
    loss = swav_loss(single, [sinkhorn_codes(c.detach(), 3, 0.05) for c in single[:2]], 0.1)
    loss.backward()
    # DDP averages the processes' losses' gradients: the mean of the losses is the global one
    torch.testing.assert_close(sum(r["loss"] for r in results) / 2, loss.detach())
    for r in results:
        torch.testing.assert_close(r["grad"], weight.grad)
