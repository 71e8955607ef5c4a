"""The one-call GPU check (run by tools/gpu_check.sh): the project's CUDA path end to end, in
steps of fixed order, each in its own process under its own time cap, each result printed and
written under --out as soon as it is known (a run cut short still leaves what it measured).

    python tools/gpu_check.py --out DIR [--budget SECONDS] [--dry-run]

Steps:
  data      write a small ImageNet-shaped beton (synthetic photos) and label it with a teacher
            on the device, in fp32 (records precision and device in the manifest)
  train     plain, online KD (a timm teacher, random weights from a file), FKD (ResNet with
            torch.compile, progressive resizing: a static graph per side), FKD with a timm
            ViT student, self-supervised FKD stored and online (the probes on the device),
            about 50 steps each, auto precision (bf16 on the GPU),
            channels-last; timm is imported with huggingface_hub unimportable, as on a GPU
            machine without it (and, where a bundle was built, from the bundle)
  resume    an FKD run killed after its first checkpoint, resumed from the command line, then
            evaluated with --eval-only on its final_weights.pt, which must load in a process
            that sees no GPU
  torchrun  two processes under torchrun on the one GPU (the backend falls back to gloo)
  timing    the timing table (benchmarks/timing_table.py, ResNet-50) on the step's data, only if
            more than 2 minutes are left, rows skipped that would not fit

The budget counts from FKD_GPU_CHECK_STARTED (set by gpu_check.sh before it prepares the
machine), so preparation is inside it; on a GPU a step gets at most its cap and what is left of
the budget. Without CUDA (or with --dry-run) the same steps run at CPU sizes (tiny images, a
small model; about 100 s here): .ci/run runs it so that the script is known to work. There the
caps only catch hangs and the budget (200 s) only decides the timing step, which needs the same
2 minutes left as on a GPU (pass --budget 300 to run it).
Files under --out: gpu_check.md (a table, a row per step), gpu_check.log (everything printed),
timing_gpu.md/.json/.png (timing table).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = ('data', 'train', 'resume', 'torchrun', 'timing')
TIMING_NEEDS = 120  # seconds left for the timing step to start
SIZES = {
    # 2,048 training images: FKD's 2 passes of 32 steps (K = 4, 256 crops per step); plain and
    # online KD 6 epochs of 8 steps. ResNet-18 keeps torch.compile's two graphs (one per side)
    # short; the timing table measures ResNet-50. The budget (8 minutes, preparation included)
    # and the caps end well within 10 minutes.
    'gpu': dict(train=2048, val=512, side=500, records=8, arch={'model.arch': 'resnet18'},
                timm_student={'model.arch': 'timm:deit_tiny_patch16_224',
                              'resolution.round_to': 16}, timm_teacher='resnet50.a1_in1k',
                batch=256, k=4, min_res=160, max_res=192, val_res=224, val_ratio=224 / 256,
                plain_epochs=6, budget=480,
                caps={'data': 75, 'train': 270, 'resume': 100, 'torchrun': 80}),
    # CPU: about 100 s on 2 cores. The budget only decides the timing step (which it leaves
    # out); the caps only catch hangs. One side: inductor's C++ backend crashes on some CPU
    # backward graphs at other sides (docs/gpu.md).
    'cpu': dict(train=256, val=64, side=96, records=4,
                arch={'model.arch': 'small_resnet', 'model.width': 8, 'model.depth': 1},
                timm_student={'model.arch': 'timm:test_vit', 'model.patch_size': 4},
                timm_teacher='test_resnet',
                batch=32, k=2, min_res=32, max_res=32, val_res=32, val_ratio=1.0,
                plain_epochs=2, budget=200,
                caps={'data': 75, 'train': 140, 'resume': 90, 'torchrun': 70}),
}


# ------------------------------------------------------------------------------------ driver

class Report:
    """gpu_check.md and gpu_check.log under --out, rewritten as results come in."""

    def __init__(self, out: Path, header: str):
        self.out, self.rows = out, []
        out.mkdir(parents=True, exist_ok=True)
        self.header = header
        self.log = open(out / 'gpu_check.log', 'a', buffering=1)
        self.write()

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + '\n')

    def add(self, step: str, status: str, seconds: float, details: str) -> None:
        self.rows.append(f"| {step} | {status} | {seconds:.0f} | {details} |")
        self.say(f"== {step}: {status} in {seconds:.0f} s: {details}")
        self.write()

    def write(self) -> None:
        text = '\n'.join([self.header, '', '| step | result | seconds | details |',
                          '|---|---|---|---|', *self.rows]) + '\n'
        (self.out / 'gpu_check.md').write_text(text)


def run_step(step: str, args, report: Report, cap: float) -> None:
    """One step in its own process group, killed at `cap` seconds; its output is echoed and
    logged line by line, its last `RESULT {...}` line is the row's details."""
    started = time.monotonic()
    command = [sys.executable, __file__, '--step', step, '--out', str(args.out),
               '--work', str(args.work)] + (['--dry-run'] if args.dry_run else []) + \
              ['--time-left', str(int(cap))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1, start_new_session=True, cwd=REPO)
    result, timer = None, None

    def kill():
        os.killpg(process.pid, signal.SIGKILL)

    import threading
    timer = threading.Timer(cap, kill)
    timer.start()
    try:
        for line in process.stdout:
            line = line.rstrip('\n')
            if line.startswith('RESULT '):
                result = json.loads(line[len('RESULT '):])
            report.say(f"  [{step}] {line}")
    finally:
        timer.cancel()
    code = process.wait()
    seconds = time.monotonic() - started
    if code == 0 and result is not None:
        report.add(step, 'ok', seconds, result.get('details', ''))
    elif code == -signal.SIGKILL and seconds >= cap - 1:
        report.add(step, f'TIMED OUT (cap {cap:.0f} s)', seconds,
                   (result or {}).get('details', 'no result'))
    else:
        report.add(step, f'FAILED (exit {code})', seconds,
                   (result or {}).get('details', 'see gpu_check.log'))


