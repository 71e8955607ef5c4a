"""The line under every measured table (the demo's report, benchmarks/): where it was measured
and in which precision. Top-1 values repeat exactly only on one machine: the CPU model decides
the float kernels, and whether torch computes bf16 on the CPU decides what
`training.precision=auto` picks there (bf16 or fp32)."""
from __future__ import annotations

import os
import platform

import torch

from fkd_ffcv import devices


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it ('AMD EPYC', 'Intel(R) Xeon(R) ...')."""
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def machine() -> str:
    """Where a table was measured: the GPU (with CUDA), the CPU model, the cores this process
    may use, and whether torch computes bf16 on this CPU (precision auto = bf16 there)."""
    bf16 = 'yes' if devices.cpu_has_bf16() else 'no'
    text = f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores, bf16 on this CPU: {bf16}"
    if torch.cuda.is_available():
        text = f"{torch.cuda.get_device_name()}; {text}"
    return text


def precision_of(summaries) -> str:
    """The precision the runs trained in ('bf16', 'fp32', or several joined by '/')."""
    found = sorted({s.get('precision', 'not recorded') for s in summaries})
    return '/'.join(found)
