"""The training losses: what a student's outputs are measured against in a step.

- `soft_cross_entropy`: FKD's, from a crop record's stored top-k (records/soft_labels.py
  holds their stored form and recovery);
- `dense_cross_entropy`: online distillation's, against a teacher's full distribution;
- `embedding_loss`: self-supervised FKD's, against a teacher embedding
  (records/embeddings.py holds its stored form);
- `mixed`: any of them for targets mixed as mixup and cutmix mix the images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fkd_ffcv.records.label_types import LabelSpec


def soft_cross_entropy(logits: torch.Tensor, classes, probs, spec: LabelSpec,
                       temperature: float = 1.0) -> torch.Tensor:
    """Mean over crops of -sum_c q_c log softmax(logits / T)_c, computed from the stored top-k
    without building q: for smoothing, the uniform rest contributes its mass times the mean
    log-probability of the classes outside S."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    classes = torch.as_tensor(classes, device=logits.device).long()
    probs = torch.as_tensor(probs, device=logits.device, dtype=torch.float32)
    picked = logp.gather(-1, classes)
    if spec.smoothing:
        rest = (1 - probs.sum(-1)).clamp(min=0)
        outside = (logp.sum(-1) - picked.sum(-1)) / (spec.num_classes - spec.k)
        loss = -(probs * picked).sum(-1) - rest * outside
    else:
        loss = -(probs * picked).sum(-1) / probs.sum(-1).clamp(min=1e-12)
    return loss.mean()


def dense_cross_entropy(logits: torch.Tensor, q: torch.Tensor,
                        temperature: float = 1.0) -> torch.Tensor:
    """Mean over crops of -sum_c q_c log softmax(logits / T)_c for a dense target q (N, C):
    online distillation, where the teacher's full distribution is at hand."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(q.float() * logp).sum(-1).mean()


def embedding_loss(student: torch.Tensor, target: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """Mean over crops of -sum_d softmax(t / tau)_d log softmax(s / tau)_d, for L2-normalised
    student outputs s and targets t (S2-BNN's distillation loss, tau on both)."""
    q = torch.softmax(F.normalize(target.float(), dim=-1) / temperature, dim=-1)
    logp = torch.log_softmax(F.normalize(student.float(), dim=-1) / temperature, dim=-1)
    return -(q * logp).sum(-1).mean()


def mixed(loss_of, perm, lam):
    """A loss linear in its target, for targets mixed with weight `lam`: lam L(a) + (1 - lam)
    L(b), with `loss_of(index)` the loss against the targets picked by `index`."""
    everything = slice(None)
    return loss_of(everything) if perm is None else \
        lam * loss_of(everything) + (1 - lam) * loss_of(perm)
