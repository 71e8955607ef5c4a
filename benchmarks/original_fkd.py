"""FKD's own data path, rebuilt for the benchmarks (as train_FKD.py reads data; no code of
it copied): a JPEG file and a `torch.save([coords, flips, labels (N, 2, k)])` soft-label file per
image, read by worker processes with PIL and cut with torchvision. Used by benchmarks/loader.py
(data path alone) and benchmarks/timing_table.py (feeding the trainer)."""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from fkd_ffcv.beton import Beton
from fkd_ffcv.crops import BOX_UNITS
from fkd_ffcv.fields import BOXES_FIELD, CLASSES_FIELD, CODES_FIELD, FLAGS_FIELD, LABEL_FIELD
from fkd_ffcv.soft_labels import FLAG_FLIP, FLAG_P1_STORED, decode_probs


class OriginalFKDData(torch.utils.data.Dataset):
    """Per image: K random records of its label file cut from its JPEG (resized_crop,
    bilinear with antialias, flip) -> (crops (K, 3, S, S) uint8, classes, probabilities, hard
    label)."""

    def __init__(self, files, label_files, labels, k, side):
        self.files, self.label_files, self.labels = files, label_files, labels
        self.k, self.side = k, side

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import torchvision.transforms.functional as F
        from PIL import Image
        image = Image.open(self.files[i]).convert('RGB')
        coords, flips, soft = torch.load(self.label_files[i], weights_only=True)
        crops, picks = [], torch.randperm(len(coords))[:self.k]
        for r in picks.tolist():
            scale = torch.tensor([image.height, image.width] * 2)
            top, left, height, width = (coords[r] * scale).tolist()
            crop = F.resized_crop(image, int(top), int(left), max(1, int(height)),
                                  max(1, int(width)), [self.side, self.side], antialias=True)
            crops.append(F.pil_to_tensor(F.hflip(crop) if flips[r] else crop))
        return (torch.stack(crops), soft[picks, 0].long(), soft[picks, 1].float(),
                self.labels[i])


def export_original_files(labelled: Path, folder: Path):
    """The labelled beton as FKD keeps it: a JPEG per image and a `torch.save([coords, flips,
    labels (N, 2, k)])` file per image, written by a thread per core (JPEG decoding and
    encoding release the GIL)."""
    beton = Beton(labelled)
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f'{i}.jpg' for i in range(len(beton))]
    label_files = [folder / f'{i}.tar' for i in range(len(beton))]

    def export(i):
        if label_files[i].exists():  # written last: the pair is complete
            return
        cv2.imwrite(str(files[i]), np.ascontiguousarray(beton.image(i)[..., ::-1]),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        flags = np.array(beton.array(FLAGS_FIELD, i))
        probs = decode_probs(torch.from_numpy(np.array(beton.array(CODES_FIELD, i))),
                             torch.from_numpy((flags & FLAG_P1_STORED) != 0))
        classes = torch.from_numpy(np.array(beton.array(CLASSES_FIELD, i))).float()
        coords = torch.from_numpy(np.array(beton.array(BOXES_FIELD, i)) / BOX_UNITS)
        torch.save([coords, torch.from_numpy((flags & FLAG_FLIP) != 0),
                    torch.stack([classes, probs], dim=1)], label_files[i])

    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(export, range(len(beton))))
    return files, label_files, [int(x) for x in beton.field_metadata(LABEL_FIELD)]
