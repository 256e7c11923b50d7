"""Every method with a queue of past embeddings restores it on resume: the keys, labels and
pointer a run saved are what the resumed run starts from, and its next step writes after them."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from solo.methods import METHODS
from tests.helpers import CIFAR_CONFIGS
from tests.methods.test_methods import fit, recipe

QUEUE_METHODS = [name for name in METHODS.names() if (CIFAR_CONFIGS / f"{name}.yaml").is_file()
                 and "queue_size" in METHODS.get(name).Config.__dataclass_fields__]


class QueueAtStart(pl.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.buffers = {q.name: q.keys.clone() for q in pl_module.queues}
        self.pointers = [int(q.pointer) for q in pl_module.queues]


@pytest.mark.parametrize("method", QUEUE_METHODS)
def test_resume_restores_the_queue(method: str, cifar_mini: Path, tmp_path: Path) -> None:
    cfg = recipe(method, cifar_mini)
    model, trainer = fit(cfg, max_epochs=1, batches=1)
    assert model.queues, f"{method} has a queue_size but registered no queue"
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]

    start = QueueAtStart()
    resumed, _ = fit(cfg, max_epochs=2, batches=1, callbacks=[start], ckpt_path=str(path))
    for queue in resumed.queues:
        assert torch.equal(start.buffers[queue.name], saved[queue.name]), queue.name
    written = cfg.optimizer.batch_size  # one step of one process
    for queue, pointer in zip(resumed.queues, start.pointers):
        assert pointer == int(saved[f"{queue.name}_ptr"]) != 0
        assert int(queue.pointer) == (pointer + written) % queue.size
