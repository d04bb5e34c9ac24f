"""Losses against a literal per-report transcription of GLoRIA's gloria_loss.py (float64)."""

import math

import pytest
import torch
import torch.nn as nn

from medmoe.losses import (
    MedMoELoss,
    auxiliary_loss,
    global_contrastive_loss,
    local_contrastive_loss,
    local_similarity,
    word_attention,
)
from medmoe.model.gate import Route

# ---------------------------------------------------------------- reference (GLoRIA code)


def ref_cosine_similarity(x1, x2, dim=1, eps=1e-8):
    w12 = torch.sum(x1 * x2, dim)
    w1 = torch.norm(x1, 2, dim)
    w2 = torch.norm(x2, 2, dim)
    return (w12 / (w1 * w2).clamp(min=eps)).squeeze()


def ref_attention_fn(query, context, temp1):
    batch_size, queryL = query.size(0), query.size(2)
    ih, iw = context.size(2), context.size(3)
    sourceL = ih * iw
    context = context.view(batch_size, -1, sourceL)
    contextT = torch.transpose(context, 1, 2).contiguous()
    attn = torch.bmm(contextT, query)
    attn = attn.view(batch_size * sourceL, queryL)
    attn = nn.Softmax(dim=-1)(attn)
    attn = attn.view(batch_size, sourceL, queryL)
    attn = torch.transpose(attn, 1, 2).contiguous()
    attn = attn.view(batch_size * queryL, sourceL)
    attn = attn * temp1
    attn = nn.Softmax(dim=-1)(attn)
    attn = attn.view(batch_size, queryL, sourceL)
    attnT = torch.transpose(attn, 1, 2).contiguous()
    weightedContext = torch.bmm(context, attnT)
    return weightedContext, attn.view(batch_size, -1, ih, iw)


def ref_global_loss(cnn_code, rnn_code, eps=1e-8, temp3=10.0):
    batch_size = cnn_code.shape[0]
    labels = torch.arange(batch_size)
    cnn_code = cnn_code.unsqueeze(0)
    rnn_code = rnn_code.unsqueeze(0)
    cnn_code_norm = torch.norm(cnn_code, 2, dim=2, keepdim=True)
    rnn_code_norm = torch.norm(rnn_code, 2, dim=2, keepdim=True)
    scores0 = torch.bmm(cnn_code, rnn_code.transpose(1, 2))
    norm0 = torch.bmm(cnn_code_norm, rnn_code_norm.transpose(1, 2))
    scores0 = scores0 / norm0.clamp(min=eps) * temp3
    scores0 = scores0.squeeze()
    scores1 = scores0.transpose(0, 1)
    return nn.CrossEntropyLoss()(scores0, labels), nn.CrossEntropyLoss()(scores1, labels)


def ref_local_loss(img_features, words, cap_lens, temp1=4.0, temp2=5.0, temp3=10.0, agg="sum"):
    """GLoRIA local_loss; ``words`` is ours ([B, N, D], no [CLS]) -> GLoRIA's [B, D, N]."""
    words_emb = words.transpose(1, 2)
    batch_size = img_features.shape[0]
    att_maps = []
    similarities = []
    for i in range(words_emb.shape[0]):
        words_num = int(cap_lens[i])
        word = words_emb[i, :, :words_num].unsqueeze(0).contiguous()
        word = word.repeat(batch_size, 1, 1)
        weiContext, attn = ref_attention_fn(word, img_features, temp1)
        att_maps.append(attn[i].unsqueeze(0).contiguous())
        word = word.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        weiContext = weiContext.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        row_sim = ref_cosine_similarity(word, weiContext).view(batch_size, words_num)
        row_sim = row_sim.mul(temp2).exp()
        if agg == "sum":
            row_sim = row_sim.sum(dim=1, keepdim=True)
        else:
            row_sim = row_sim.mean(dim=1, keepdim=True)
        similarities.append(torch.log(row_sim))
    similarities = torch.cat(similarities, 1) * temp3
    labels = torch.arange(batch_size)
    loss0 = nn.CrossEntropyLoss()(similarities, labels)
    loss1 = nn.CrossEntropyLoss()(similarities.transpose(0, 1), labels)
    return loss0, loss1, att_maps


