import math

import pytest
import torch

from image_transformer.nn.attention import BlockSelfAttention, KVCache
from image_transformer.nn.order import make_layout

LAYOUTS = {
    "local_1d": dict(query_length=5, memory_length=3),
    "global": {},
    "local_2d": dict(query_shape=(2, 3), memory_flange=(1, 2)),
}


def dense_reference(attn: BlockSelfAttention, x: torch.Tensor, layout) -> torch.Tensor:
    """Plain softmax attention over an n x n mask built from the layout's visible sets."""
    n = layout.n
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for p in range(n):
        allowed[p, layout.visible(p)] = True
    q, k, v = attn.qkv(x).chunk(3, -1)
    b, h = x.shape[0], attn.heads
    q, k, v = (t.reshape(b, n, h, -1).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
    return attn.out(y)


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_block_attention_equals_dense_masked_attention(kind):
    torch.manual_seed(0)
    layout = make_layout(kind, (4, 7), **LAYOUTS[kind])
    attn = BlockSelfAttention(16, 4).double()
    x = torch.randn(2, layout.n, 16, dtype=torch.float64)
    assert torch.allclose(attn(x, layout), dense_reference(attn, x, layout), atol=1e-10)


@pytest.mark.parametrize("query_length", [7, 28])
def test_block_attention_without_a_gather_equals_dense_masked_attention(query_length):
    """1D blocks that cut the grid exactly (and global) take queries as a view and scatter nothing back."""
    torch.manual_seed(0)
    layout = make_layout("local_1d", (4, 7), query_length=query_length, memory_length=7)
    assert layout.in_place
    attn = BlockSelfAttention(16, 4).double()
    x = torch.randn(2, layout.n, 16, dtype=torch.float64)
    assert torch.allclose(attn(x, layout), dense_reference(attn, x, layout), atol=1e-10)


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_block_attention_is_causal_in_generation_order(kind):
    torch.manual_seed(0)
    layout = make_layout(kind, (4, 7), **LAYOUTS[kind])
    attn = BlockSelfAttention(8, 2).double()
    x = torch.randn(1, layout.n, 8, dtype=torch.float64, requires_grad=True)
    y = attn(x, layout)
    for p in range(layout.n):
        (grad,) = torch.autograd.grad(y[0, p].sum(), x, retain_graph=True)
        touched = grad[0].abs().sum(-1) > 0
        later = layout.rank > layout.rank[p]
        assert not (touched & later).any(), p


@pytest.mark.parametrize("kind", list(LAYOUTS))
@pytest.mark.parametrize("steps", [0, 1, 4, 7, 15])
def test_cached_step_equals_forward(kind, steps):
    """After a parallel pass over the first ``steps`` steps (0: none), every later step equals the full pass."""
    torch.manual_seed(0)
    layout = make_layout(kind, (3, 5), **LAYOUTS[kind])
    attn = BlockSelfAttention(8, 2).double()
    x = torch.randn(2, layout.n, 8, dtype=torch.float64)
    full = attn(x, layout)
    cache = KVCache(2, layout.step_plan(), 2, 4, x.device, x.dtype)
    with torch.no_grad():  # as the sampler runs
        assert torch.equal(attn(x, layout, cache, steps), full)
        for t, p in enumerate(layout.order.tolist()[steps:], steps):
            y = attn.step(x[:, p], cache, t)
            assert torch.allclose(y, full[:, p], atol=1e-10), t
