"""Before/after A/B of the multi-crop loader: `FKDLoader` of a git revision against the working
tree's, in one process, with FKD's original data path in the same interleaved rounds.

    python benchmarks/loader_ab.py --base HEAD~1 [--k 4] [--loader fkd|plain] [--repeats 5]

Same photos, records and batch as benchmarks/loader.py. The revision's `fkd_ffcv` is extracted
with `git archive` under another package name (its imports are relative), so both versions
decode the same beton in alternating passes and a drift in the machine's speed hits both
alike. Prints crops/s per path (median of the rounds), after/before, and each version's ratio
to the original path: the numbers docs/benchmarks.md asks for a performance change.
"""
import argparse
import importlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'benchmarks'))
from loader import (IMAGES_PER_BATCH, SIZE, interleaved_rates, labelled_photos,  # noqa: E402
                    original_path)
from original_fkd import export_original_files  # noqa: E402
import fkd_ffcv.loaders  # noqa: E402


def package_at(revision: str, folder: Path):
    """fkd_ffcv as of `revision`, importable as `fkd_ffcv_base`."""
    try:
        tar = subprocess.run(['git', 'archive', '--format=tar', revision, 'fkd_ffcv'], cwd=REPO,
                             capture_output=True, check=True).stdout
    except subprocess.CalledProcessError as e:
        sys.exit(f"git archive {revision}: {e.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        safe = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}  # Python >= 3.11.4
        archive.extractall(folder, **safe)
    (folder / 'fkd_ffcv').rename(folder / 'fkd_ffcv_base')
    sys.path.insert(0, str(folder))
    return importlib.import_module('fkd_ffcv_base.loaders')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--base', required=True, help='git revision to compare against')
    parser.add_argument('--k', type=int, default=4, help='crops per image')
    parser.add_argument('--loader', choices=['fkd', 'plain'], default='fkd',
                        help='FKDLoader (K records per image) or PlainLoader (one seeded crop)')
    parser.add_argument('--records', type=int, default=32)
    parser.add_argument('--workers', type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix='fkd-bench-loader-ab-'))
    try:
        base = package_at(args.base, work / 'base')
        _, _, labelled = labelled_photos(work, args.records)
        paths = {}
        for name, module in ((f'before ({args.base})', base), ('after (working tree)',
                                                                fkd_ffcv.loaders)):
            if args.loader == 'fkd':
                loader = module.FKDLoader(labelled, batch_size=IMAGES_PER_BATCH * args.k,
                                          num_crops=args.k, resolution=SIZE,
                                          num_workers=args.workers,
                                          order=module.OrderOption.RANDOM)
                paths[name] = (loader.__iter__, len(loader) * IMAGES_PER_BATCH * args.k)
            else:
                loader = module.PlainLoader(labelled, batch_size=IMAGES_PER_BATCH,
                                            resolution=SIZE, num_workers=args.workers,
                                            order=module.OrderOption.RANDOM)
                paths[name] = (loader.__iter__, len(loader) * IMAGES_PER_BATCH)
        paths['original FKD path'] = original_path(
            export_original_files(labelled, work / 'jpg'), args.k, args.workers)
        rates = interleaved_rates(paths, args.repeats)
        before, after, reference = rates.values()
        print(f"{args.loader} loader, K={args.k if args.loader == 'fkd' else 1} (original "
              f"path K={args.k}), {SIZE} px, {args.workers} threads/workers, median of "
              f"{args.repeats} interleaved rounds")
        for name, rate in rates.items():
            print(f"  {name}: {rate:,.0f} crops/s ({rate / reference:.2f}x original)")
        print(f"  after / before: {after / before:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
