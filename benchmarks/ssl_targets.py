"""What a self-supervised FKD record should store: bytes per record against the fidelity of the
training target, for a teacher's L2-normalised embeddings.

The target of S2-BNN's loss is softmax(t / tau) over the D dimensions of the teacher's unit
embedding t (tau = 0.2). Stored forms compared (each plus the record's 8-byte box and flags
byte):

- the embedding's direction in int8 (embeddings.encode; D bytes), tau free at training time;
- the embedding in float16 (2D bytes);
- softmax(t / tau) in the soft-label form of FKD mode (soft_labels.py): 'full' (all D
  probabilities, 3D bytes) and marginal_smoothing_k<K> (the top K, 3K bytes); tau fixed when
  labelling.

Fidelity: KL(exact target || stored target) in nats (mean and worst over the crops) and, where
the form stores the embedding, the cosine with the exact one. Embeddings of the validation
images' centre crops, three kinds:

- the demo teacher's pooled features (64-d, non-negative: its classifier's input);
- the projection of the self-supervised student that benchmarks/ssl.py trained (64-d, signed),
  where that run exists;
- 128-d, signed: the teacher's features through a random head of MoCo's shape (Linear, ReLU,
  Linear to 128; seed 0): the dimension and signs of MoCo's output, not its training.

    python -m benchmarks.ssl_targets [--demo build/demo] [--out docs/tables/ssl_targets.md]
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import report, versions
from fkd_ffcv.data.fields import bytes_per_record, embedding_fields, soft_label_fields
from fkd_ffcv.reporting import machine
from fkd_ffcv.records.embeddings import decode, encode
from fkd_ffcv.loading.loaders import eval_loader
from fkd_ffcv.records.soft_labels import LabelSpec, compress, decode_probs, kl_divergence, recover
from fkd_ffcv.labeling.teachers import Teacher

TAU = 0.2


def stored_forms(t: torch.Tensor) -> dict:
    """name -> (bytes per record, the target's distribution as stored, the embedding as stored
    or None) for unit embeddings t (M, D)."""
    d = t.shape[1]
    p = torch.softmax(t / TAU, dim=-1)
    int8 = bytes_per_record(embedding_fields(1, d))
    forms = {'int8 direction (embeddings.encode)': (int8, decode(encode(t))),
             'float16 embedding': (int8 + d, F.normalize(t.half().float(), dim=-1))}
    out = {name: (size, torch.softmax(e / TAU, dim=-1), e) for name, (size, e) in forms.items()}
    for label_type in ['full'] + [f'marginal_smoothing_k{k}' for k in (5, 10, 20) if k < d]:
        spec = LabelSpec.parse(label_type, d)
        classes, codes, p1_stored = compress(p, spec)
        q = recover(classes, decode_probs(codes, p1_stored), spec)
        size = bytes_per_record(soft_label_fields(1, spec.k))
        out[f'softmax(t / {TAU}) as soft labels, {label_type}'] = (size, q, None)
    return out


def embedding_sets(demo: Path) -> list:
    """[(description, unit embeddings (M, D) float64)] of the validation centre crops."""
    from fkd_ffcv.models.heads import ProjectionHead
    val = demo / 'fashion_mnist_val.beton'
    teacher = Teacher(f"checkpoint:{demo / 'runs' / 'teacher' / 'final_weights.pt'}",
                      embedding='features')
    crops = [images.clone()  # the loader reuses its batch buffers
             for images, _ in eval_loader(val, 500, teacher.input_size, 1.0)]
    features = torch.cat([teacher.forward(images) for images in crops]).double()
    out = [(f"the demo teacher's pooled features ({teacher.dim}-d, non-negative)", features)]
    student = demo / 'ssl' / 'runs' / 'ssl_k4_seed0' / 'final_weights.pt'
    if student.exists():
        projection = Teacher(f'checkpoint:{student}', embedding='projection')
        out.append((f"the ssl student's projection ({projection.dim}-d, signed; "
                    f"benchmarks/ssl.py, seed 0)",
                    torch.cat([projection.forward(images) for images in crops]).double()))
    torch.manual_seed(0)
    head = ProjectionHead(teacher.dim, teacher.dim, 128).double().eval()
    with torch.no_grad():
        out.append(("the teacher's features through a random MoCo-shaped head (128-d, "
                    "signed)", head(features).double()))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo', type=Path, default=Path('build/demo'))
    parser.add_argument('--out', type=Path, default=None)
    args = parser.parse_args()
    for needed in (args.demo / 'runs' / 'teacher' / 'final_weights.pt',
                   args.demo / 'fashion_mnist_val.beton'):
        if not needed.exists():
            sys.exit(f"{needed} is missing: run `make demo` first (or give --demo)")
    lines = [f"Embeddings of the validation images' centre crops; tau = {TAU}."]
    for description, t in embedding_sets(args.demo):
        exact = torch.softmax(t / TAU, dim=-1)
        entropy = -(exact * exact.clamp(min=1e-300).log()).sum(-1).mean()
        uniform = torch.log(torch.tensor(float(t.shape[1])))
        lines += ['', f"{description}: {len(t):,} crops; the exact targets' mean entropy "
                  f"{entropy:.3f} nats (uniform: {uniform:.3f}).",
                  '', '| stored form | bytes per record | KL mean (nats) | KL worst | cosine mean '
                  '| cosine worst |', '|---|---|---|---|---|---|']
        for name, (size, q, e) in stored_forms(t.float()).items():
            kl = kl_divergence(exact, q.double())
            cos = (F.normalize(e.double(), dim=-1) * t).sum(-1) if e is not None else None
            cells = [f"{kl.mean():.2e}", f"{kl.max():.2e}"] + \
                ([f"{cos.mean():.6f}", f"{cos.min():.6f}"] if cos is not None else ['-', '-'])
            lines.append(f"| {name} | {size} | {' | '.join(cells)} |")
    lines += ['', f"{machine()}; {versions('torch')}."]
    report('\n'.join(lines), args.out)


if __name__ == '__main__':
    main()
