"""The README's "your own data" path, run as written on real photos: fine-tune a pretrained
teacher on your classes, label crops with it, train FKD and plain students; one table.

    .venv/bin/python -m benchmarks.own_data [--work build/own-data]

The photos: the endless-sky landscapes (Debian's endless-sky-data), four variants each (as is,
mirrored, enlarged, centre crop), one class per scene with at least 7 photos (20 classes), split
by photo: every 4th photo of a scene, with its four variants, is a validation image. Then the
five commands of the README, from the work folder, each timed. Steps whose output exists are
reused (delete the work folder to start again). About 25 minutes on 2 CPU cores.
"""
import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, make_photo_tree, versions
from fkd_ffcv.reporting import machine


def commands(python: str) -> list:
    """(name, command) of the README's path; the paths are relative to the work folder."""
    write, train = f'{python} {REPO}/write_dataset.py', f'{python} {REPO}/train_imagenet.py'
    # The write step is redone until its last output (the val split) exists: --overwrite, so
    # that a rerun after an interruption between the splits replaces the train split it left.
    data = '--data.train_dataset=data/photos_train.beton --data.val_dataset=data/photos_val.beton'
    fkd_data = ('--data.train_dataset=data/photos_train_fkd.beton '
                '--data.val_dataset=data/photos_val.beton')
    return [
        ('write the photos', f'{write} --data.source=folder --data.root=photos '
                             f'--data.out_dir=data --write.max_resolution=256 --overwrite'),
        ('fine-tune the teacher', f'{train} --config-file {REPO}/own_data_configs/teacher_'
                                  f'finetune.yaml {data} --logging.folder=runs/teacher'),
        ('label 8 crops per image', f'{write} --labels.beton=data/photos_train.beton '
                                    f'--labels.out=data/photos_train_fkd.beton '
                                    f'--labels.teacher=checkpoint:runs/teacher/final_weights.pt '
                                    f'--labels.num_records=8 --labels.scale_min=0.35 '
                                    f'--labels.scale_max=1'),
        ('FKD student', f'{train} --config-file {REPO}/own_data_configs/student_fkd.yaml '
                        f'{fkd_data} --logging.folder=runs/fkd'),
        ('plain student', f'{train} --config-file {REPO}/own_data_configs/student_plain.yaml '
                          f'{data} --logging.folder=runs/plain'),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work', default='build/own-data')
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not (work / 'photos').exists():
        files = make_photo_tree(work / 'photos', val_every=4, min_photos=7)
        print(f"photo folder: {files} files in {work / 'photos'}", flush=True)
    outputs = ['data/photos_val.beton', 'runs/teacher/summary.json',
               'data/photos_train_fkd.beton', 'runs/fkd/summary.json',
               'runs/plain/summary.json']
    seconds = {}
    for (name, command), output in zip(commands(sys.executable), outputs):
        if (work / output).exists():
            print(f"reusing {output}", flush=True)
            continue
        print(f"$ {command}", flush=True)
        started = time.perf_counter()
        subprocess.run(shlex.split(command), cwd=work, check=True)
        seconds[name] = time.perf_counter() - started
    timings = work / 'seconds.json'  # kept across reruns that reuse finished steps
    seconds = {**(json.loads(timings.read_text()) if timings.exists() else {}), **seconds}
    timings.write_text(json.dumps(seconds))
    rows = ['| step | top-1 | top-5 | wall s |', '|---|---|---|---|']
    for name, _ in commands(sys.executable):
        run = {'fine-tune the teacher': 'teacher', 'FKD student': 'fkd',
               'plain student': 'plain'}.get(name)
        summary = json.loads((work / 'runs' / run / 'summary.json').read_text()) if run else {}
        accuracy = (f"{summary['top1']:.2%} | {summary['top5']:.2%}" if summary else ' | ')
        rows.append(f"| {name} | {accuracy} | {seconds.get(name, float('nan')):.0f} |")
    classes = sorted(p.name for p in (work / 'photos' / 'train').iterdir())
    counts = {split: sum(1 for _ in (work / 'photos' / split).rglob('*.jpg'))
              for split in ('train', 'val')}
    print(f"\n{counts['train']} training and {counts['val']} validation photos (endless-sky "
          f"landscapes, 4 variants each, split by photo), {len(classes)} classes. {machine()}; "
          f"{versions('torch', 'ffcv')}; {time.strftime('%Y-%m-%d')}.\n")
    print('\n'.join(rows))


if __name__ == '__main__':
    main()