def ref_zero_shot_local(img_features, words, cap_lens, temp1=4.0, temp2=5.0):
    """GLoRIA ``get_local_similarities`` (zero-shot): [images, reports]."""
    words_emb = words.transpose(1, 2)
    batch_size = img_features.shape[0]
    similarities = []
    for i in range(words_emb.shape[0]):
        words_num = int(cap_lens[i])
        word = words_emb[i, :, :words_num].unsqueeze(0).contiguous().repeat(batch_size, 1, 1)
        weiContext, _ = ref_attention_fn(word, img_features, temp1)
        word = word.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        weiContext = weiContext.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        row_sim = ref_cosine_similarity(word, weiContext).view(batch_size, words_num)
        row_sim, _ = torch.max(row_sim.mul(temp2).exp(), dim=1, keepdim=True)
        similarities.append(torch.log(row_sim))
    return torch.cat(similarities, 1)


def ref_cosine_local_loss(img_features, words, cap_lens, temp1=10.0, temp2=5.0, temp3=10.0, agg="sum"):
    """The local loss with ``attention="cosine"``, written out pair by pair: each word's attention over the
    regions is softmax_s(temp1 * cos(t_n, v_s)), its context the weighted sum of the regions."""
    b = img_features.shape[0]
    regions = img_features.flatten(2)  # [B, D, S]
    scores = torch.empty(b, b, dtype=img_features.dtype)  # [image, report]
    maps = []
    for i in range(b):
        t = words[i, : int(cap_lens[i])]  # [n, D]
        for j in range(b):
            cos = torch.stack([torch.stack([torch.nn.functional.cosine_similarity(t[k], regions[j][:, s], dim=0)
                                            for s in range(regions.shape[2])]) for k in range(len(t))])
            attention = torch.softmax(temp1 * cos, dim=1)  # [n, S]
            if i == j:
                maps.append(attention)
            context = attention @ regions[j].T  # [n, D]
            sim = torch.exp(temp2 * ref_cosine_similarity(t, context))
            sim = sim.sum() if agg == "sum" else sim.mean()
            scores[j, i] = torch.log(sim)
    scores = scores * temp3
    labels = torch.arange(b)
    return nn.CrossEntropyLoss()(scores, labels), nn.CrossEntropyLoss()(scores.T, labels), maps


# ---------------------------------------------------------------- fixtures


def make_inputs(lengths=(1, 5, 3, 7), n=8, d=6, h=3, w=5, seed=0, garbage=True):
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    regions = torch.randn(b, d, h, w, generator=g, dtype=torch.float64)
    words = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    lengths = torch.tensor(lengths, dtype=torch.long)
    if garbage:  # padding must not matter
        pad = torch.arange(n)[None] >= lengths[:, None]
        words[pad] = 1e3 * torch.randn(int(pad.sum()), d, generator=g, dtype=torch.float64)
    return regions, words, lengths


def grads(loss_fn, regions, words):
    r = regions.clone().requires_grad_(True)
    w = words.clone().requires_grad_(True)
    out = loss_fn(r, w)
    gr, gw = torch.autograd.grad(out, (r, w))
    return out.detach(), gr, gw


# ---------------------------------------------------------------- global


def test_global_matches_gloria():
    g = torch.Generator().manual_seed(1)
    img = torch.randn(5, 7, generator=g, dtype=torch.float64)
    txt = torch.randn(5, 7, generator=g, dtype=torch.float64)
    for t3 in (10.0, 3.0):
        ours = global_contrastive_loss(img, txt, t3)
        ref = ref_global_loss(img, txt, temp3=t3)
        for a, b in zip(ours, ref):
            assert abs(a.item() - b.item()) < 1e-6
    # image_to_text is the row (image) direction: make it differ from text_to_image
    assert abs(ours[0].item() - ours[1].item()) > 1e-6
    # zero vectors hit the eps clamp exactly like GLoRIA
    img[0] = 0
    for a, b in zip(global_contrastive_loss(img, txt), ref_global_loss(img, txt)):
        assert abs(a.item() - b.item()) < 1e-6


