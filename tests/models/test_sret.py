"""SReT students: sizes against the paper's, sliced group attention against a direct
computation, shared blocks, deterministic evaluation, input sides."""
import pytest
import torch

from fkd_ffcv.models.students import build_model
from fkd_ffcv.models.sret import SReT, SharedBlock, SlicedAttention, fixed_order, macs


@pytest.mark.parametrize('size, params, gmacs', [
    ('sret_t', 4.76e6, 1.11), ('sret_lt', 4.99e6, 1.16), ('sret_s', 20.9e6, 4.17)])
def test_sizes_match_the_paper(size, params, gmacs):
    model = SReT(size, 1000)
    assert abs(sum(p.numel() for p in model.parameters()) / params - 1) < 0.01
    assert abs(macs(model, 224) / 1e9 / gmacs - 1) < 0.03


def test_sliced_attention_attends_within_contiguous_groups():
    torch.manual_seed(0)
    attention = SlicedAttention(16, heads=2)
    x = torch.randn(2, 12, 16)

    def direct(tokens):  # plain multi-head attention over the given tokens only
        b, n, c = tokens.shape
        q, k, v = attention.qkv(tokens).view(b, n, 3, 2, c // 2).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-1, -2) / (c // 2) ** 0.5, dim=-1)
        return attention.proj((weights @ v).transpose(1, 2).reshape(b, n, c))

    with torch.no_grad():
        grouped = attention(x, groups=3)
        expected = torch.cat([direct(x[:, i:i + 4]) for i in (0, 4, 8)], dim=1)
        assert torch.allclose(grouped, expected, atol=1e-5)
        order = torch.randperm(12)
        permuted = attention(x, groups=2, order=order)
        # the groups are of the permuted tokens; each token's output lands where it came from
        chunks = [direct(x[:, order[:6]]), direct(x[:, order[6:]])]
        expected = torch.empty_like(x)
        expected[:, order] = torch.cat(chunks, dim=1)
        assert torch.allclose(permuted, expected, atol=1e-5)


def test_shared_blocks_hold_one_parameter_set_used_twice():
    model = SReT('sret_lt', 10, small_input=True)
    blocks = [m for m in model.modules() if isinstance(m, SharedBlock)]
    assert len(blocks) == sum((4, 10, 6)) // 2  # depth/2 per stage
    calls = {id(b): 0 for b in blocks}
    for block in blocks:
        block.register_forward_hook(lambda m, *_: calls.__setitem__(id(m), calls[id(m)] + 1))
    model(torch.zeros(1, 3, 32, 32))
    assert set(calls.values()) == {2}
    # each tensor once in the state dict: the export carries no copies
    pointers = [v.data_ptr() for k, v in model.state_dict().items() if v.numel() > 1]
    assert len(pointers) == len(set(pointers))


def test_evaluation_repeats_and_training_permutes():
    torch.manual_seed(0)
    model = SReT('sret_t', 5, small_input=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        again = SReT('sret_t', 5, small_input=True, seed=7).eval()
        again.load_state_dict({k: v for k, v in model.state_dict().items()
                               if not k.endswith('.seed')}, strict=False)
        assert not torch.equal(again(x), model(x))  # the same weights, other permutations
        again.load_state_dict(model.state_dict())  # the seed travels with the weights
        assert torch.equal(again(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))  # a new permutation per forward


def test_sides_the_groups_cannot_divide_are_refused_with_sides_that_work():
    model = SReT('sret_lt', 10).eval()
    with pytest.raises(ValueError, match=r'176 x 176 px input gives 22 x 22 = 484 tokens in '
                                         r'stage 1.*\[.*160, 192, .*224'):
        model(torch.zeros(1, 3, 176, 176))
    small = build_model('sret_lt', 10, small_input=True, image_size=32).eval()
    assert small.position_embedding(16, 16) is small.pos_embed
    with torch.no_grad():
        assert small(torch.zeros(1, 3, 64, 64)).shape == (1, 10)  # embedding resized to 32 x 32
    assert small.position_embedding(32, 32).shape == (1, 64, 32, 32)


def test_the_fixed_order_is_a_permutation_known_in_advance():
    order = fixed_order(3, 10)
    assert sorted(order.tolist()) == list(range(10))
    assert order.tolist() == fixed_order(3, 10).tolist() != fixed_order(4, 10).tolist()
    # pinned: the evaluation of saved weights must not change with numpy or torch versions
    assert fixed_order(0, 8).tolist() == [0, 7, 3, 1, 5, 4, 6, 2]
