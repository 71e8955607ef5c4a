"""Soft cross-entropy from stored top-k vs from a dense recovered distribution.

    python -m benchmarks.loss [--device cpu] [--batch 1024]

Both compute FKD's loss for the same logits and records (soft_labels.soft_cross_entropy, and
-sum(recover(...) * log_softmax) over C classes), forward and backward, median of 20 steps.
"""
import argparse
import statistics
import time

import torch

from benchmarks.common import versions
from fkd_ffcv.reporting import machine
from fkd_ffcv.records.soft_labels import LabelSpec, recover
from fkd_ffcv.training.losses import soft_cross_entropy


def dense_loss(logits, classes, probs, spec):
    return -(recover(classes, probs, spec) * torch.log_softmax(logits.float(), -1)).sum(-1).mean()


def timed(fn, logits, *args, device):
    times = []
    for _ in range(22):
        start = time.perf_counter()
        fn(logits, *args).backward()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:]) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, default=1024)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"batch {args.batch} crops, 1000 classes, fp32 on {device}, "
          f"{torch.get_num_threads()} torch threads. {machine()}; {versions('torch')}\n")
    print("| label type | top-k loss (ms) | dense loss (ms) | dense / top-k |\n|---|---|---|---|")
    for name in ('marginal_smoothing_k5', 'marginal_renorm_k5', 'marginal_smoothing_k10'):
        spec = LabelSpec.parse(name, 1000)
        logits = torch.randn(args.batch, 1000, device=device, requires_grad=True)
        probs, classes = torch.randn(args.batch, 1000, device=device).softmax(-1).topk(spec.k)
        top_k = timed(soft_cross_entropy, logits, classes, probs, spec, device=device)
        dense = timed(dense_loss, logits, classes, probs, spec, device=device)
        print(f"| {name} | {top_k:.2f} | {dense:.2f} | {dense / top_k:.2f}x |")


if __name__ == '__main__':
    main()