def test_global_gradients_match():
    g = torch.Generator().manual_seed(2)
    img = torch.randn(4, 5, generator=g, dtype=torch.float64)
    txt = torch.randn(4, 5, generator=g, dtype=torch.float64)
    _, a1, a2 = grads(lambda a, b: sum(global_contrastive_loss(a, b)), img, txt)
    _, b1, b2 = grads(lambda a, b: sum(ref_global_loss(a, b)), img, txt)
    assert torch.allclose(a1, b1, atol=1e-9) and torch.allclose(a2, b2, atol=1e-9)


# ---------------------------------------------------------------- local


@pytest.mark.parametrize("agg", ["sum", "mean"])
@pytest.mark.parametrize("temps", [(4.0, 5.0, 10.0), (2.0, 3.0, 1.5)])
def test_local_matches_gloria_ragged(agg, temps):
    regions, words, lengths = make_inputs()  # non-square 3x5 grid, lengths [1, 5, 3, 7] of 8
    t1, t2, t3 = temps
    i2t, t2i = local_contrastive_loss(regions, words, lengths, t1, t2, t3, agg)
    r0, r1, ratt = ref_local_loss(regions, words, lengths, t1, t2, t3, agg)
    assert abs(i2t.item() - r0.item()) < 1e-6
    assert abs(t2i.item() - r1.item()) < 1e-6
    assert abs(i2t.item() - t2i.item()) > 1e-6  # directions are not swapped by accident
    att = word_attention(regions, words, lengths, t1)  # GLoRIA's att_maps of each report's own image
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(att[i, :n], ratt[i][0], atol=1e-12)


@pytest.mark.parametrize("agg", ["sum", "mean"])
def test_cosine_attention_matches_its_literal_form(agg):
    regions, words, lengths = make_inputs(seed=11)

    def ours(r, w):
        a, b = local_contrastive_loss(r, w, lengths, 10.0, 5.0, 10.0, agg, attention="cosine")
        return a + 0.7 * b

    def ref(r, w):
        a, b, _ = ref_cosine_local_loss(r, w, lengths, agg=agg)
        return a + 0.7 * b

    v1, gr1, gw1 = grads(ours, regions, words)
    v2, gr2, gw2 = grads(ref, regions, words)
    assert abs(v1.item() - v2.item()) < 1e-9
    assert torch.allclose(gr1, gr2, rtol=1e-7, atol=1e-10) and torch.allclose(gw1, gw2, rtol=1e-7, atol=1e-10)
    _, _, maps = ref_cosine_local_loss(regions, words, lengths)
    att = word_attention(regions, words, lengths, 10.0, "cosine")
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(att[i, :n].flatten(1), maps[i], atol=1e-12)
    # a multiple of a word or a region attends the same: cosines, not products dominated by norms
    scaled = word_attention(regions * torch.linspace(0.1, 10, regions.shape[-1], dtype=regions.dtype), words * 7.0,
                            lengths, 10.0, "cosine")
    assert torch.allclose(att, scaled, atol=1e-12)
    with pytest.raises(ValueError, match="attention must be one of"):
        local_contrastive_loss(regions, words, lengths, attention="dot")


def test_cosine_attention_peak_is_not_bounded_by_the_word_softmax():
    """GLoRIA's attention gives one region at most e^temp1 times another's weight; the cosine form lets a
    word that matches one region of 36 put most of its weight there."""
    d = 8
    regions = torch.zeros(1, d, 6, 6, dtype=torch.float64)
    regions[0, 1] = 1.0  # every region along axis 1 ...
    regions[0, :, 2, 3] = 0.0
    regions[0, 0, 2, 3] = 1.0  # ... but one along axis 0, which the first word names
    words = torch.zeros(1, 2, d, dtype=torch.float64)
    words[0, 0, 0], words[0, 1, 1] = 1.0, 1.0
    cosine = word_attention(regions, words, torch.tensor([2]), 10.0, "cosine")[0, 0]
    gloria = word_attention(regions, words, torch.tensor([2]), 4.0, "gloria")[0, 0]
    assert cosine[2, 3] > 0.99 and gloria[2, 3] < math.exp(4) / (math.exp(4) + 35)


