"""Write an image data set (and later its soft labels) to FFCV betons.

    python write_dataset.py                      # the Fashion-MNIST default, train + val, in data/
    python write_dataset.py --data.source=folder --data.root=/data/imagenet \
        --data.out_dir=/data/betons --write.max_resolution=500 --write.write_mode=proportion

Each split becomes `<out_dir>/<name>_<split>.beton` plus its manifest `<...>.beton.json`
(class names, source, options, skipped inputs). Options: `--help`, or a YAML file with
`--config-file`.
"""
import sys
from pathlib import Path

from fastargs import Param, Section
from fastargs.validation import And, InRange, OneOf

from fkd_ffcv.config import load_config, section
from fkd_ffcv.fields import WRITE_MODES, image_fields
from fkd_ffcv.sources import (DEFAULT_MAX_PIXELS, FASHION_MNIST_DIR, FashionMNISTSource,
                              ImageFolderSource)
from fkd_ffcv.writer import DEFAULT_PAGE_SIZE, ON_ERROR, WriteError, write_beton

Section('data', 'what to write and where').params(
    source=Param(OneOf(['fashion-mnist', 'folder']), 'fashion-mnist (Debian package) or an '
                 'ImageFolder tree <root>/<split>/<class>/<image>', default='fashion-mnist'),
    root=Param(str, 'data set root (fashion-mnist: the IDX folder)', default=''),
    split=Param(OneOf(['train', 'val', 'all']), 'split to write', default='all'),
    out_dir=Param(str, 'folder for the betons', default='data'),
    name=Param(str, 'file name prefix (default: fashion_mnist, or the root folder name)',
               default=''),
    subset=Param(int, 'write this many samples per split, spread over the classes (-1: all)',
                 default=-1),
    image_size=Param(And(int, InRange(min=1)), 'fashion-mnist: side in pixels', default=32),
)

Section('write', 'how images are stored and how the writer behaves').params(
    max_resolution=Param(And(int, InRange(min=0)), 'longest side after resizing (0: keep)',
                         default=500),
    write_mode=Param(OneOf(WRITE_MODES), 'raw pixels, JPEG, JPEG above smart_threshold raw '
                     'bytes (smart), or JPEG with compress_probability (proportion)',
                     default='smart'),
    smart_threshold=Param(And(int, InRange(min=0)), 'smart: JPEG when raw pixels exceed '
                          'this many bytes', default=224 * 224 * 3),
    jpeg_quality=Param(And(int, InRange(1, 100)), 'JPEG quality', default=90),
    compress_probability=Param(And(float, InRange(0, 1)), 'proportion: JPEG share',
                               default=0.5),
    num_workers=Param(int, 'writer processes (-1: one per core)', default=-1),
    chunk_size=Param(And(int, InRange(min=1)), 'samples per work item', default=100),
    page_size=Param(int, 'FFCV page size in bytes (power of two, >= 2 MiB)',
                    default=DEFAULT_PAGE_SIZE),
    on_error=Param(OneOf(ON_ERROR), 'unusable input file: fail, or skip it and list it',
                   default='fail'),
    max_pixels=Param(And(int, InRange(min=1)), 'refuse images with more pixels',
                     default=DEFAULT_MAX_PIXELS),
)


def make_source(cfg, split):
    data = cfg['data']
    if data['source'] == 'fashion-mnist':
        return FashionMNISTSource(split, image_size=data['image_size'],
                                  root=data['root'] or FASHION_MNIST_DIR, subset=data['subset'])
    if not data['root']:
        raise ValueError("--data.root is required with --data.source=folder")
    write = cfg['write']
    return ImageFolderSource(data['root'], split, max_resolution=write['max_resolution'] or None,
                             max_pixels=write['max_pixels'], subset=data['subset'])


def main(cfg) -> int:
    data, write = cfg['data'], cfg['write']
    name = data['name'] or ('fashion_mnist' if data['source'] == 'fashion-mnist'
                            else Path(data['root']).resolve().name)
    splits = ['train', 'val'] if data['split'] == 'all' else [data['split']]
    fields = image_fields(write['write_mode'], write['max_resolution'] or None,
                          write['jpeg_quality'], write['compress_probability'],
                          write['smart_threshold'])
    for split in splits:
        source = make_source(cfg, split)
        out = Path(data['out_dir']) / f"{name}_{split}.beton"
        for warning in getattr(source, 'empty_classes', []):
            print(f"warning: class {warning!r} has no images in split {split}", file=sys.stderr)
        root = data['root'] or (str(FASHION_MNIST_DIR) if data['source'] == 'fashion-mnist' else '')
        manifest = {'classes': list(source.classes),
                    'source': {**data, 'root': root, 'split': split},
                    'write_options': dict(write)}
        report = write_beton(out, fields, source, num_workers=write['num_workers'],
                             chunk_size=write['chunk_size'], page_size=write['page_size'],
                             on_error=write['on_error'], manifest=manifest)
        print(f"wrote {report.path}: {report.num_samples} images in {report.seconds:.1f} s "
              f"({report.num_samples / report.seconds:,.0f} images/s)")
        if report.skipped:
            print(f"skipped {len(report.skipped)} unusable input(s) (listed in {out}.json):")
            for path, why in report.skipped[:20]:
                print(f"  {path}: {why}")
    return 0


if __name__ == '__main__':
    config = load_config(__doc__.splitlines()[0])
    try:
        sys.exit(main({name: section(config, name) for name in ('data', 'write')}))
    except (WriteError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