def drive(args) -> int:
    import platform
    cuda = _cuda_available()
    args.dry_run = args.dry_run or not cuda
    sizes = SIZES['cpu' if args.dry_run else 'gpu']
    budget = args.budget or sizes['budget']
    # time.time, not monotonic: the clock started in gpu_check.sh, before the preparation
    started = float(os.environ.get('FKD_GPU_CHECK_STARTED') or time.time())
    for stale in ('gpu_check.md', 'timing_gpu.md', 'timing_gpu.json', 'timing_gpu.png'):
        (args.out / stale).unlink(missing_ok=True)  # a reused folder shows only this run
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    header = (f"# GPU check {time.strftime('%Y-%m-%d %H:%M')} "
              f"({'CPU dry run' if args.dry_run else 'CUDA'}), budget {budget:.0f} s; "
              f"{_machine()}; Python {platform.python_version()}")
    report = Report(args.out, header)
    report.say(header)
    failed = False
    for step in STEPS:
        left = budget - (time.time() - started)
        if step == 'timing':
            if left < TIMING_NEEDS:
                report.add(step, 'skipped', 0, f"{left:.0f} s left, it needs {TIMING_NEEDS}")
                continue
            cap = left
        elif args.dry_run:  # no command limit to fit: caps only catch hangs
            cap = sizes['caps'][step]
        else:
            cap = min(sizes['caps'][step], left)
        if cap < 5:
            report.add(step, 'skipped', 0, f"budget spent ({left:.0f} s left)")
            failed = True
            continue
        run_step(step, args, report, cap)
        failed |= not report.rows[-1].split('|')[2].strip().startswith('ok')
    report.say(f"gpu check done in {time.time() - started:.0f} s; table: "
               f"{args.out / 'gpu_check.md'}")
    return 1 if failed else 0


def _cuda_available() -> bool:
    code = 'import torch; print(torch.cuda.is_available())'
    found = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    return found.stdout.strip() == 'True'


def _machine() -> str:
    cores = len(os.sched_getaffinity(0))
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                if line.startswith('model name')), 'unknown CPU')
    gpu = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total',
                          '--format=csv,noheader'], capture_output=True, text=True) \
        if shutil.which('nvidia-smi') else None
    return (f"{gpu.stdout.strip()}; " if gpu and gpu.returncode == 0 else '') + \
        f"{cpu}, {cores} cores"


# ------------------------------------------------------------------------------------ steps

def done(details: str, **values) -> None:
    print('RESULT ' + json.dumps({'details': details, **values}), flush=True)


def sizes_of(args) -> dict:
    return SIZES['cpu' if args.dry_run else 'gpu']


