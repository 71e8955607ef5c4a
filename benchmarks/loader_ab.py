"""Before/after A/B of the multi-crop loader: `FKDLoader` of a git revision against the working
tree's, in one process, with FKD's original data path in the same interleaved rounds.

    python -m benchmarks.loader_ab --base HEAD~1 [--k 4] [--loader fkd|plain] [--repeats 5]
        [--set imagenet|panoramas] [--resize antialias|bilinear|area]

Same photos, records and batch as benchmarks/loader.py (benchmarks/common.py). The revision's
`fkd_ffcv` is extracted with `git archive` and imported under another package name (its
imports are relative), so both versions decode the same beton in alternating passes and a
drift in the machine's speed hits both alike. Prints the machine, crops/s per path (median of
the rounds), after/before, and each version's ratio to the original path: the numbers
docs/benchmarks.md asks for a performance change.
"""
import argparse
import importlib
import importlib.util
import inspect
import os
import shutil
import sys
import tempfile
from pathlib import Path

import fkd_ffcv.loading.loaders
from benchmarks.common import (IMAGES_PER_BATCH, PHOTO_SETS, SIDE, export_original_files,
                               extract_revision, interleaved_rates, labelled_photos,
                               original_path, versions)
from fkd_ffcv.defaults import DEFAULT_RESIZE, RESIZE_FILTERS
from fkd_ffcv.reporting import machine


def package_at(revision: str, folder: Path):
    """fkd_ffcv's loaders as of `revision`, imported from `folder` as package
    `fkd_ffcv_base` (registered in sys.modules, so its relative imports resolve there)."""
    extract_revision(revision, ['fkd_ffcv'], folder)
    package = folder / 'fkd_ffcv_base'
    (folder / 'fkd_ffcv').rename(package)
    spec = importlib.util.spec_from_file_location('fkd_ffcv_base', package / '__init__.py',
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules['fkd_ffcv_base'] = module
    spec.loader.exec_module(module)
    return importlib.import_module('fkd_ffcv_base.loaders')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--base', required=True, help='git revision to compare against')
    parser.add_argument('--k', type=int, default=4, help='crops per image')
    parser.add_argument('--loader', choices=['fkd', 'plain'], default='fkd',
                        help='FKDLoader (K records per image) or PlainLoader (one seeded crop)')
    parser.add_argument('--resize', choices=RESIZE_FILTERS, default=DEFAULT_RESIZE,
                        help='crop resize filter of both versions (a revision without the '
                             'choice resizes with area)')
    parser.add_argument('--set', choices=PHOTO_SETS, default='imagenet', help='photo set')
    parser.add_argument('--records', type=int, default=32)
    parser.add_argument('--workers', type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--photos', type=int, default=0,
                        help='landscapes used, 16 or more (4 variants each: one batch of 64 '
                             'images); 0: all 273')
    args = parser.parse_args()
    if 0 < args.photos < IMAGES_PER_BATCH // 4:
        parser.error(f'--photos {args.photos}: a batch needs {IMAGES_PER_BATCH // 4} or more')
    work = Path(tempfile.mkdtemp(prefix='fkd-bench-loader-ab-'))
    try:
        base = package_at(args.base, work / 'base')
        _, _, labelled = labelled_photos(work, args.records, args.photos, args.set)
        paths = {}
        for name, module in ((f'before ({args.base})', base), ('after (working tree)',
                                                                fkd_ffcv.loading.loaders)):
            # revisions before resample.py have no filter choice: INTER_AREA
            resize = ({'resize': args.resize} if 'resize' in
                      inspect.signature(module.PlainLoader).parameters else {})
            name += f", {resize.get('resize', 'area')}"
            if args.loader == 'fkd':
                loader = module.FKDLoader(labelled, batch_size=IMAGES_PER_BATCH * args.k,
                                          num_crops=args.k, resolution=SIDE,
                                          num_workers=args.workers,
                                          order=module.OrderOption.RANDOM, **resize)
                paths[name] = (loader.__iter__, len(loader) * IMAGES_PER_BATCH * args.k)
            else:
                loader = module.PlainLoader(labelled, batch_size=IMAGES_PER_BATCH,
                                            resolution=SIDE, num_workers=args.workers,
                                            order=module.OrderOption.RANDOM, **resize)
                paths[name] = (loader.__iter__, len(loader) * IMAGES_PER_BATCH)
        paths['original FKD path'] = original_path(
            export_original_files(labelled, work / 'jpg'), args.k, args.workers)
        rates = interleaved_rates(paths, args.repeats)
        before, after, reference = rates.values()
        print(f"{args.loader} loader, K={args.k if args.loader == 'fkd' else 1} (original "
              f"path K={args.k}), {SIDE} px, {args.workers} threads/workers, median of "
              f"{args.repeats} interleaved rounds. {machine()}; {versions('ffcv', 'numba')}")
        for name, rate in rates.items():
            print(f"  {name}: {rate:,.0f} crops/s ({rate / reference:.2f}x original)")
        print(f"  after / before: {after / before:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
