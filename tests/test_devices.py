"""Device, precision and backend choices, and the trainer's CUDA set-up, with torch.cuda
stubbed (fake_cuda.py)."""
import pytest
import torch

from fake_cuda import FakeCuda
from fkd_ffcv import devices
from fkd_ffcv.training.context import Process, RunContext, join_processes, parallel
from fkd_ffcv.training.modes import MODES
from fkd_ffcv.training.options import options
from fkd_ffcv.training.loop import Trainer


def test_ranks_map_onto_the_gpus_there_are(monkeypatch):
    fake = FakeCuda(monkeypatch, devices=1)
    assert devices.local_device(1) == torch.device('cuda', 0)  # two ranks share one GPU
    fake.devices = 4
    assert devices.local_device(6) == torch.device('cuda', 2)
    assert devices.resolve_device('auto', 5) == torch.device('cuda', 1)
    assert devices.resolve_device('cpu', 5) == torch.device('cpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert devices.local_device(3) == torch.device('cpu')


def test_auto_precision_asks_the_device(monkeypatch):
    fake = FakeCuda(monkeypatch, bf16=True)
    gpu = torch.device('cuda', 1)
    assert devices.resolve_precision('auto', gpu) == 'bf16'
    fake.bf16 = False  # a V100: torch says yes to bf16 there unless emulation is excluded
    assert devices.resolve_precision('auto', gpu) == 'fp16'
    asked = [c for c in fake.calls if c[2] == 'is_bf16_supported']
    assert [(c[1], c[3]) for c in asked] == [(1, False), (1, False)]  # that GPU, no emulation
    assert devices.resolve_precision('fp32', gpu) == 'fp32'
    for native, expected in ((True, 'bf16'), (False, 'fp32')):
        monkeypatch.setattr(devices, 'cpu_has_bf16', lambda: native)
        assert devices.resolve_precision('auto', torch.device('cpu')) == expected
    with pytest.raises(ValueError, match='precision must be one of'):
        devices.resolve_precision('fp8', gpu)


def test_a_recorded_precision_the_device_does_not_compute_becomes_fp32(monkeypatch):
    """fkd-eval-teacher / fkd-probe --precision auto: the export's precision where the device
    computes it natively, else fp32, said so; a precision asked for is kept."""
    cpu = torch.device('cpu')
    monkeypatch.setattr(devices, 'cpu_has_bf16', lambda: False)
    assert devices.recorded_precision('auto', 'bf16', cpu) == (
        'fp32', "fp32, not the run's bf16: this CPU does not compute bf16 natively")
    assert devices.recorded_precision('auto', 'fp16', cpu)[0] == 'fp32'
    assert devices.recorded_precision('bf16', 'fp32', cpu) == ('bf16', 'bf16')
    monkeypatch.setattr(devices, 'cpu_has_bf16', lambda: True)
    assert devices.recorded_precision('auto', 'bf16', cpu) == ('bf16', 'bf16')
    fake = FakeCuda(monkeypatch, bf16=False)  # a V100: fp16, not bf16
    gpu = torch.device('cuda', 0)
    assert [devices.native_precision(p, gpu) for p in ('bf16', 'fp16')] == ['fp32', 'fp16']
    fake.bf16 = True
    assert devices.native_precision('bf16', gpu) == 'bf16'


def test_auto_backend_is_gloo_where_ranks_share_a_gpu(monkeypatch):
    FakeCuda(monkeypatch, devices=2)
    gpu = torch.device('cuda', 0)
    assert devices.resolve_backend('auto', gpu, local_world_size=2) == 'nccl'
    assert devices.resolve_backend('auto', gpu, local_world_size=3) == 'gloo'
    assert devices.resolve_backend('auto', torch.device('cpu'), 1) == 'gloo'
    assert devices.resolve_backend('nccl', gpu, 3) == 'nccl'  # asked for: the user's call


def test_trainer_takes_its_rank_gpu_modulo_the_gpu_count(monkeypatch):
    fake = FakeCuda(monkeypatch, devices=1)
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)
    monkeypatch.setenv('LOCAL_RANK', '1')
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')
    process = join_processes(options())
    assert process.device == torch.device('cuda', 0)
    assert ('MainThread', 0, 'set_device', 0) in fake.calls
    assert torch.backends.cudnn.benchmark


def test_compiled_models_get_one_static_graph_per_input_side(monkeypatch):
    compiled = {}

    def fake_compile(model, **kwargs):
        compiled.update(kwargs)
        return model

    monkeypatch.setattr(torch, 'compile', fake_compile)
    trainer = Trainer.__new__(Trainer)
    trainer.opts = options({'model.arch': 'small_resnet', 'training.compile': True})
    trainer.ctx = RunContext(trainer.opts, Process(torch.device('cpu'), 0, 1, 1, 1), 'fp32',
                             (1,), None, None, [str(c) for c in range(10)])
    trainer.mode = MODES['fkd']()
    trainer.create_model()
    assert compiled == {'dynamic': False}  # progressive resizing: a graph per side


def test_ddp_wraps_the_student_and_a_discriminator_on_the_ranks_gpu(monkeypatch):
    """context.parallel: DDP on the rank's GPU (device_ids) on CUDA, without on the CPU, and
    nothing with one process. MEAL V2's discriminator goes through it (RunContext.parallel) as
    the student does."""
    wrapped = []

    class FakeDDP:
        def __init__(self, module, device_ids=None):
            wrapped.append((module, device_ids))

    monkeypatch.setattr(torch.nn.parallel, 'DistributedDataParallel', FakeDDP)
    module = torch.nn.Linear(2, 2)
    assert parallel(module, torch.device('cuda', 1), 1) is module and not wrapped
    assert isinstance(parallel(module, torch.device('cuda', 1), 2), FakeDDP)
    parallel(module, torch.device('cpu'), 2)
    assert wrapped == [(module, [1]), (module, None)]


def test_machine_line_names_the_cpu_and_its_bf16(monkeypatch):
    from fkd_ffcv import reporting  # the line under measured tables; it asks devices for bf16
    assert reporting.machine().startswith(f'{reporting.cpu_model()}, ')
    monkeypatch.setattr(devices, 'cpu_has_bf16', lambda: True)
    assert reporting.machine().endswith('bf16 on this CPU: yes')
    monkeypatch.setattr(devices, 'cpu_has_bf16', lambda: False)
    assert reporting.machine().endswith('bf16 on this CPU: no')
    assert reporting.precision_of([{'precision': 'bf16'}, {}]) == 'bf16/not recorded'
