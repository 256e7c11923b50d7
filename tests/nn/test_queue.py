"""FeatureQueue: a ring buffer of keys under solo-learn's buffer names, written from every process."""

from __future__ import annotations

import torch
from torch import nn

from solo.nn import FeatureQueue
from tests.multiprocess import run_processes


def test_push_writes_at_the_pointer_and_wraps() -> None:
    owner = nn.Module()
    queue = FeatureQueue(owner, size=6, dim=2, labels=True)
    assert set(owner.state_dict()) == {"queue", "queue_y", "queue_ptr"}
    assert queue.labels.tolist() == [-1] * 6
    first, second = torch.arange(8.0).view(4, 2), -torch.arange(8.0).view(4, 2)
    queue.push(first, torch.tensor([0, 1, 2, 3]))
    queue.push(second, torch.tensor([4, 5, 6, 7]))
    # slots 0-3 got the first batch, 4-5 then 0-1 the second: the oldest keys are overwritten
    assert torch.equal(queue.keys, torch.cat([second[2:], first[2:], second[:2]]))
    assert queue.labels.tolist() == [6, 7, 2, 3, 4, 5]
    assert queue.pointer.tolist() == [2]


def test_copies_in_the_transposed_layout_of_moco() -> None:
    owner = nn.Module()
    queue = FeatureQueue(owner, size=4, dim=3, copies=2, keys_last=True)
    assert owner.queue.shape == (2, 3, 4)  # solo-learn's (views, D, K)
    assert torch.allclose(owner.queue.norm(dim=1), torch.ones(2, 4))  # unit keys at the start
    keys = torch.randn(2, 2, 3)  # (copies, B, D)
    queue.push(keys)
    assert torch.equal(owner.queue[:, :, :2], keys.transpose(1, 2))
    assert torch.equal(queue.rows()[:, :2], keys)


def test_a_checkpoint_restores_keys_and_pointer() -> None:
    source, target = nn.Module(), nn.Module()
    FeatureQueue(source, size=4, dim=2, labels=True).push(torch.ones(2, 2), torch.tensor([3, 4]))
    restored = FeatureQueue(target, size=4, dim=2, labels=True)
    target.load_state_dict(source.state_dict())
    assert torch.equal(restored.keys, source.queue) and restored.pointer.tolist() == [2]
    assert restored.labels.tolist()[:2] == [3, 4]


def _push_on(rank: int, world: int) -> dict:
    torch.manual_seed(0)
    owner = nn.Module()
    queue = FeatureQueue(owner, size=8, dim=2, labels=True)
    keys = torch.arange(8.0).view(4, 2) + 10 * rank  # each process's own 4 keys
    queue.push(keys, torch.arange(4) + 4 * rank)
    return owner.state_dict()


def test_two_processes_write_the_same_queue_as_one_with_both_batches() -> None:
    results = run_processes(_push_on)
    torch.manual_seed(0)
    owner = nn.Module()
    queue = FeatureQueue(owner, size=8, dim=2, labels=True)
    both = torch.cat([torch.arange(8.0).view(4, 2), torch.arange(8.0).view(4, 2) + 10])
    queue.push(both, torch.arange(8))
    for state in results:  # rank order, and every process holds the whole queue
        for key, value in owner.state_dict().items():
            assert torch.equal(state[key], value), key


def test_dataset_indexes_and_the_label_accuracy_of_neighbours() -> None:
    owner = nn.Module()
    queue = FeatureQueue(owner, size=4, dim=2, labels=True, indexes=True)
    assert set(owner.state_dict()) == {"queue", "queue_y", "queue_index", "queue_ptr"}
    queue.push(torch.ones(2, 2), torch.tensor([5, 6]), torch.tensor([100, 101]))
    assert queue.indexes.tolist() == [100, 101, -1, -1]
    # slot 0 holds label 5, slot 1 label 6: one of the two neighbours shares its image's label
    accuracy = queue.label_accuracy(torch.tensor([0, 1]), torch.tensor([5, 7]))
    assert accuracy == 0.5