def data_paths(args) -> dict:
    folder = args.work / 'data'  # the names benchmarks/timing_table.py looks for
    return {'train': folder / 'train.beton', 'val': folder / 'val.beton',
            'labelled': folder / 'train_fkd.beton', 'embedded': folder / 'train_ssl.beton',
            'teacher': folder / 'teacher.pt',
            'folder': folder}


def teacher_spec(args) -> str:
    return (f"checkpoint:{data_paths(args)['teacher']}" if args.dry_run
            else 'torchvision:resnet50')  # random weights: speed and plumbing, not accuracy


def step_data(args) -> None:
    import torch
    from fkd_ffcv.data.beton import Beton
    from fkd_ffcv.data.fields import image_fields
    from fkd_ffcv.labeling.label import LabelingSettings, label_beton
    from fkd_ffcv.defaults import IMAGENET_MEAN, IMAGENET_STD
    from fkd_ffcv.models.exports import save_weights
    from fkd_ffcv.models.students import build_model
    from fkd_ffcv.data.sources import SyntheticPhotoSource
    from fkd_ffcv.labeling.teachers import Teacher
    from fkd_ffcv.data.manifest import Manifest
    from fkd_ffcv.data.writer import write_beton
    s, paths = sizes_of(args), data_paths(args)
    paths['folder'].mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for split, n, seed in (('train', s['train'], 0), ('val', s['val'], 1)):
        source = SyntheticPhotoSource(n, seed=seed, side=s['side'])
        write_beton(paths[split], image_fields('jpg', max_resolution=500), source,
                    manifest=Manifest(classes=source.classes), progress=False)
    write_seconds = time.perf_counter() - t0
    if args.dry_run:  # a small teacher that knows the data's 1000 classes
        torch.manual_seed(0)
        arch = {'arch': 'small_resnet', 'width': 8, 'depth': 1}
        save_weights(paths['teacher'], build_model(num_classes=1000, **arch), arch,
                     SyntheticPhotoSource(1).classes,
                     {'input_size': 32, 'interpolation': 'antialias',
                      'mean': list(IMAGENET_MEAN), 'std': list(IMAGENET_STD)})
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    t0 = time.perf_counter()
    teacher = Teacher(teacher_spec(args), device=device)  # fp32, as labelling must be
    label_beton(paths['train'], paths['labelled'], teacher,
                LabelingSettings(num_records=s['records'], label_type='marginal_smoothing_k5'),
                paths['folder'] / 'labelling', progress=False)
    label_seconds = time.perf_counter() - t0
    info = Beton(paths['labelled']).manifest.soft_labels.teacher
    assert (info['precision'], info['device']) == ('fp32', torch.device(device).type), info
    # the same teacher's pooled features as embeddings, for the ssl run
    label_beton(paths['train'], paths['embedded'],
                Teacher(teacher_spec(args), device=device, embedding='features'),
                LabelingSettings(num_records=s['records'], label_type=''),
                paths['folder'] / 'embedding', progress=False)
    crops = s['train'] * s['records']
    done(f"{s['train']} + {s['val']} images written in {write_seconds:.0f} s; {crops} crops "
         f"labelled by {teacher_spec(args).split(':')[0]} on {device} in fp32 in "
         f"{label_seconds:.0f} s ({crops / label_seconds:,.0f} crops/s)")


def run_options(args, mode: str, folder: Path, **extra) -> dict:
    """The options of a check run, as {'section.key': value}."""
    s, paths = sizes_of(args), data_paths(args)
    records = {'fkd': paths['labelled'], 'ssl': paths['embedded']}.get(mode)
    k = s['k'] if records else 1
    return {'data.train_dataset': str(records or paths['train']),
            'data.val_dataset': str(paths['val']), **s['arch'], 'training.mode': mode,
            'fkd.num_crops': k, 'training.epochs': 2 * k if records else
            s['plain_epochs'], 'training.batch_size': s['batch'],
            'training.precision': 'auto', 'lr.lr': 0.1, 'lr.peak_epoch': 1.0,
            'resolution.min_res': s['min_res'], 'resolution.max_res': s['max_res'],
            'resolution.start_ramp': 0.0, 'resolution.end_ramp': float(k),
            'validation.resolution': s['val_res'], 'validation.ratio': s['val_ratio'],
            'validation.every_passes': 1, 'logging.folder': str(folder),
            'logging.progress': False, **extra}


