"""Top-1 and top-5 over a validation beton: the one count that the trainer's validation and
`fkd-eval-teacher` share, so that a run's export measured as a teacher gives the run's
numbers (with the flip: the mean of an image's and its mirror's scores, as validation.lr_tta
computes it)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F


@torch.no_grad()
def top_k_accuracy(logits_of, batches, device, *, flip: bool = False,
                   world_size: int = 1) -> dict:
    """{'top1', 'top5', 'loss' (mean cross-entropy of the scores as logits), 'images'} of
    `logits_of` (uint8 images (B, 3, S, S) on `device` -> scores (B, C)) over the (images,
    labels) `batches`; with several processes, each reads its share and the counts are
    summed."""
    totals = torch.zeros(4, device=device)
    for images, labels in batches:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True).long()
        logits = logits_of(images).float()
        if flip:
            logits = (logits + logits_of(torch.flip(images, dims=[3])).float()) / 2
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        totals[0] += F.cross_entropy(logits, labels, reduction='sum')
        totals[1] += (top[:, 0] == labels).sum()
        totals[2] += (top == labels[:, None]).any(1).sum()
        totals[3] += labels.shape[0]
    if world_size > 1:
        dist.all_reduce(totals)
    loss, top1, top5, n = totals.tolist()
    return {'top1': top1 / n, 'top5': top5 / n, 'loss': loss / n, 'images': int(n)}


def teacher_top_k(teacher, beton_path, ratio: float = 0, resolution: int = 0,
                  batch_size: int = 256, num_workers: int = -1, flip: bool = False,
                  progress: bool = True) -> dict:
    """Top-1 and top-5 of a teacher (labeling.teachers.Teacher) on every image of a beton,
    centre-cropped (side `ratio` x the shorter side; default: the teacher's own crop
    fraction) and resized to `resolution` (default: the teacher's input size) with the
    teacher's own filter; a bar on a terminal."""
    from fkd_ffcv.data.beton import Beton
    from fkd_ffcv.loading.loaders import eval_loader
    from fkd_ffcv.progress import bar
    ratio = ratio or teacher.crop_pct
    classes = Beton(beton_path).classes
    if teacher.num_classes != len(classes):
        raise ValueError(f"the teacher predicts {teacher.num_classes} classes; {beton_path} has "
                         f"{len(classes)}")
    side = resolution or teacher.input_size
    loader = eval_loader(beton_path, batch_size, side, ratio, num_workers, str(teacher.device),
                         resize=teacher.interpolation)
    batches = bar(progress, iterable=loader, unit='batch', leave=False,
                  desc=f"evaluating on {os.path.basename(beton_path)}")
    # ranked by probability; with the flip, by the mean of the two log-probabilities
    scores = (lambda images: teacher.forward(images).log()) if flip else teacher.forward
    result = top_k_accuracy(scores, batches, teacher.device, flip=flip)
    return {'top1': result['top1'], 'top5': result['top5'], 'images': result['images'],
            'resolution': side, 'ratio': ratio, 'flip': flip}
