"""SReT students: the Sliced Recursive Transformer (Shen, Liu and Xing, ECCV 2022), the second
ViT family FKD trains (SReT-LT: 78.7% top-1 with FKD at 5.0 M parameters).

Written from the paper and the sizes of its authors' model file:

- stem: three 3x3 convolutions (bias, BatchNorm, ReLU), channels 3 -> C/2 -> C -> C, each of
  stride 2 (224 px -> a 28 x 28 grid of C-channel tokens); `small_input` keeps only the first
  stride (32 px -> 16 x 16), so that the 32 px demo data gives token grids of 16/8/4 (ImageNet's
  are 28/14/7) that every group count divides, with 32 tokens per group in stage 1 (98 at
  224 px). A learnt position embedding of that grid is added, resized bicubically for other
  input sizes.
- three stages of widths 64/128/256 (SReT-T, -LT; head dimension 32) or 126/252/504 (SReT-S,
  42). A stage of depth D has D/2 shared blocks, each applied twice in a row; after every
  application an unshared mixing layer ("NLL": x = b1 x + b2 MLP(LN x)).
- a shared block: x = a1 x + a2 DropPath(Attn(LN x)); x = a3 x + a4 DropPath(MLP(LN x)), the
  scalars a1..a4 (initialised to 1) shared with the block; LayerNorm eps 1e-6.
- sliced group attention: the tokens, in row-major order, are split into G contiguous groups
  and attend within their group. In a block's first application G is 8/4/1 per stage, in the
  second 2/1/1, and there the tokens are permuted before grouping and put back after.
  Training draws a new permutation per block and forward, as the original does; evaluation
  uses a fixed one per block, from a seed stored with the weights (a buffer) through an
  integer hash, so it is the same on every machine and torch version (the original draws one
  in evaluation too, so its inference does not repeat); evaluation thus groups tokens as
  training does and repeats exactly.
- between stages, a depthwise-grouped 3x3 convolution of stride 2 doubles the channels; the
  head is a global average pool, LayerNorm and a Linear classifier (no class token).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# name -> head dimension, heads per stage, MLP ratio, NLL ratio (the depths and groups are
# the same for every size); tests/models/test_sret.py checks their parameter and MAC counts
SIZES = {
    'sret_t': dict(head_dim=32, heads=(2, 4, 8), mlp_ratio=3.6, nll_ratio=1.0),
    'sret_lt': dict(head_dim=32, heads=(2, 4, 8), mlp_ratio=4.0, nll_ratio=1.0),
    'sret_s': dict(head_dim=42, heads=(3, 6, 12), mlp_ratio=3.0, nll_ratio=2.0),
}
DEPTHS = (4, 10, 6)
GROUPS = ((8, 2), (4, 1), (1, 1))


def fixed_order(seed: int, n: int) -> torch.Tensor:
    """A permutation of n tokens from `seed` alone: tokens sorted by a splitmix64 hash of
    (seed, index), computed with numpy integers (the same everywhere, unlike torch.randperm,
    whose output torch does not promise to keep)."""
    with np.errstate(over='ignore'):
        x = np.arange(n, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return torch.from_numpy(np.argsort(x, kind='stable'))


def _mlp(width: int, ratio: float) -> nn.Sequential:
    hidden = int(width * ratio)
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: the branch dropped per sample with probability p."""
    if not training or p == 0:
        return x
    keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) >= p
    return x * keep.to(x.dtype) / (1 - p)


class SlicedAttention(nn.Module):
    """Multi-head attention within contiguous groups of tokens (optionally permuted first)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor, groups: int, order=None) -> torch.Tensor:
        b, n, c = x.shape
        if order is not None:
            x = x[:, order]
        qkv = self.qkv(x).view(b, groups, n // groups, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)  # each (b, groups, heads, n/groups, head dim)
        x = F.scaled_dot_product_attention(q, k, v).permute(0, 1, 3, 2, 4).reshape(b, n, c)
        if order is not None:
            x = x[:, torch.argsort(order)]
        return self.proj(x)


class SharedBlock(nn.Module):
    """The block a stage applies twice: attention and MLP residuals with learnt scalars."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = SlicedAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = _mlp(width, mlp_ratio)
        self.scales = nn.Parameter(torch.ones(4))  # a1..a4
        self.drop_path = drop_path

    def forward(self, x, groups: int, order=None):
        a = self.scales
        x = a[0] * x + a[1] * _drop_path(self.attn(self.norm1(x), groups, order),
                                         self.drop_path, self.training)
        return a[2] * x + a[3] * _drop_path(self.mlp(self.norm2(x)), self.drop_path,
                                            self.training)


