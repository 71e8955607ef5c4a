"""Write an image data set to FFCV betons (later issues add soft labels from a teacher).

    python write_dataset.py                      # the Fashion-MNIST default, train + val, in data/
    python write_dataset.py --data.source=folder --data.root=/data/imagenet \
        --data.out_dir=/data/betons --write.write_mode=proportion

Each split becomes `<out_dir>/<name>_<split>.beton` plus its manifest `<...>.beton.json`
(class names, source, options, skipped inputs). Options: `--help`, or a YAML file with
`--config-file`.
"""
import sys
from pathlib import Path

from fastargs import Param, Section
from fastargs.validation import And, InRange, OneOf

from fkd_ffcv import defaults
from fkd_ffcv.config import load_config, section

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'

Section('data', 'what to write and where').params(
    source=Param(OneOf(['fashion-mnist', 'folder']), 'fashion-mnist (Debian package) or an '
                 'ImageFolder tree <root>/<split>/<class>/<image>', default='fashion-mnist'),
    root=Param(str, f'data set root (fashion-mnist: {FASHION_MNIST_DIR})', default=''),
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
    write_mode=Param(OneOf(defaults.WRITE_MODES), 'raw pixels, JPEG, JPEG above '
                     'smart_threshold raw bytes (smart), or JPEG with compress_probability '
                     '(proportion)', default='smart'),
    smart_threshold=Param(And(int, InRange(min=0)), 'smart: JPEG when raw pixels exceed '
                          'this many bytes', default=defaults.SMART_THRESHOLD),
    jpeg_quality=Param(And(int, InRange(1, 100)), 'JPEG quality', default=90),
    compress_probability=Param(And(float, InRange(0, 1)), 'proportion: JPEG share',
                               default=0.5),
    num_workers=Param(int, 'writer processes (-1: one per core)', default=-1),
    chunk_size=Param(And(int, InRange(min=1)), 'samples per work item', default=100),
    page_size=Param(int, 'FFCV page size in bytes (power of two, >= 2 MiB)',
                    default=defaults.PAGE_SIZE),
    on_error=Param(OneOf(defaults.ON_ERROR), 'unusable input file: fail, or skip it and '
                   'list it', default='fail'),
    max_pixels=Param(And(int, InRange(min=1)), 'refuse images with more pixels',
                     default=defaults.MAX_PIXELS),
)


def main(data: dict, write: dict) -> None:
    fashion = data['source'] == 'fashion-mnist'
    root = data['root'] or (FASHION_MNIST_DIR if fashion else '')
    if not root:
        raise ValueError("--data.root is required with --data.source=folder")
    # Imported here so that option errors and --help answer without loading ffcv (seconds).
    from fkd_ffcv.fields import image_fields
    from fkd_ffcv.sources import FashionMNISTSource, ImageFolderSource
    from fkd_ffcv.writer import write_beton

    name = data['name'] or ('fashion_mnist' if fashion else Path(root).resolve().name)
    fields = image_fields(write['write_mode'], write['max_resolution'] or None,
                          write['jpeg_quality'], write['compress_probability'],
                          write['smart_threshold'])
    for split in (['train', 'val'] if data['split'] == 'all' else [data['split']]):
        if fashion:
            source = FashionMNISTSource(split, data['image_size'], root, data['subset'])
        else:
            source = ImageFolderSource(root, split, write['max_resolution'] or None,
                                       write['max_pixels'], data['subset'])
            for empty in source.empty_classes:
                print(f"warning: class {empty!r} has no images in {split}", file=sys.stderr)
        out = Path(data['out_dir']) / f"{name}_{split}.beton"
        manifest = {'classes': list(source.classes),
                    'source': {**data, 'root': str(root), 'split': split},
                    'write_options': write}
        report = write_beton(out, fields, source, num_workers=write['num_workers'],
                             chunk_size=write['chunk_size'], page_size=write['page_size'],
                             on_error=write['on_error'], manifest=manifest)
        print(f"wrote {report.path}: {report.num_samples} images in {report.seconds:.1f} s "
              f"({report.num_samples / report.seconds:,.0f} images/s)")
        if report.skipped:
            print(f"skipped {len(report.skipped)} unusable input(s) (listed in {out}.json):")
            for path, why in report.skipped[:20]:
                print(f"  {path}: {why}")


if __name__ == '__main__':
    config = load_config(__doc__.splitlines()[0])
    try:
        main(section(config, 'data'), section(config, 'write'))
    except (RuntimeError, OSError, ValueError) as e:  # WriteError is a RuntimeError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