@pytest.mark.parametrize("agg", ["sum", "mean"])
def test_local_padding_is_ignored(agg):
    regions, words, lengths = make_inputs(seed=3)
    base = local_contrastive_loss(regions, words, lengths, agg=agg)
    words2 = words.clone()
    pad = torch.arange(words.shape[1])[None] >= lengths[:, None]
    words2[pad] = float("nan")
    other = local_contrastive_loss(regions, words2, lengths, agg=agg)
    for a, b in zip(base, other):
        assert torch.equal(a, b)
    # nothing leaks into gradients either
    _, gr, gw = grads(lambda r, w: sum(local_contrastive_loss(r, w, lengths, agg=agg)), regions, words2)
    assert torch.isfinite(gr).all() and (gw[pad] == 0).all() and torch.isfinite(gw[~pad]).all()


@pytest.mark.parametrize("agg", ["sum", "mean"])
def test_local_gradients_match_gloria(agg):
    regions, words, lengths = make_inputs(seed=4)

    def ours(r, w):
        a, b = local_contrastive_loss(r, w, lengths, agg=agg)
        return a + 0.7 * b

    def ref(r, w):
        a, b, _ = ref_local_loss(r, w, lengths, agg=agg)
        return a + 0.7 * b

    v1, gr1, gw1 = grads(ours, regions, words)
    v2, gr2, gw2 = grads(ref, regions, words)
    assert abs(v1.item() - v2.item()) < 1e-6
    assert torch.allclose(gr1, gr2, rtol=1e-7, atol=1e-10)
    assert torch.allclose(gw1, gw2, rtol=1e-7, atol=1e-10)
    pad = torch.arange(words.shape[1])[None] >= lengths[:, None]
    assert (gw1[pad] == 0).all()


@pytest.mark.parametrize("agg, attention", [("sum", "gloria"), ("mean", "gloria"), ("sum", "cosine")])
def test_local_chunked_equals_unchunked(agg, attention):
    regions, words, lengths = make_inputs(lengths=(2, 6, 1, 4, 8, 3, 5), seed=5)
    n, d, s = words.shape[1], words.shape[2], regions.shape[2] * regions.shape[3]
    per_pair = n * max(s, d) * 8

    def run(budget):
        def f(r, w):
            a, b = local_contrastive_loss(r, w, lengths, agg=agg, attention=attention, block_bytes=budget)
            return a + 0.3 * b

        return grads(f, regions, words)

    full = run(None)
    for budget in (per_pair, 5 * per_pair):  # one pair per block; a few pairs per block
        part = run(budget)
        assert abs(full[0].item() - part[0].item()) < 1e-10
        assert torch.allclose(full[1], part[1], rtol=1e-9, atol=1e-12)
        assert torch.allclose(full[2], part[2], rtol=1e-9, atol=1e-12)
    # also without autograd (no checkpoint)
    with torch.no_grad():
        a = local_contrastive_loss(regions, words, lengths, agg=agg, attention=attention, block_bytes=3 * per_pair)
        b = local_contrastive_loss(regions, words, lengths, agg=agg, attention=attention)
    assert torch.allclose(a[0], b[0], atol=1e-10) and torch.allclose(a[1], b[1], atol=1e-10)


def test_local_chunked_uses_checkpoint(monkeypatch):
    import medmoe.losses as L

    calls = []
    real = L.checkpoint

    def spy(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real(*args, **kwargs)

    monkeypatch.setattr(L, "checkpoint", spy)
    regions, words, lengths = make_inputs()
    r = regions.clone().requires_grad_(True)
    per_pair = words.shape[1] * max(15, 6) * 8
    a, b = local_contrastive_loss(r, words, lengths, block_bytes=per_pair)
    (a + b).backward()
    assert len(calls) >= 8 and all(c is False for c in calls)  # 4 image chunks x >= 2 report blocks
    calls.clear()
    local_contrastive_loss(r, words, lengths)  # single block: no checkpoint needed
    assert calls == []


def test_attention_shape_and_normalisation():
    regions, words, lengths = make_inputs(h=4, w=3)
    r = regions.clone().requires_grad_(True)
    att = word_attention(r, words, lengths)
    assert att.shape == (4, 8, 4, 3)
    assert not att.requires_grad
    sums = att.flatten(2).sum(-1)
    real = torch.arange(8)[None] < lengths[:, None]
    assert torch.allclose(sums[real], torch.ones(int(real.sum()), dtype=sums.dtype))
    assert (att[~real] == 0).all()


def test_aligned_beats_shuffled():
    g = torch.Generator().manual_seed(6)
    b, n, d, h = 6, 5, 16, 4
    regions = torch.randn(b, d, h, h, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 3, 4, 2, 5, 1])
    # each word copies one region of its own image -> perfectly aligned
    idx = torch.randint(0, h * h, (b, n), generator=g)
    words = torch.gather(regions.flatten(2).transpose(1, 2), 1, idx[..., None].expand(b, n, d)).clone()
    aligned = sum(local_contrastive_loss(regions, words, lengths))
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    shuffled = sum(local_contrastive_loss(regions[perm], words, lengths))
    assert aligned < shuffled
    img = regions.mean((2, 3))
    assert sum(global_contrastive_loss(img, img)) < sum(global_contrastive_loss(img[perm], img))


