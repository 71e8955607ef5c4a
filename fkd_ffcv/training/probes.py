"""Evaluating features without training on labels: k-NN top-1 and a linear probe.

A self-supervised student has no classifier, so its top-1 is measured on its frozen pooled
features (the input of its projection head): every image of the train and validation betons
is centre-cropped, embedded once and L2-normalised, then

- k-NN: each validation image takes the classes of its k most cosine-similar training images,
  weighted by exp(similarity / T) (Wu et al. 2018; k = 20, T = 0.07 as DINO evaluates);
- linear probe: a Linear layer trained on the training features and their hard labels (SGD,
  momentum 0.9, no weight decay, the rate x0.1 at 60% and 80% of its epochs, as S2-BNN's
  probe), on features standardised by the training set's mean and deviation (a BatchNorm
  without affine, as MAE's probe), so one learning rate suits any backbone.

The probe trains on fixed centre-crop features, not on augmented crops through the frozen
network as S2-BNN's 100-epoch probe does: seconds on the demo data and minutes on ImageNet
instead of a training run (how its top-1 compares there is not measured). The trainer runs
both at each validation of an `ssl`, `online_ssl` or `moco` run; `fkd-probe` runs them on any
export or teacher spec.

`lincls` is MoCo's (and S2-BNN's) linear classification instead, the protocol of their
tables: a Linear layer on the frozen network's pooled features, trained on augmented crops
(RandomResizedCrop and flip) for 100 epochs by SGD at 30, x0.1 at epochs 60 and 80, and
measured on centre crops (`fkd-probe --protocol lincls`).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

from fkd_ffcv.defaults import DEFAULT_RESIZE
from fkd_ffcv.errors import TrainingError


def require_labels(path) -> None:
    """The probe and k-NN read hard labels: refuse a beton without them, naming it."""
    from fkd_ffcv.data.beton import Beton
    from fkd_ffcv.data.fields import LABEL_FIELD
    beton = Beton(path)
    if LABEL_FIELD not in beton.fields:
        raise TrainingError(f"{path} has no {LABEL_FIELD!r} field: the linear probe and k-NN "
                            f"need the images' hard labels (fields: "
                            f"{', '.join(beton.field_names)})")


def gather_rows(x: torch.Tensor, total: int, rank: int, world_size: int) -> torch.Tensor:
    """The rows every rank computed (rank r holds samples r, r + world_size, ...), in sample
    order, on every rank."""
    if world_size == 1:
        return x
    longest = -(-total // world_size)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[:len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    out = x.new_empty((total, *x.shape[1:]))
    for r, part in enumerate(parts):
        out[r::world_size] = part[:len(range(r, total, world_size))]
    return out


@torch.no_grad()
def embed(forward, path, *, resolution: int, ratio: float, batch_size: int = 256,
          num_workers: int = -1, device='cpu', rank: int = 0, world_size: int = 1,
          resize: str = DEFAULT_RESIZE, progress: bool = True) -> tuple:
    """(unit features float32 (N, F), labels int64 (N,)) of every image of the beton at `path`,
    centre-cropped; `forward` maps uint8 images (B, 3, S, S) on `device` to features; a bar on
    a terminal when `progress`."""
    from fkd_ffcv.data.beton import Beton
    from fkd_ffcv.loading.loaders import eval_loader
    from fkd_ffcv.progress import bar
    require_labels(path)
    features, labels = [], []
    loader = eval_loader(path, batch_size, resolution, ratio, num_workers, str(device), rank,
                         world_size, resize)
    for images, y in bar(progress, iterable=loader, unit='batch', leave=False,
                         desc=f"embedding {os.path.basename(path)}"):
        images = images.to(device, non_blocking=True)
        features.append(F.normalize(forward(images).float(), dim=-1))
        labels.append(y.to(device).long().clone())  # FFCV reuses its batch buffers
    total = len(Beton(path))
    return (gather_rows(torch.cat(features), total, rank, world_size),
            gather_rows(torch.cat(labels), total, rank, world_size))


@torch.no_grad()
def knn_top1(train_features, train_labels, val_features, val_labels, num_classes: int,
             k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> float:
    """Weighted k-NN top-1 of unit features (module docstring)."""
    if len(train_features) < 1 or len(val_features) < 1:
        raise ValueError(f"k-NN needs training and validation images: {len(train_features)} "
                         f"and {len(val_features)}")
    k = min(k, len(train_features))
    chunk = max(1, min(chunk, 2 ** 28 // len(train_features)))  # similarities: <= 1 GiB at fp32
    right = 0
    for start in range(0, len(val_features), chunk):
        similarity = val_features[start:start + chunk] @ train_features.T
        top, index = similarity.topk(k, dim=1)
        votes = torch.zeros(len(top), num_classes, device=top.device)
        votes.scatter_add_(1, train_labels[index], (top / temperature).exp())
        right += int((votes.argmax(1) == val_labels[start:start + chunk]).sum())
    return right / len(val_features)


def linear_probe(train_features, train_labels, val_features, val_labels, num_classes: int,
                 epochs: int = 100, lr: float = 0.1, batch_size: int = 256,
                 seed: int = 0) -> dict:
    """Train a Linear classifier on standardised frozen features; {'probe_top1' (validation),
    'probe_train_top1'}. Deterministic for a seed."""
    if len(train_features) < 2 or len(val_features) < 1:
        raise ValueError(f"the linear probe needs at least 2 training images and 1 validation "
                         f"image: {len(train_features)} and {len(val_features)}")
    # BatchNorm's standardisation (eps 1e-6): a column that hardly varies is not blown up
    mean = train_features.mean(0)
    std = (train_features.var(0, unbiased=False) + 1e-6).sqrt()
    x, v = (train_features - mean) / std, (val_features - mean) / std
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(x.shape[1], num_classes).to(x.device)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    steps = -(-len(x) // batch_size)
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group['lr'] = lr * 0.1 ** ((epoch >= 0.6 * epochs) + (epoch >= 0.8 * epochs))
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for s in range(steps):
            pick = order[s * batch_size:(s + 1) * batch_size]
            loss = F.cross_entropy(head(x[pick]), train_labels[pick])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return {'probe_top1': float((head(v).argmax(1) == val_labels).float().mean()),
                'probe_train_top1': float((head(x).argmax(1) == train_labels).float().mean())}


def knn_and_probe_top1(forward, train_path, val_path, num_classes: int, *, resolution: int,
                       ratio: float, knn_k: int = 20, knn_temperature: float = 0.07,
                       probe_epochs: int = 100, probe_lr: float = 0.1,
                       probe_batch_size: int = 256, seed: int = 0, **loading) -> dict:
    """k-NN top-1 and linear-probe top-1 of the features `forward` gives (module docstring);
    `loading` goes to `embed` (batch_size, num_workers, device, rank, world_size, resize,
    progress). Every rank gets the same numbers (it computes them on the gathered
    features)."""
    train = embed(forward, train_path, resolution=resolution, ratio=ratio, **loading)
    val = embed(forward, val_path, resolution=resolution, ratio=ratio, **loading)
    out = {'knn_top1': knn_top1(*train, *val, num_classes, knn_k, knn_temperature)}
    if probe_epochs:
        with torch.enable_grad():
            out.update(linear_probe(*train, *val, num_classes, probe_epochs, probe_lr,
                                    probe_batch_size, seed))
    out['val_images'] = len(val[1])
    return out


def lincls(forward, train_path, val_path, num_classes: int, *, resolution: int, ratio: float,
           epochs: int = 100, lr: float = 30.0, decays=(60, 80), batch_size: int = 256,
           scale=(0.08, 1.0), seed: int = 0, num_workers: int = -1, device='cpu',
           resize: str = DEFAULT_RESIZE, progress: bool = True) -> dict:
    """MoCo's linear classification (main_lincls.py): a Linear layer (weights N(0, 0.01), bias
    0) on the features `forward` gives uint8 images (the frozen model, in eval mode), trained
    `epochs` on seeded augmented training crops (RandomResizedCrop of `scale` at `resolution`,
    flip: loaders.PlainLoader) by SGD (momentum 0.9, no weight decay) at `lr`, x0.1 at each
    epoch of `decays`; {'lincls_top1' on the validation beton's centre crops (`ratio`),
    'lincls_train_top1' on the last epoch's crops}."""
    from fkd_ffcv.loading.loaders import PlainLoader, eval_loader
    from fkd_ffcv.progress import bar
    for path in (train_path, val_path):
        require_labels(path)
    loader = PlainLoader(train_path, batch_size, resolution, seed, num_workers, scale=scale,
                         device=device, resize=resize)
    head = optimizer = None
    for epoch in bar(progress, iterable=range(epochs), unit='epoch', leave=False,
                     desc='linear classification'):
        right = seen = 0
        for images, labels in loader:
            with torch.no_grad():
                features = forward(images).float()
            if head is None:  # its width is the features'
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    head = torch.nn.Linear(features.shape[1], num_classes).to(features.device)
                    head.weight.data.normal_(0, 0.01)
                    head.bias.data.zero_()
                optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9,
                                            weight_decay=0.0)
            for group in optimizer.param_groups:
                group['lr'] = lr * 0.1 ** sum(epoch >= d for d in decays)
            logits = head(features)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            right += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
    if head is None:
        raise ValueError(f"linear classification needs epochs and a batch of {batch_size} "
                         f"training images ({train_path}): {epochs} epochs")
    val_right = val_seen = 0
    with torch.no_grad():
        for images, labels in eval_loader(val_path, batch_size, resolution, ratio, num_workers,
                                          str(device), resize=resize):
            val_right += int((head(forward(images).float()).argmax(1) == labels.long()).sum())
            val_seen += len(labels)
    return {'lincls_top1': val_right / val_seen, 'lincls_train_top1': right / max(seen, 1),
            'val_images': val_seen}