def summary_line(summary: dict, history: list) -> str:
    losses = [line['loss'] for line in history]
    sides = sorted({line['resolution'] for line in history})
    return (f"{summary['mode']} {summary['arch']}: {len(history)} epochs at "
            f"{'/'.join(map(str, sides))} px, loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
            f"{summary['crops_per_s']:,.0f} crops/s, {summary['data_wait']:.0%} waiting, "
            f"{summary['precision']} on {summary['device']}")


def timm_teacher(args) -> str:
    """A timm teacher spec with random weights saved to a file (timm never downloads here)."""
    import timm
    import torch
    name, path = sizes_of(args)['timm_teacher'], args.work / 'timm_teacher.pth'
    torch.manual_seed(0)
    torch.save(timm.create_model(name, pretrained=False).state_dict(), path)
    return f'timm:{name}:{path}'


def step_train(args) -> None:
    import math
    from fkd_ffcv.training.options import options
    from fkd_ffcv.training.loop import Trainer
    lines = []
    s = sizes_of(args)
    import timm
    lines.append(f"timm {timm.__version__} from {Path(timm.__file__).parent.parent}, "
                 f"huggingface_hub not importable")
    # in order of importance: a time-out keeps the runs before it
    for name, mode, extra in (('plain', 'plain', {}),
                              ('online_kd', 'online_kd', {'fkd.teacher': timm_teacher(args)}),
                              ('fkd', 'fkd', {'training.compile': True}),
                              ('fkd_timm', 'fkd', {**s['timm_student'], 'lr.lr': 1e-3,
                                                   'training.optimizer': 'adamw'}),
                              # self-supervised: stored embeddings (int8 records to the GPU),
                              # the teacher online, the probes on the GPU
                              ('ssl', 'ssl', {'ssl.probe_epochs': 10,
                                              'training.optimizer': 'adamw', 'lr.lr': 1e-3}),
                              ('online_ssl', 'online_ssl', {
                                  'fkd.teacher': teacher_spec(args), 'ssl.probe_epochs': 10,
                                  'training.optimizer': 'adamw', 'lr.lr': 1e-3})):
        trainer = Trainer(options(run_options(args, mode, args.work / 'runs' / name, **extra)))
        t0 = time.perf_counter()
        summary = trainer.run()
        losses = [line['loss'] for line in trainer.history]
        assert all(math.isfinite(v) for v in losses), losses
        if not args.dry_run:
            assert summary['precision'] == 'bf16' and summary['device'].startswith('cuda')
        lines.append(f"{summary_line(summary, trainer.history)}, "
                     f"{sum(trainer.pass_steps)} steps in "
                     f"{time.perf_counter() - t0:.0f} s"
                     + (' (compiled)' if extra.get('training.compile') else ''))
        done('; '.join(lines))  # after each run: a time-out keeps the runs that finished


def cli(options: dict) -> list:
    return [sys.executable, str(REPO / 'train_imagenet.py')] + \
        [f'--{key}={value}' for key, value in options.items()]


def step_resume(args) -> None:
    folder = args.work / 'runs' / 'resume'
    options = run_options(args, 'fkd', folder, **{'training.epochs': 4 * sizes_of(args)['k']})
    command = cli(options)
    output = args.work / 'killed_run.log'
    with open(output, 'w') as sink:  # a file, not a pipe nobody reads until the kill
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        while not (folder / 'checkpoint.pt').exists():
            if process.poll() is not None:
                print(output.read_text()[-3000:])
                raise SystemExit(f"the run ended (exit {process.returncode}) before its first "
                                 f"checkpoint")
            time.sleep(0.05)
        process.kill()
        process.wait()
    log = [json.loads(line) for line in (folder / 'log.jsonl').read_text().splitlines()]
    killed_after = len(log)
    resumed = subprocess.run(command + ['--resume'], capture_output=True, text=True)
    print(resumed.stdout[-2000:], resumed.stderr[-2000:], flush=True)
    assert resumed.returncode == 0, 'the resumed run failed'
    log = [json.loads(line) for line in (folder / 'log.jsonl').read_text().splitlines()]
    epochs = [line['epoch'] for line in log]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) == options[
        'training.epochs'], epochs
    weights = folder / 'final_weights.pt'
    evaluated = subprocess.run(command + ['--eval-only', f'--training.checkpoint={weights}'],
                               capture_output=True, text=True)
    print(evaluated.stdout[-1000:], evaluated.stderr[-1000:], flush=True)
    assert evaluated.returncode == 0, 'eval-only failed'
    # final_weights.pt must load where no GPU is: plain torch.load, no map_location
    load = ("import torch; w = torch.load({!r}, weights_only=True); "
            "assert not torch.cuda.is_available(); "
            "devices = {{v.device.type for v in w['model'].values()}}; "
            "print('loaded without a GPU:', len(w['model']), 'tensors on', devices); "
            "assert devices == {{'cpu'}}").format(str(weights))
    loaded = subprocess.run([sys.executable, '-c', load], capture_output=True, text=True,
                            env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''})
    print(loaded.stdout, loaded.stderr[-1000:], flush=True)
    assert loaded.returncode == 0, 'final_weights.pt did not load without a GPU'
    top1_log = log[-1]['top1']
    top1_eval = float(evaluated.stdout.split('top-1 ')[1].split('%')[0]) / 100
    done(f"killed after {killed_after} logged epoch(s), resumed to epoch {epochs[-1]}; "
         f"top-1 in the log {top1_log:.2%}, by --eval-only {top1_eval:.2%}; "
         f"final_weights.pt loads with no GPU visible")