def test_float32_close_to_float64():
    regions, words, lengths = make_inputs(garbage=False)
    a = local_contrastive_loss(regions, words, lengths)
    b = local_contrastive_loss(regions.float(), words.float(), lengths)
    assert b[0].dtype == torch.float32
    assert abs(a[0].item() - b[0].item()) < 1e-4


def test_local_rejects_bad_lengths():
    regions, words, _ = make_inputs()
    with pytest.raises(ValueError):
        local_contrastive_loss(regions, words, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError):
        local_contrastive_loss(regions, words, torch.tensor([1, 2, 3, 9]))
    with pytest.raises(ValueError):
        local_contrastive_loss(regions, words, torch.tensor([1, 2, 3, 4]), agg="max")


# ---------------------------------------------------------------- auxiliary and total


def test_auxiliary_ignores_unknown():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([2, -1, 0, -1, 1])
    known = target >= 0
    loss = auxiliary_loss(logits, target)
    ref = nn.functional.cross_entropy(logits[known], target[known])
    assert abs(loss.item() - ref.item()) < 1e-12
    loss.backward()
    assert (logits.grad[~known] == 0).all()


def test_auxiliary_nothing_labelled_is_zero_with_graph():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = auxiliary_loss(logits, torch.full((4,), -1))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def route(image_logits, text_logits, target):
    return Route(image_logits.argmax(1), None, image_logits, text_logits, target)


def test_medmoe_loss_from_config_takes_its_temperatures_and_weights():
    from medmoe.config import load_config

    config = load_config("tiny", recipe="paper", temp1=3.0, local_agg="mean")
    loss = MedMoELoss.from_config(config, gather=False)
    assert (loss.temp1, loss.temp2, loss.temp3, loss.agg) == (3.0, config.temp2, config.temp3, "mean")
    assert (loss.w_global, loss.w_local, loss.w_aux, loss.gather) == (0.5, 0.5, 2.0, False)


def test_medmoe_loss_total_is_weighted_sum():
    regions, words, lengths = make_inputs(seed=8)
    g = torch.Generator().manual_seed(9)
    img = torch.randn(4, 6, generator=g, dtype=torch.float64)
    txt = torch.randn(4, 6, generator=g, dtype=torch.float64)
    router = [torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)]
    target = torch.tensor([0, -1, 2, 1])
    crit = MedMoELoss(agg="mean", w_global=0.5, w_local=2.0, w_aux=0.25)
    out = crit(img, txt, regions, words, lengths, route(*router, target=target))
    assert set(out) == {"global", "local", "aux", "total"}
    glob = sum(ref_global_loss(img, txt))
    loc = sum(ref_local_loss(regions, words, lengths, agg="mean")[:2])
    aux = (auxiliary_loss(router[0], target) + auxiliary_loss(router[1], target)) / 2  # lambda applies once
    assert abs(out["global"].item() - glob.item()) < 1e-6
    assert abs(out["local"].item() - loc.item()) < 1e-6
    assert abs(out["aux"].item() - aux.item()) < 1e-12
    want = 0.5 * out["global"] + 2.0 * out["local"] + 0.25 * out["aux"]
    assert abs(out["total"].item() - want.item()) < 1e-12
    # no routers / no target -> aux is 0
    for r in (None, route(*router, target=None)):
        out = crit(img, txt, regions, words, lengths, r)
        assert out["aux"].item() == 0.0
        assert abs(out["total"].item() - (0.5 * out["global"] + 2.0 * out["local"]).item()) < 1e-12


