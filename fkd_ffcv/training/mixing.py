"""Mixup and cutmix within a batch, drawn from (seed, rank, step) alone, so a resumed run mixes
exactly as the uninterrupted one did."""
from __future__ import annotations

import math

import numpy as np
import torch


def mix(images: torch.Tensor, seed: int, rank: int, step: int, mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0):
    """(mixed images, permutation, weight of the originals); (images, None, 1.0) when both
    alphas are 0. With both on, one of the two is drawn per step. Cutmix pastes a box of the
    permuted batch; its weight is the area left of the originals."""
    alphas = [(kind, a) for kind, a in (('mixup', mixup_alpha), ('cutmix', cutmix_alpha))
              if a > 0]
    if not alphas:
        return images, None, 1.0
    rng = np.random.default_rng([seed, rank, step])
    kind, alpha = alphas[rng.integers(len(alphas))]
    lam = float(rng.beta(alpha, alpha))
    generator = torch.Generator(device=images.device)
    generator.manual_seed(int(rng.integers(2 ** 62)))  # on the device: no copy, no sync
    perm = torch.randperm(images.shape[0], generator=generator, device=images.device)
    if kind == 'mixup':
        return lam * images + (1 - lam) * images[perm], perm, lam
    h, w = images.shape[-2:]
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    images = images.clone()
    images[:, :, y0:y1, x0:x1] = images[perm][:, :, y0:y1, x0:x1]
    return images, perm, 1 - (y1 - y0) * (x1 - x0) / (h * w)
