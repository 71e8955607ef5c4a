"""Soft-label generation: throughput against the teacher's bare forward, bytes per record, KL.

    python -m benchmarks.labeling [--images 32] [--records 16] [--repeats 3] [--device cpu]

Real photos (the first --images endless-sky-data landscapes of benchmarks/common.py, as they
are, stored at 500 px longest side, JPEG 90) labelled by the real ImageNet teacher
EfficientNet-Lite0 at 224 px. In interleaved rounds of the same run:

- bare forward: the teacher on the same crops, already cut and in memory (crops/s);
- generation: `label_beton` end to end (decode once per image, draw records, cut and resize
  crops in a prefetch thread, teacher forward, compress, write chunks, merge into a beton);
- the data path's cost: 1 - generation / bare forward;
- stored form: bytes per record, and the mean KL between the recovery from the stored records
  and the recovery from fp32 top-k of the same teacher outputs, per label type.
"""
import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import interleaved_times, landscapes, versions
from fkd_ffcv.reporting import machine
from fkd_ffcv.data.beton import Beton
from fkd_ffcv.records.crops import cut_crops, sample_records
from fkd_ffcv.data.fields import bytes_per_record, image_fields, soft_label_fields
from fkd_ffcv.labeling.label import LabelingSettings, label_beton
from fkd_ffcv.records.soft_labels import LabelSpec, compress, decode_probs, kl_divergence, recover
from fkd_ffcv.data.sources import ImageFolderSource
from fkd_ffcv.labeling.teachers import Teacher
from fkd_ffcv.data.manifest import Manifest
from fkd_ffcv.data.writer import write_beton


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--records', type=int, default=16)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix='fkd-bench-labels-'))
    try:
        for p in landscapes(args.images):  # one class folder: the teacher's classes are ImageNet's
            (work / 'photos' / 'train' / 'land').mkdir(parents=True, exist_ok=True)
            shutil.copy(p, work / 'photos' / 'train' / 'land' / p.name)
        images = work / 'images.beton'
        write_beton(images, image_fields('jpg', max_resolution=500),
                    ImageFolderSource(work / 'photos', 'train', max_resolution=500),
                    manifest=Manifest(classes=[f'imagenet{i}' for i in range(1000)]), progress=False)
        teacher = Teacher('fkd_ffcv.labeling.teachers:efficientnet_lite0', device=args.device)
        settings = LabelingSettings(num_records=args.records, chunk_images=16,
                                    batch_size=args.batch_size)

        # The same crops, cut in advance: what the teacher alone costs.
        beton = Beton(images)
        crops = []
        for i in range(len(beton)):
            pixels = beton.image(i)
            boxes, flips = sample_records(0, i, *pixels.shape[:2], args.records)
            crops.append(cut_crops(pixels, boxes, flips, 224, 'bicubic'))
        crops = np.concatenate(crops)
        teacher.outputs(crops[:args.batch_size])  # warm-up
        outputs = {}

        def bare_forward():
            outputs['probs'] = torch.cat([teacher.outputs(crops[s:s + args.batch_size])
                                          for s in range(0, len(crops), args.batch_size)])

        def end_to_end():  # the output is replaced, the chunks folder removed, each time
            label_beton(images, work / 'labelled.beton', teacher, settings, work / 'chunks',
                        progress=False)

        times = interleaved_times({'bare': bare_forward, 'full': end_to_end}, args.repeats,
                                  warm_up=False)
        bare, full = (statistics.median(len(crops) / t for t in times[name])
                      for name in ('bare', 'full'))
        probs = outputs['probs']

        print(f"{args.images} photos x {args.records} records = {len(crops)} crops at 224 px, "
              f"EfficientNet-Lite0 ({teacher.precision}) on {args.device}, batch "
              f"{args.batch_size}, median of "
              f"{args.repeats} interleaved rounds, {torch.get_num_threads()} torch threads. "
              f"{machine()}; {versions('torch', 'ffcv')}")
        print("\n| path | crops/s | images/s |\n|---|---|---|")
        print(f"| teacher forward alone (crops in memory) | {bare:,.1f} | "
              f"{bare / args.records:,.1f} |")
        print(f"| label_beton end to end | {full:,.1f} | {full / args.records:,.1f} |")
        print(f"\ndata path cost: {1 - full / bare:.1%} of the bare forward's throughput")

        print("\n| label type | bytes per record | mean KL vs fp32 top-k (nats) | max |\n"
              "|---|---|---|---|")
        for name in ('hard', 'smoothing', 'marginal_smoothing_k5', 'marginal_renorm_k5',
                     'marginal_smoothing_k10'):
            spec = LabelSpec.parse(name, 1000)
            values, indices = torch.topk(probs, spec.k, dim=1)
            classes, codes, p1_stored = compress(probs, spec)
            kl = kl_divergence(recover(indices, values, spec),
                               recover(classes, decode_probs(codes, p1_stored), spec))
            print(f"| {name} | {bytes_per_record(soft_label_fields(1, spec.k))} | {kl.mean():.2e} | {kl.max():.2e} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
