"""Which device, precision and process-group backend a process uses, decided from what torch
reports, so that the CUDA branches run in CPU tests with those answers stubbed. (The line that
names the machine under a measured table: reporting.py.)"""
from __future__ import annotations

import torch

from fkd_ffcv.defaults import PRECISIONS


def __getattr__(name: str):
    """machine, cpu_model and precision_of, which moved to reporting.py (moved.RENAMED)."""
    from fkd_ffcv.moved import forward
    return forward('devices', name)


def local_device(local_rank: int = 0) -> torch.device:
    """GPU `local_rank` modulo the GPU count where CUDA is available, else the CPU. More ranks
    than GPUs (two processes on one GPU, to check a multi-process run) share them."""
    if torch.cuda.is_available():
        return torch.device('cuda', local_rank % torch.cuda.device_count())
    return torch.device('cpu')


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' is local_device(local_rank); anything else is taken as torch names it."""
    return local_device(local_rank) if name == 'auto' else torch.device(name)


def resolve_precision(requested: str, device: torch.device) -> str:
    """'auto': bf16 where the device computes it (Ampere and later; CPUs with bf16 support),
    fp16 on older GPUs (a V100), fp32 on other CPUs."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if requested != 'auto':
        return requested
    if device.type == 'cuda':
        with torch.cuda.device(device):  # the process's own GPU; emulated bf16 does not count
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        return 'bf16' if native else 'fp16'
    return 'bf16' if cpu_has_bf16() else 'fp32'


def native_precision(precision: str, device: torch.device) -> str:
    """`precision` where `device` computes it natively (resolve_precision's rule: bf16 where
    'auto' picks it, fp16 on any GPU), else fp32: emulated bf16 or fp16 on a CPU is slow and
    gives other numbers than the device it was recorded on."""
    native = {'fp32', resolve_precision('auto', device)} | (
        {'fp16'} if device.type == 'cuda' else set())
    return precision if precision in native else 'fp32'


def recorded_precision(requested: str, recorded: str, device: torch.device):
    """fkd-eval-teacher's and fkd-probe's precision, and the words that name it: `requested`
    unless 'auto'; then the precision the export recorded (`recorded`), or fp32 where
    `device` does not compute it natively, said so."""
    if requested != 'auto':
        return requested, requested
    precision = native_precision(recorded, device)
    if precision == recorded:
        return precision, precision
    return precision, (f"{precision}, not the run's {recorded}: this "
                       f"{'GPU' if device.type == 'cuda' else 'CPU'} does not compute "
                       f"{recorded} natively")


def cpu_has_bf16() -> bool:
    """Whether oneDNN computes bf16 natively on this CPU (AVX512-BF16, AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_dtype(precision: str):
    """The autocast dtype of a resolved precision, None for fp32."""
    return {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision)


def resolve_backend(requested: str, device: torch.device, local_world_size: int) -> str:
    """'auto': NCCL when each local rank has a GPU of its own, else gloo (NCCL refuses two
    ranks on one GPU; gloo also reduces CUDA tensors)."""
    if requested != 'auto':
        return requested
    if device.type != 'cuda':
        return 'gloo'
    return 'nccl' if local_world_size <= torch.cuda.device_count() else 'gloo'
