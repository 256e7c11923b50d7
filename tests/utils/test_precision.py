"""performance.tf32 never reaches the losses' and kNN's float32 matmuls: they run in IEEE float32."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch

from solo.losses import moco_loss, nt_xent_loss
from solo.nn.knn import prepare_bank, similarity
from solo.utils.precision import full_float32, set_tf32

MATMULS = {torch.matmul, torch.mm, torch.bmm, torch.Tensor.__matmul__, torch.Tensor.matmul,
           torch.Tensor.mm, torch.einsum}


class RecordsMatmulPrecision(torch.Tensor):
    """A tensor that notes the float32 matmul precision in force at every matmul it takes part in."""

    seen: list[str] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in MATMULS:
            cls.seen.append(torch.get_float32_matmul_precision())
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.fixture
def tf32_on() -> Iterator[None]:
    previous = torch.get_float32_matmul_precision()
    set_tf32(True)
    RecordsMatmulPrecision.seen = []
    yield
    torch.set_float32_matmul_precision(previous)


def recording(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape))).as_subclass(
        RecordsMatmulPrecision)


def test_losses_and_knn_matmuls_ignore_tf32(tf32_on: None) -> None:
    assert torch.get_float32_matmul_precision() == "high"  # TF32 allowed for everything else
    nt_xent_loss(recording(8, 16), torch.arange(4).repeat(2), 0.2)
    moco_loss(recording(4, 16), recording(4, 16), recording(16, 32), 0.2)
    similarity(recording(5, 16), prepare_bank(recording(9, 16), "cosine"), "cosine")
    assert len(RecordsMatmulPrecision.seen) >= 3
    assert set(RecordsMatmulPrecision.seen) == {"highest"}
    assert torch.get_float32_matmul_precision() == "high"  # restored afterwards


def test_full_float32_restores_the_setting_even_after_an_error(tf32_on: None) -> None:
    with pytest.raises(RuntimeError):
        with full_float32("cpu"):
            assert torch.get_float32_matmul_precision() == "highest"
            raise RuntimeError("inside")
    assert torch.get_float32_matmul_precision() == "high"
    set_tf32(False)
    assert torch.get_float32_matmul_precision() == "highest"
    assert not torch.backends.cudnn.allow_tf32
    set_tf32(True)
    assert torch.backends.cudnn.allow_tf32


def test_losses_and_knn_stay_float32_under_autocast() -> None:
    """Mixed precision must not run the float32 the losses promise in bfloat16: autocast lowers
    matmuls whatever their inputs' dtype (SimCLR's loss was 0.01 off under bf16 autocast)."""
    g = torch.Generator().manual_seed(0)
    z, indexes = torch.randn(64, 128, generator=g), torch.arange(32).repeat(2)
    q, k = torch.randn(16, 64, generator=g), torch.randn(16, 64, generator=g)
    queue = torch.nn.functional.normalize(torch.randn(64, 512, generator=g), dim=0)

    def compute() -> list[torch.Tensor]:
        return [nt_xent_loss(z, indexes, 0.1), moco_loss(q, k, queue, 0.2),
                similarity(q, prepare_bank(k, "cosine"), "cosine"),
                similarity(q, prepare_bank(k, "euclidean"), "euclidean")]

    reference = compute()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = compute()
    for expected, value in zip(reference, mixed):
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)


def test_bf16_support_is_read_without_initializing_cuda_for_forking_strategies() -> None:
    from solo.utils.precision import gpu_supports_bf16, starts_by_fork

    assert starts_by_fork("ddp_fork") and starts_by_fork("ddp_notebook")
    assert not starts_by_fork("ddp") and not starts_by_fork("auto")
    initialized = torch.cuda.is_initialized()
    gpu_supports_bf16("ddp_fork")
    assert torch.cuda.is_initialized() == initialized  # a forked DDP could still start


def test_compiled_runs_validate_outside_inference_mode(cifar_mini) -> None:
    from solo.pretrain import trainer_kwargs
    from tests.helpers import shipped_config

    assert "inference_mode" not in trainer_kwargs(shipped_config("byol", cifar_mini))
    compiled = shipped_config("byol", cifar_mini, ["++performance.compile=True"])
    assert trainer_kwargs(compiled)["inference_mode"] is False
