"""Soft-label math: label types, stored form, recovery formulas, loss."""
import pytest
import torch

from fkd_ffcv.records.soft_labels import LabelSpec, compress, decode_probs, kl_divergence, recover
from fkd_ffcv.training.losses import soft_cross_entropy

C = 1000


def teacher_probs(n=2000, seed=0):
    """Softmax outputs from confident to near-uniform teachers."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-0.5, 1.4, n)[:, None]
    return (torch.randn(n, C, generator=g) * scale).softmax(-1)


@pytest.mark.parametrize('name, k, smoothing', [
    ('hard', 1, False), ('smoothing', 1, True), ('marginal_smoothing_k5', 5, True),
    ('marginal_renorm_k10', 10, False)])
def test_parse(name, k, smoothing):
    spec = LabelSpec.parse(name, C)
    assert (spec.k, spec.smoothing, spec.num_classes) == (k, smoothing, C)


def test_parse_rejects_bad_types():
    for bad, classes in (('marginal_smoothing_k0', C), ('soft', C), ('full', 5000),
                         ('marginal_renorm_k10', 10), ('hard', 40000)):
        with pytest.raises(ValueError):
            LabelSpec.parse(bad, classes)


def test_recovery_formulas():
    classes = torch.tensor([[3, 1]])
    probs = torch.tensor([[0.6, 0.3]])
    q = recover(classes, probs, LabelSpec.parse('marginal_smoothing_k2', 6))[0]
    assert torch.allclose(q, torch.tensor([0.025, 0.3, 0.025, 0.6, 0.025, 0.025]))
    q = recover(classes, probs, LabelSpec.parse('marginal_renorm_k2', 6))[0]
    assert torch.allclose(q, torch.tensor([0, 1 / 3, 0, 2 / 3, 0, 0]))
    q = recover(classes[:, :1], probs[:, :1], LabelSpec.parse('smoothing', 6))[0]
    assert torch.allclose(q, torch.tensor([0.08, 0.08, 0.08, 0.6, 0.08, 0.08]))
    q = recover(classes[:, :1], probs[:, :1], LabelSpec.parse('hard', 6))[0]
    assert torch.equal(q, torch.tensor([0., 0, 0, 1, 0, 0]))


@pytest.mark.parametrize('name', ['hard', 'smoothing', 'marginal_smoothing_k5',
                                  'marginal_renorm_k5', 'marginal_smoothing_k10'])
def test_stored_form_is_within_the_kl_budget(name):
    """Mean KL(recovery from fp32 top-k || recovery from the stored form) <= 1e-3 nats."""
    spec = LabelSpec.parse(name, C)
    p = teacher_probs()
    values, indices = torch.topk(p, spec.k, dim=1)
    classes, codes, p1_stored = compress(p, spec)
    assert classes.dtype == torch.int16 and codes.dtype == torch.uint8
    assert torch.equal(classes.long(), indices)
    kl = kl_divergence(recover(indices, values, spec),
                       recover(classes, decode_probs(codes, p1_stored), spec))
    assert kl.mean() < 1e-3 and torch.isfinite(kl).all()


def test_full_type_for_small_class_counts():
    spec = LabelSpec.parse('full', 10)
    p = (torch.randn(500, 10) * 3).softmax(-1)
    classes, codes, p1_stored = compress(p, spec)
    q = recover(classes, decode_probs(codes, p1_stored), spec)
    assert kl_divergence(p, q).mean() < 1e-3


def test_compress_rejects_bad_teacher_output():
    spec = LabelSpec.parse('marginal_smoothing_k5', C)
    with pytest.raises(ValueError, match='NaN or Inf'):
        compress(torch.full((2, C), float('nan')), spec)
    with pytest.raises(ValueError, match='expected \\(crops, 1000\\)'):
        compress(torch.rand(2, 10), spec)


@pytest.mark.parametrize('name', ['smoothing', 'marginal_smoothing_k5', 'marginal_renorm_k5',
                                  'hard'])
@pytest.mark.parametrize('temperature', [1.0, 3.0])
def test_loss_equals_dense_soft_cross_entropy(name, temperature):
    spec = LabelSpec.parse(name, 50)
    torch.manual_seed(1)
    logits = torch.randn(64, 50, requires_grad=True)
    p = (torch.randn(64, 50) * 2).softmax(-1)
    values, classes = torch.topk(p, spec.k, dim=1)
    dense = -(recover(classes, values, spec) *
              torch.log_softmax(logits / temperature, -1)).sum(-1).mean()
    loss = soft_cross_entropy(logits, classes, values, spec, temperature)
    assert torch.allclose(loss, dense, atol=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
