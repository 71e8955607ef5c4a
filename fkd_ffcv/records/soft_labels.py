"""FKD soft labels: the label types, their compact stored form and their recovery.

This module owns the stored form; inspection, the loader and the training loss
(training/losses.py) all call it.

Every label type stores, per crop record, k class indices and k probabilities, the teacher's
top-k in descending order, and recovers a C-way distribution q from them (S = stored set):

- `marginal_smoothing_k<K>`: q_i = p_i on S, the rest of the mass (1 - sum_S p) spread evenly
  over the other C - k classes;
- `marginal_renorm_k<K>`: q_i = p_i / sum_S p on S, 0 elsewhere;
- `smoothing`: marginal smoothing with k = 1 (q_top = p_max, the rest uniform);
- `hard`: marginal re-normalisation with k = 1 (one-hot on the argmax);
- `full`: all C probabilities (k = C), for small class counts.

Stored form: indices as int16 (C <= 32767) and k uint8 codes of probabilities on a log scale
(relative error at most 2.7% for values down to 1e-6; numba cannot compile float16). Of the
k + 1 quantities p_1..p_k and the rest mass 1 - sum_S p, the largest (p_1 or the rest) is not
stored but derived from the others, which keeps every small quantity's relative precision and
makes the distribution sum to one; a flag bit per record says which. A top-5 record of a
1000-class teacher, with its box and flags byte, takes 24 B.
"""
from __future__ import annotations

import numpy as np
import torch

# the label types, here for the callers of this module (label_types.py is torch-free)
from fkd_ffcv.records.label_types import LabelSpec  # noqa: F401

FLAG_FLIP, FLAG_P1_STORED = 1, 2  # bits of a record's flags byte
PROB_CODES = 255  # uint8 code of probability 1
LOG_STEP = -np.log(1e-6) / (PROB_CODES - 1)  # code 1 is probability 1e-6


# --------------------------------------------------------------------------------------------
# Stored form


def encode_probs(values: torch.Tensor):
    """Top-k probabilities (M, k), descending -> (uint8 codes (M, k), p1_stored bool (M,)).

    Of the rest mass and p_1 (one of them is the largest quantity), the larger is left out and
    derived from the others when decoding; `p1_stored` says which (module docstring)."""
    values = values.double()
    rest = (1 - values.sum(-1)).clamp(min=0)
    p1_stored = rest > values[:, 0]
    first = torch.where(p1_stored, values[:, 0], rest)
    small = torch.cat([first[:, None], values[:, 1:]], dim=1).clamp(min=0)
    steps = torch.log(small.clamp(min=1e-300)) / LOG_STEP  # <= 0; code 255 is probability 1
    codes = torch.round(PROB_CODES + steps).clamp(0, PROB_CODES).to(torch.uint8)
    return codes, p1_stored


def decode_probs(codes, p1_stored) -> torch.Tensor:
    """Stored codes (..., k) and p1_stored (...) -> top-k probabilities p_1..p_k, float32."""
    codes = torch.as_tensor(codes)
    small = torch.exp((codes.float() - PROB_CODES) * LOG_STEP)
    small = torch.where(codes == 0, torch.zeros_like(small), small)
    derived = (1 - small.sum(-1)).clamp(min=0)
    p1 = torch.where(torch.as_tensor(p1_stored, device=small.device), small[..., 0], derived)
    return torch.cat([p1[..., None], small[..., 1:]], dim=-1)


def record_flags(flips, p1_stored) -> np.ndarray:
    """A record's flags byte from its flip and its probability coding (bool arrays)."""
    return (np.asarray(flips, np.uint8) * FLAG_FLIP) | (np.asarray(p1_stored, np.uint8)
                                                         * FLAG_P1_STORED)


def compress(probs: torch.Tensor, spec: LabelSpec):
    """Teacher probabilities (M, C) -> stored form: class indices int16 (M, k), codes uint8
    (M, k) and p1_stored bool (M,) (kept in the record's flags)."""
    if probs.ndim != 2 or probs.shape[1] != spec.num_classes:
        raise ValueError(f"teacher output has shape {tuple(probs.shape)}; expected "
                         f"(crops, {spec.num_classes}) for {spec.num_classes} classes")
    if not torch.isfinite(probs).all():
        raise ValueError("teacher output contains NaN or Inf")
    values, indices = torch.topk(probs.float(), spec.k, dim=1, sorted=True)
    codes, p1_stored = encode_probs(values)
    return indices.to(torch.int16), codes, p1_stored


def top1_agreement(beton, max_images: int = 2000):
    """(share of crop records whose stored top-1 is the image's hard label, images looked at),
    over up to `max_images` images spread evenly over the beton. A foreign or misaligned label
    set shows as an agreement near chance."""
    from fkd_ffcv.data.fields import CLASSES_FIELD, LABEL_FIELD
    labels = beton.field_metadata(LABEL_FIELD)
    picked = np.unique(np.linspace(0, len(beton) - 1, min(max_images, len(beton))).astype(int))
    hits = total = 0
    for i in picked:
        top = beton.array(CLASSES_FIELD, i)[:, 0]  # classes are stored in descending order
        hits += int((top == labels[i]).sum())
        total += len(top)
    return hits / max(total, 1), len(picked)


# --------------------------------------------------------------------------------------------
# Recovery


def recover(classes, probs, spec: LabelSpec) -> torch.Tensor:
    """Stored top-k (classes (..., k) int, probs (..., k) float) -> dense q (..., C), float32."""
    classes = torch.as_tensor(classes).long()
    probs = torch.as_tensor(probs, dtype=torch.float32)
    if spec.smoothing:
        rest = (1 - probs.sum(-1, keepdim=True)).clamp(min=0) / (spec.num_classes - spec.k)
        q = rest.expand(*probs.shape[:-1], spec.num_classes).clone()
    else:
        probs = probs / probs.sum(-1, keepdim=True).clamp(min=1e-12)
        q = probs.new_zeros(*probs.shape[:-1], spec.num_classes)
    return q.scatter_(-1, classes, probs)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, in nats, treating 0 log 0 as 0."""
    p, q = p.double(), q.double()
    terms = torch.where(p > 0, p * (torch.log(p.clamp(min=1e-300)) -
                                    torch.log(q.clamp(min=1e-300))), torch.zeros_like(p))
    return terms.sum(-1)
