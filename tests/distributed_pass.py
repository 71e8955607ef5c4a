"""Run under torchrun by test_loaders.py: one FKDLoader pass with distributed=True on gloo.

Writes, per rank, the hard labels and a checksum of every crop it received."""
import json
import sys

import torch.distributed as dist

from fkd_ffcv.loading.loaders import FKDLoader, OrderOption

beton, out = sys.argv[1], sys.argv[2]
dist.init_process_group('gloo')
rank = dist.get_rank()
loader = FKDLoader(beton, batch_size=4, num_crops=2, resolution=16, num_workers=1,
                   order=OrderOption.RANDOM, distributed=True, drop_last=False)
crops = [(int(lab), int(im.long().sum())) for images, _, _, labels in loader
         for im, lab in zip(images, labels)]
with open(f"{out}.{rank}", 'w') as f:
    json.dump(crops, f)
dist.barrier()
dist.destroy_process_group()
