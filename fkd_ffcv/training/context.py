"""What a training mode may read of a run: `RunContext`, built whole when the trainer is made
(before any mode method runs), so that no fact depends on which step of the set-up ran first.

It holds the process's device and place among the processes, the precision, the loader
threads, the pass plan, the opened betons and their classes, and the options. What exists only
later (the student, its weight average, its input normalisation) is handed to a mode method
as an argument where the method needs it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from fkd_ffcv.devices import autocast_dtype, local_device, resolve_backend, resolve_precision
from fkd_ffcv.errors import DataError, TrainingError


@dataclass(frozen=True)
class Process:
    """This process among the run's (torchrun's environment; one process without it)."""
    device: torch.device
    rank: int
    world_size: int
    threads: int  # CPU threads of this process's torch
    workers: int  # every loader's threads


def join_processes(opts: dict) -> Process:
    """This process's device (its local rank's GPU, else the CPU) and threads; joins the
    process group when there are several processes."""
    rank = int(os.environ.get('RANK', 0))
    world_size = int(os.environ.get('WORLD_SIZE', 1))
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    local_world = int(os.environ.get('LOCAL_WORLD_SIZE', 1))
    device = local_device(local_rank)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    # Importing ffcv sets torch to one thread and every loader pass sets it to the loader's
    # thread count; the CPU model wants this many (re-applied every pass: `cpu_threads`).
    threads = max(1, len(os.sched_getaffinity(0)) // local_world)
    workers = opts['data']['num_workers']
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(resolve_backend(opts['dist']['backend'], device, local_world))
    return Process(device, rank, world_size, threads, workers if workers > 0 else threads)


def parallel(module: torch.nn.Module, device: torch.device, world_size: int) -> torch.nn.Module:
    """`module` as it trains: under DDP when there are several processes (the student, a
    mode's discriminator), its gradients averaged over them."""
    if world_size == 1:
        return module
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == 'cuda' else None)


def open_data(opts: dict, training: bool, probes: bool) -> tuple:
    """(training beton or None, validation beton, classes). In training both betons must
    share one class list, of --model.num_classes classes when given; an evaluation reads the
    training beton only in a mode that probes (its k-NN and linear probe train on it)."""
    from fkd_ffcv.data.beton import Beton
    data = opts['data']
    val = Beton(data['val_dataset'])
    train = Beton(data['train_dataset']) if training or probes else None
    classes = val.classes
    if not training:
        return train, val, classes
    if train.classes != classes:
        raise DataError(f"{data['val_dataset']} has {len(classes)} classes, "
                        f"{data['train_dataset']} {len(train.classes)} (or they are named "
                        f"differently); both must share one list")
    wanted = opts['model']['num_classes']
    if wanted and wanted != len(classes):
        raise TrainingError(f"--model.num_classes={wanted} but {data['train_dataset']} has "
                            f"{len(classes)} classes")
    return train, val, classes


@dataclass(frozen=True)
class RunContext:
    """The facts of a run a mode reads (module docstring)."""
    opts: dict
    process: Process
    precision: str  # resolved: fp32, bf16 or fp16
    plan: tuple  # crops per image of each pass
    train_beton: Optional[object]  # a data.beton.Beton; None in an evaluation without one
    val_beton: object
    classes: list

    @classmethod
    def build(cls, opts: dict, plan, probes: bool) -> 'RunContext':
        """The context of a run of `opts` (checked) whose mode probes or not."""
        process = join_processes(opts)
        precision = resolve_precision(opts['training']['precision'], process.device)
        return cls(opts, process, precision, tuple(plan), *open_data(
            opts, training=not opts['training']['eval_only'], probes=probes))

    @property
    def device(self) -> torch.device:
        return self.process.device

    @property
    def rank(self) -> int:
        return self.process.rank

    @property
    def world_size(self) -> int:
        return self.process.world_size

    @property
    def is_main(self) -> bool:
        return self.process.rank == 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def progress(self) -> bool:
        """Whether this process shows progress bars."""
        return self.is_main and self.opts['logging']['progress']

    @property
    def autocast(self) -> dict:
        """torch.autocast's keywords for the run's precision."""
        dtype = autocast_dtype(self.precision)
        return dict(device_type=self.device.type, dtype=dtype or torch.float32,
                    enabled=dtype is not None)

    def parallel(self, module: torch.nn.Module) -> torch.nn.Module:
        return parallel(module, self.device, self.world_size)

    def cpu_threads(self, batches):
        """`batches`, with torch set to this process's threads once the first has come (an
        FFCV loader sets its own thread count when it starts)."""
        for i, batch in enumerate(batches):
            if i == 0 and self.device.type == 'cpu':
                torch.set_num_threads(self.process.threads)
            yield batch


class Normalisation:
    """uint8-range float images -> the model's input: minus the mean, over the deviation (RGB
    in [0, 1] scaled to 255), channels-last."""

    def __init__(self, mean, std, device):
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
