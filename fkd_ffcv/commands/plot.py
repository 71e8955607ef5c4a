"""`fkd-plot`: validation accuracy and loss against training time for one or more run folders,
as a PNG, so runs can be compared as the demo's plot compares its students (the demo draws with
`plot_runs` too).

    fkd-plot runs/fkd runs/plain --out compare.png

Each run's `log.jsonl` (run_folder.py) holds a line per epoch with the epoch's training
seconds (validation excluded) and, on the lines that end an evaluated pass, the validation
results; the x axis is the running sum of those seconds, so runs are compared at equal
training time. Top-1 is `top1`, or for a self-supervised run its `probe_top1` (else
`knn_top1`), named in the legend.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Dict, List

ACCURACY_KEYS = ('top1', 'probe_top1', 'knn_top1')


class PlotError(ValueError):
    """A run folder or log that cannot be plotted; `status` is the exit status (2: an
    argument names no run, 1: a run's log holds nothing to plot)."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def read_log(folder) -> List[dict]:
    """The lines of a run folder's log.jsonl."""
    folder = Path(folder)
    path = folder / 'log.jsonl'
    if not folder.is_dir():
        raise PlotError(f"{folder}: no such run folder (give fkd-train's --logging.folder)", 2)
    if not path.is_file():
        raise PlotError(f"{folder}: no log.jsonl in it: not a run folder of fkd-train (give "
                        f"its --logging.folder)", 2)
    try:
        text = path.read_text(errors='replace')
    except OSError as e:
        raise PlotError(f"{path}: cannot read it ({e.strerror or e})") from None
    lines = []
    for number, text in enumerate(text.splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            line = None
        if not isinstance(line, dict) or not isinstance(line.get('seconds'), (int, float)):
            raise PlotError(f"{path}, line {number}: not a log line of fkd-train (a JSON object "
                            f"with 'seconds')")
        lines.append(line)
    if not lines:
        raise PlotError(f"{path} is empty: the run has not finished an epoch yet")
    return lines


def curves(lines: List[dict]) -> dict:
    """{'accuracy': name, 'seconds', 'top1' (%), 'loss', 'val_seconds', 'val_loss'}: training
    loss at every epoch's end, validation measures where the run evaluated, against the running
    sum of training seconds."""
    key = next((k for k in ACCURACY_KEYS if any(k in line for line in lines)), None)
    elapsed, out = 0.0, {'accuracy': key, 'seconds': [], 'loss': [], 'top1_seconds': [],
                         'top1': [], 'val_seconds': [], 'val_loss': []}
    for line in lines:
        elapsed += line['seconds']
        if 'loss' in line and line.get('epoch', 1) > 0:  # epoch 0: the start, not trained
            out['seconds'].append(elapsed)
            out['loss'].append(line['loss'])
        if key in line:
            out['top1_seconds'].append(elapsed)
            out['top1'].append(100 * line[key])
        if 'val_loss' in line:
            out['val_seconds'].append(elapsed)
            out['val_loss'].append(line['val_loss'])
    return out


def labels_of(folders) -> List[str]:
    """Each folder's name, or its whole path where two runs share a name."""
    names = [Path(f).name or str(f) for f in folders]
    return [n if names.count(n) == 1 else str(f) for n, f in zip(names, folders)]


def plot_runs(runs: Dict[str, List[dict]], out, title: str = '') -> Path:
    """Validation top-1 (left) and training/validation loss (right, log scale) of each run
    ({label: log lines}) against training time, written to `out` as a PNG (atomically)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from fkd_ffcv.files import atomic_write
    fig, (top, loss) = plt.subplots(1, 2, figsize=(10, 4))
    losses = []
    for (label, lines), colour in zip(runs.items(), plt.rcParams['axes.prop_cycle'].by_key()
                                      ['color'] * len(runs)):
        c = curves(lines)
        name = label if c['accuracy'] in (None, 'top1') else f"{label} ({c['accuracy']})"
        top.plot(c['top1_seconds'], c['top1'], color=colour, marker='o', label=name)
        loss.plot(c['seconds'], c['loss'], color=colour, label=f"{label}, training")
        if c['val_loss']:
            loss.plot(c['val_seconds'], c['val_loss'], color=colour, linestyle='--', marker='o',
                      label=f"{label}, validation")
        losses += c['loss'] + c['val_loss']
    top.set_ylabel('validation top-1 (%)')
    if any(v > 0 for v in losses):  # validation losses of unsettled BatchNorm reach 1e6
        loss.set_yscale('log')
    loss.set_ylabel('loss' + (' (log scale)' if loss.get_yscale() == 'log' else ''))
    for ax in (top, loss):
        ax.set_xlabel('training time (s, excluding validation)')
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=120)
    plt.close(fig)
    return atomic_write(out, lambda f: f.write(buffer.getvalue()))


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that cannot take the PNG, before any log is read."""
    if out.suffix.lower() != '.png':
        raise PlotError(f"--out {out}: the plot is a PNG; give a file name ending in .png", 2)
    if out.is_dir():
        raise PlotError(f"--out {out} is a folder; give a file name ending in .png", 2)
    if not out.parent.is_dir():
        raise PlotError(f"--out {out}: no folder {out.parent} to write it in (create it first)",
                        2)
    if out.exists() and not overwrite:
        raise PlotError(f"--out {out} exists; give --overwrite to replace it, or another name",
                        2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog='fkd-plot', allow_abbrev=False,
        description='Validation top-1 and loss against training time of one or more runs '
                    '(their --logging.folder, each with its log.jsonl), as one PNG with a line '
                    'per run, named by its folder.')
    parser.add_argument('runs', nargs='+', help='run folders, e.g. runs/fkd runs/plain')
    parser.add_argument('--out', required=True, help='the PNG to write, e.g. compare.png')
    parser.add_argument('--title', default='', help='a title above the plots')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        check_out(out, args.overwrite)
        runs = dict(zip(labels_of(args.runs), (read_log(f) for f in args.runs)))
        plot_runs(runs, out, args.title)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.status
    except OSError as e:  # e.g. a folder that cannot be written to
        print(f"error: --out {out}: cannot write it ({e.strerror or e})", file=sys.stderr)
        return 2
    print(f"plotted {len(runs)} run(s) into {out}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