def test_medmoe_loss_backward_reaches_all_inputs():
    regions, words, lengths = make_inputs(seed=10, garbage=False)
    regions.requires_grad_(True)
    words.requires_grad_(True)
    img = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    txt = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    router = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    out = MedMoELoss()(img, txt, regions, words, lengths, route(router, None, target=torch.tensor([0, 1, 2, -1])))
    out["total"].backward()
    for t in (regions, words, img, txt, router):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_length_blocks_match_reference(monkeypatch):
    """Reports cut into many length blocks (no checkpoint) still match GLoRIA exactly."""
    import medmoe.losses as L

    monkeypatch.setattr(L, "MIN_BLOCK_ROWS", 0)
    regions, words, lengths = make_inputs(lengths=(3, 8, 1, 6, 2, 8, 5), seed=11)
    lens = sorted(lengths.tolist(), reverse=True)
    _, blocks = L._report_blocks(lens, 7, 15 * 8, L.LOCAL_BLOCK_BYTES)
    assert len(blocks) > 3 and all(nb == lens[st] for st, _, nb in blocks)
    v1, gr1, gw1 = grads(lambda r, w: sum(local_contrastive_loss(r, w, lengths, agg="mean")), regions, words)
    v2, gr2, gw2 = grads(lambda r, w: sum(ref_local_loss(r, w, lengths, agg="mean")[:2]), regions, words)
    assert abs(v1.item() - v2.item()) < 1e-6
    assert torch.allclose(gr1, gr2, rtol=1e-7, atol=1e-10) and torch.allclose(gw1, gw2, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("budget_pairs", [1, 3, 10, 1000])
def test_block_plan_respects_budget(budget_pairs):
    from medmoe.losses import _report_blocks

    lens = sorted(torch.randint(1, 33, (50,), generator=torch.Generator().manual_seed(budget_pairs)).tolist(), reverse=True)
    row = 4096
    budget = budget_pairs * 32 * row
    bj, blocks = _report_blocks(lens, 50, row, budget)
    assert blocks[0][0] == 0 and blocks[-1][1] == 50
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    for st, en, nb in blocks:
        assert nb == max(lens[st:en])
        assert (en - st) * bj * nb * row <= budget or (en - st == 1 and bj == 1)


def test_local_similarity_matches_gloria_zero_shot_and_training_scores():
    regions, words, lengths = make_inputs()
    images = torch.cat([regions, regions.flip(0)[:2]])  # 6 images against 4 reports
    torch.testing.assert_close(local_similarity(images, words, lengths, 4.0, 5.0, "max"),
                               ref_zero_shot_local(images, words, lengths, 4.0, 5.0), rtol=1e-9, atol=1e-9)
    with torch.no_grad():  # sum: the pair scores the local loss contrasts (its logits are temp3 x these)
        expected = local_contrastive_loss(regions, words, lengths, temp3=1.0)[0]
    scores = local_similarity(regions, words, lengths, agg="sum")
    got = torch.nn.functional.cross_entropy(scores, torch.arange(4))
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="agg"):
        local_similarity(regions, words, lengths, agg="median")


def test_auxiliary_class_weight_is_a_weighted_mean_and_lifts_the_rare_class():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 3, generator=g, dtype=torch.float64)
    target = torch.tensor([0, 0, 0, 0, 0, 1, 2, -1])
    weight = torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64)
    expected = nn.functional.cross_entropy(logits[:7], target[:7], weight=weight)  # unknown row dropped
    torch.testing.assert_close(auxiliary_loss(logits, target, weight), expected)
    torch.testing.assert_close(auxiliary_loss(logits, target, torch.ones(3, dtype=torch.float64)),
                               auxiliary_loss(logits, target))
    rare = logits.clone().requires_grad_()
    auxiliary_loss(rare, target, weight).backward()
    plain = logits.clone().requires_grad_()
    auxiliary_loss(plain, target).backward()
    assert rare.grad[6].abs().sum() > plain.grad[6].abs().sum()  # the rare class's row pulls harder