class Mixer(nn.Module):
    """The unshared layer after each application of a shared block: x = b1 x + b2 MLP(LN x)."""

    def __init__(self, width: int, ratio: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = _mlp(width, ratio)
        self.scales = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return self.scales[0] * x + self.scales[1] * self.mlp(self.norm(x))


class Stage(nn.Module):
    """depth/2 shared blocks, each applied twice (groups g1, then g2 on permuted tokens), each
    application followed by its own Mixer."""

    def __init__(self, width: int, heads: int, depth: int, groups: tuple, mlp_ratio: float,
                 nll_ratio: float, drop_paths: list, seed: int):
        super().__init__()
        self.groups = groups
        self.blocks = nn.ModuleList(SharedBlock(width, heads, mlp_ratio, drop_paths[i])
                                    for i in range(depth // 2))
        self.mixers = nn.ModuleList(Mixer(width, nll_ratio) for _ in range(depth))
        self.register_buffer('seed', torch.tensor(seed), persistent=True)
        self._orders = {}  # (block, tokens, device) -> evaluation permutation

    def _load_from_state_dict(self, *args, **kwargs):
        self._orders.clear()  # another seed may come with the weights
        super()._load_from_state_dict(*args, **kwargs)

    def order(self, block: int, n: int, device) -> torch.Tensor:
        """The permutation of a block's second application: random in training, fixed per
        block in evaluation (computed once per token count and device)."""
        if self.training:
            return torch.randperm(n, device=device)
        key = (block, n, str(device))
        if key not in self._orders:
            self._orders[key] = fixed_order(int(self.seed) * 1000 + block, n).to(device)
        return self._orders[key]

    def forward(self, x):
        first, second = self.groups
        mixers = iter(self.mixers)
        for i, block in enumerate(self.blocks):
            x = next(mixers)(block(x, first))
            order = self.order(i, x.shape[1], x.device) if second > 1 else None
            x = next(mixers)(block(x, second, order))
        return x


class SReT(nn.Module):
    """An SReT of one of SIZES; `image_size` is the side its position embedding is learnt for
    (224, or 32 with `small_input`)."""

    def __init__(self, size: str, num_classes: int, image_size: int = 0,
                 small_input: bool = False, drop_path: float = 0.0, seed: int = 0):
        super().__init__()
        spec = SIZES[size]
        widths = [spec['head_dim'] * h for h in spec['heads']]
        self.name, self.strides = size, (2, 1, 1) if small_input else (2, 2, 2)
        stem, channels = [], 3
        for out, stride in zip((widths[0] // 2, widths[0], widths[0]), self.strides):
            stem += [nn.Conv2d(channels, out, 3, stride, 1), nn.BatchNorm2d(out),
                     nn.ReLU(inplace=True)]
            channels = out
        self.stem = nn.Sequential(*stem)
        grid = self.grid(image_size or (32 if small_input else 224))
        self.pos_embed = nn.Parameter(torch.zeros(1, widths[0], grid, grid))
        total, done = sum(DEPTHS), 0
        self.stages, self.pools = nn.ModuleList(), nn.ModuleList()
        for i, (width, heads, depth, groups) in enumerate(zip(widths, spec['heads'], DEPTHS,
                                                              GROUPS)):
            rates = [drop_path * (done + j) / total for j in range(depth)]
            done += depth
            self.stages.append(Stage(width, heads, depth, groups, spec['mlp_ratio'],
                                     spec['nll_ratio'], rates, seed + i))
            if i + 1 < len(widths):
                self.pools.append(nn.Conv2d(width, widths[i + 1], 3, 2, 1, groups=width))
        self.norm = nn.LayerNorm(widths[-1], eps=1e-6)
        self.head = nn.Linear(widths[-1], num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def grid(self, side: int) -> int:
        for stride in self.strides:
            side = (side - 1) // stride + 1
        return side

    def no_weight_decay(self) -> set:
        return {'pos_embed'}

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.head.in_features, num_classes)

    def check_input(self, height: int, width: int) -> None:
        """Raise ValueError, with sides that work, unless every stage's groups divide its
        token count at this input size."""
        def fits(h, w):
            h, w = self.grid(h), self.grid(w)
            for i, stage in enumerate(self.stages):
                if i:
                    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
                if any((h * w) % g for g in stage.groups):
                    return False, i, h, w
            return True, 0, h, w
        ok, stage, h, w = fits(height, width)
        if not ok:
            good = [s for s in range(16, 513, 16) if fits(s, s)[0]]
            groups = self.stages[stage].groups
            raise ValueError(f"{self.name}: a {height} x {width} px input gives {h} x {w} = "
                             f"{h * w} tokens in stage {stage + 1}, which its {groups[0]} and "
                             f"{groups[1]} groups must divide; square sides that work "
                             f"(multiples of 16 up to 512): {good}")

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        if self.pos_embed.shape[-2:] == (h, w):
            return self.pos_embed
        return F.interpolate(self.pos_embed, size=(h, w), mode='bicubic', align_corners=False)

    def forward(self, x):
        self.check_input(*x.shape[-2:])
        x = self.stem(x)
        x = x + self.position_embedding(*x.shape[-2:])
        for i, stage in enumerate(self.stages):
            if i:
                x = self.pools[i - 1](x)
            b, c, h, w = x.shape
            x = stage(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)
        return self.head(self.norm(x.mean(dim=(2, 3))))


def macs(model: SReT, side: int) -> int:
    """Multiply-accumulates of one forward at side x side, counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode
    counter, training = FlopCounterMode(display=False), model.training
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, side, side))
    model.train(training)
    return counter.get_total_flops() // 2