def step_torchrun(args) -> None:
    folder = args.work / 'runs' / 'torchrun'
    options = run_options(args, 'fkd', folder, **{'training.epochs': sizes_of(args)['k'],
                                                  'data.num_workers': 2})
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
               '--master_port=29561'] + cli(options)[1:]
    # torchrun starts its workers in sessions of their own, out of reach of the step's kill:
    # stop it with SIGTERM (it passes that on to them) before the step's cap.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    try:
        output, _ = process.communicate(timeout=max(5, args.time_left - 15))
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        print(output[-3000:], flush=True)
        raise SystemExit('torchrun did not finish in time; its workers were stopped')
    print(output[-3000:], flush=True)
    assert process.returncode == 0, 'torchrun failed'
    log = [json.loads(line) for line in (folder / 'log.jsonl').read_text().splitlines()]
    s = sizes_of(args)
    assert log[-1]['val_images'] == s['val'], log[-1]
    per_rank = s['batch'] // s['k']
    expected = 2 * (s['train'] // 2 // per_rank) * per_rank * s['k']
    crops = sum(line['crops'] for line in log)
    assert crops == expected, (crops, expected)
    done(f"2 ranks on one device: {crops} crops in {len(log)} epoch(s) (each image's crops "
         f"once over both ranks), {log[-1]['val_images']} validation images once")


def step_timing(args) -> None:
    s = sizes_of(args)
    command = [sys.executable, '-m', 'benchmarks.timing_table', '--preset', 'gpu',
               '--images', str(s['train']), '--batch', str(s['batch']),
               '--work', str(data_paths(args)['folder']), '--out', str(args.out),
               '--time-limit', str(max(10, args.time_left - 15))]
    if args.dry_run:  # CPU: a ResNet-50 at 32 px; the rows that fit
        command += ['--side', '32', '--rows', 'plain,fkd4']
    ran = subprocess.run(command, text=True, cwd=REPO)
    assert ran.returncode == 0, 'the timing table failed'
    measured = json.loads((args.out / 'timing_gpu.json').read_text())
    done('; '.join(f"{r['name']}: {r['seconds_per_epoch']:.2f} s/epoch" for r in measured)
         + f" ({args.out / 'timing_gpu.md'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, required=True, help='results folder')
    parser.add_argument('--budget', type=float, default=0, help='seconds, preparation included '
                        '(0: 480 on a GPU, 200 on a CPU)')
    parser.add_argument('--dry-run', action='store_true', help='CPU sizes, even with CUDA')
    parser.add_argument('--work', type=Path, default=Path('/tmp/fkd-gpu-check'),
                        help='scratch folder (emptied first)')
    parser.add_argument('--step', choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument('--time-left', type=float, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out = args.out.resolve()
    if args.step is None:
        return drive(args)
    sys.path.insert(0, str(REPO))
    # timm imports without huggingface_hub, as on a GPU machine that lacks it: make sure here
    # too (a dry run) that nothing of this project needs it.
    sys.modules['huggingface_hub'] = None
    globals()[f'step_{args.step}'](args)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
