"""On the CPU, what tests/methods/test_no_host_sync.py checks on a GPU, for every method: its
training steps, through a real Trainer with views made by the gpu pipeline, make no call that
would read a result back from a GPU (tests/host_sync.py says which calls those are). One such
read per step makes the host wait for the device to finish before it can queue the next step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from solo.losses import nt_xent_loss, redundancy_loss
from solo.methods import METHODS
from solo.pretrain import pretrain
from tests.helpers import shipped_config
from tests.host_sync import HostReads, HostReadWindow
from tests.methods.test_methods import fit, recipe

FIRST, LAST = 1, 2  # step 0 may read back: SimCLR's, SupCon's and W-MSE's checks of their input
# views made by the gpu pipeline, the kNN bank filled from the training batches; the ImageNet
# stem (a sixteenth of the CIFAR stem's compute on 32 px images) runs the same code
ON_DEVICE = ["++data.pipeline=gpu", "++data.fraction=0.05", "++backbone.cifar_stem=False",
             "++knn_eval.enabled=True", "++knn_eval.bank_from_training=True",
             "++log_every_n_steps=1000"]
# code that the shipped recipes reach only after their first epochs
LATER_EPOCHS = {
    "swav-queue": ("swav", ["++method_kwargs.epoch_queue_starts=0",
                            "++method_kwargs.freeze_prototypes_epochs=0"]),
    "twist-self-labelling": ("twist", ["++method_kwargs.self_label_epoch=0"]),
    "dino-last-layer-clipped": ("dino", ["++method_kwargs.freeze_last_layer=0",
                                         "++method_kwargs.clip_grad=3.0"]),
}
CASES = {**{name: (name, []) for name in METHODS.names()}, **LATER_EPOCHS,
         # JPEG files streamed and decoded on the device, not kept there decoded
         "byol-streamed": ("byol", ["++data.resident_max_gb=0"])}


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_steps_read_nothing_back_from_the_device(case: str, cifar_mini: Path) -> None:
    method, extra = CASES[case]
    cfg = recipe(method, cifar_mini, ON_DEVICE + extra)
    window = HostReadWindow(FIRST, LAST)
    fit(cfg, max_epochs=1, batches=LAST + 2, callbacks=[window])
    window.assert_read_nothing()


def test_pretrain_reads_nothing_back_per_step(cifar_mini: Path, tmp_path: Path) -> None:
    # what pretrain() adds around the steps: its progress bar, checkpointer (signals, every
    # n steps), per-step seeds and CSV logger
    cfg = shipped_config("byol", cifar_mini, ON_DEVICE + [
        "++checkpoint.enabled=True", f"++checkpoint.dir={tmp_path}",
        "++checkpoint.every_n_steps=100", "++max_epochs=1", f"++limit_train_batches={LAST + 2}",
        "++limit_val_batches=1", "++enable_progress_bar=True"])
    window = HostReadWindow(FIRST, LAST)
    pretrain(cfg, callbacks=[window])
    window.assert_read_nothing()


def test_the_recorder_finds_reads_and_passes_over_device_work() -> None:
    torch.manual_seed(0)
    z, indexes = torch.randn(8, 4, requires_grad=True), torch.arange(4).repeat(2)
    with HostReads() as checked:
        nt_xent_loss(z, indexes, check_positives=True)  # .tolist() of a boolean selection
    assert [read.what for read in checked.found] == ["aten.index", "tolist()"]
    assert all("solo/losses/simclr.py" in read.where for read in checked.found)
    with HostReads() as unchecked:  # a loss, its backward and an optimizer step: no reads
        loss = nt_xent_loss(z, indexes, check_positives=False)
        loss = loss + redundancy_loss(z[:4], z[4:], z[4:], z[:4])
        loss.backward()
        torch.optim.Adam([z]).step()
    assert unchecked.found == []
    mask = z[:, 0] > 0
    with HostReads(watched=("/tests/",)) as reads:  # this file's own calls
        z[mask].sum()
        bool(mask.any())
        z.detach().tolist()
        torch.tensor([1.0], device=z.device)
    assert [read.what for read in reads.found] == [
        "aten.index", "aten._local_scalar_dense", "tolist()", "tensor()"], reads.found
