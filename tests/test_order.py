import pytest
import torch

from image_transformer.nn.order import block_raster_2d, global_causal, make_layout, raster_1d


def visible_sets(layout):
    return {p: sorted(layout.visible(p).tolist()) for p in range(layout.n)}


@pytest.mark.parametrize("grid,lq,lm", [((5, 6), 7, 5), ((4, 4), 4, 8), ((3, 7), 21, 0), ((2, 3), 10, 3)])
def test_raster_1d_sees_its_block_and_the_memory_before_it(grid, lq, lm):
    layout = raster_1d(grid, lq, lm)
    n = grid[0] * grid[1]
    lq_eff = min(lq, n)
    assert layout.order.tolist() == list(range(n))
    for p, seen in visible_sets(layout).items():
        start = (p // lq_eff) * lq_eff
        assert seen == list(range(max(0, start - min(lm, n)), p + 1)), p


def test_global_sees_every_earlier_position():
    layout = global_causal((3, 4))
    for p, seen in visible_sets(layout).items():
        assert seen == list(range(p + 1))


@pytest.mark.parametrize("grid,q,f", [((5, 6), (2, 4), (1, 3)), ((4, 8), (2, 2), (2, 1)), ((7, 5), (3, 2), (0, 0)),
                                      ((2, 2), (4, 4), (1, 1))])
def test_block_raster_2d_matches_brute_force(grid, q, f):
    rows, cols = grid
    layout = block_raster_2d(grid, q, f)
    qh, qw = min(q[0], rows), min(q[1], cols)
    # brute-force block-raster order
    blocks = [(bi, bj) for bi in range(-(-rows // qh)) for bj in range(-(-cols // qw))]
    order = [r * cols + c for bi, bj in blocks
             for r in range(bi * qh, bi * qh + qh) for c in range(bj * qw, bj * qw + qw)
             if r < rows and c < cols]
    assert layout.order.tolist() == order
    rank = {p: i for i, p in enumerate(order)}
    for p, seen in visible_sets(layout).items():
        r, c = divmod(p, cols)
        top, left = (r // qh) * qh, (c // qw) * qw
        expect = sorted(rr * cols + cc
                        for rr in range(top - f[0], top + qh) for cc in range(left - f[1], left + qw + f[1])
                        if 0 <= rr < rows and 0 <= cc < cols and rank[rr * cols + cc] <= rank[p])
        assert seen == expect, p


def test_prev_is_the_previous_position_in_generation_order():
    layout = block_raster_2d((4, 6), (2, 4), (1, 1))
    order = layout.order.tolist()
    assert layout.prev[order[0]] == layout.n
    for a, b in zip(order, order[1:]):
        assert layout.prev[b] == a


def test_slot_scatters_back_to_every_position_once():
    layout = block_raster_2d((5, 7), (2, 3), (1, 2))
    flat = layout.query_index.reshape(-1)
    assert torch.equal(flat[layout.slot], torch.arange(layout.n))


def test_gather_tables_point_padding_at_a_real_position_that_no_real_query_sees():
    for layout in (raster_1d((4, 7), 5, 3), block_raster_2d((5, 7), (2, 3), (1, 2)), raster_1d((4, 6), 6, 6)):
        n = layout.n
        for index, gather in ((layout.query_index, layout.query_gather), (layout.memory_index, layout.memory_gather)):
            pad = index == n
            assert torch.equal(gather[~pad], index[~pad]) and bool((gather[pad] == 0).all())
        real_query = (layout.query_index < n)[:, :, None]
        padded_memory = (layout.memory_index == n)[:, None, :]
        assert not bool((layout.mask & real_query & padded_memory).any())
    assert raster_1d((4, 6), 6, 6).in_place and raster_1d((4, 6), 24, 0).in_place
    assert not raster_1d((4, 7), 5, 3).in_place  # the last block is padded
    assert not block_raster_2d((4, 8), (2, 4), (1, 1)).in_place  # blocks are rectangles, not runs of the grid


def test_local_memory_grows_linearly_with_positions():
    small = raster_1d((16, 16 * 3), 64, 64)
    big = raster_1d((64, 64 * 3), 64, 64)
    ratio = big.mask.numel() / small.mask.numel()
    assert ratio == pytest.approx(big.n / small.n, rel=0.01)
    small2 = block_raster_2d((16, 48), (4, 8), (2, 4))
    big2 = block_raster_2d((64, 192), (4, 8), (2, 4))
    assert big2.mask.numel() / small2.mask.numel() == pytest.approx(big2.n / small2.n, rel=0.01)


def test_make_layout_rejects_unknown_type():
    with pytest.raises(ValueError, match="unknown attention type"):
        make_layout("dilated", (4, 4))


@pytest.mark.parametrize("kind,kw", [
    ("local_1d", dict(query_length=5, memory_length=3)),
    ("local_1d", dict(query_length=4, memory_length=0)),
    ("global", {}),
    ("local_2d", dict(query_shape=(2, 3), memory_flange=(1, 2))),
    ("local_2d", dict(query_shape=(2, 2), memory_flange=(0, 3))),
    ("local_2d", dict(query_shape=(3, 5), memory_flange=(2, 0))),
])
def test_step_plan_reads_exactly_the_visible_steps(kind, kw):
    layout = make_layout(kind, (5, 7), **kw)
    plan = layout.step_plan()
    assert plan is layout.step_plan()  # computed once per layout
    assert plan.contiguous == (kind != "local_2d")
    for t, p in enumerate(layout.order.tolist()):
        b = plan.block[t]
        if plan.contiguous:
            read = list(range(plan.low[t], t + 1))
        else:
            read = plan.earlier[b].tolist() + list(range(plan.first[b], t + 1))
        assert len(read) <= plan.max_earlier + plan.max_block
        assert read == sorted(layout.rank[layout.visible(p)].tolist()), (t, p)


def test_the_unmasked_layout_lets_every_position_see_every_position():
    from image_transformer.nn.order import unmasked

    layout = unmasked((3, 4))
    assert layout.full and layout.mask.shape == (1, 12, 12) and bool(layout.mask.all())
    assert all(layout.visible(p).tolist() == list(range(12)) for p in range(12))
    assert not make_layout("global", (3, 4)).full and not make_layout("local_1d", (3, 4), 4, 4).full
