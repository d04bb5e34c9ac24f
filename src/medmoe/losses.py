"""MedMoE training objectives (paper Sections 4.4-4.6).

MedMoE (arXiv 2506.08356) is trained with GLoRIA's two contrastive objectives plus an
auxiliary report-type loss:

* Sec. 4.4, global contrastive loss: cosine similarity between the image embedding
  ``v_g`` and the report embedding ``t_g`` scaled by ``temp3``, cross-entropy against the
  matching pair in both directions (image -> text and text -> image).
* Sec. 4.4, local (word-region) contrastive loss: every word ``t_n`` of report ``i``
  attends over the regions ``v_s`` of image ``j`` (``a_ns = softmax_s(temp1 * s_ns)``),
  giving a word-specific image context ``c_n = sum_s a_ns v_s``; the pair score is
  ``Z(i, j) = log sum_n exp(temp2 * cos(c_n, t_n))`` (or the mean over words), and
  ``temp3 * Z`` is contrasted in both directions exactly like the global score.
* Sec. 4.5, auxiliary loss ``L_aux = CE(W_c t_g, y)``: cross-entropy of the report-type
  (router) logits against the report-type label ``y``.
* Sec. 4.6, ``L_total = L_global + L_local + lambda * L_aux``.

Where the paper text and GLoRIA's released code (``gloria/loss/gloria_loss.py``) differ in
detail we follow the code, so values agree with GLoRIA to 1e-6 in float64:

* ``s_ns`` is first normalised by a softmax over the report's *words* for every region
  and only then multiplied by ``temp1`` and normalised over regions (``attention_fn``);
* cosine similarities divide by ``clamp(|x| * |y|, min=1e-8)``;
* ``agg="sum"`` uses ``log sum_n exp``, ``agg="mean"`` ``log mean_n exp``;
* the loss of each direction is the batch mean of the cross-entropy, and the training
  objective sums both directions (``global = i2t + t2i``, ``local = i2t + t2i``).

Unlike GLoRIA, ``words`` carries no [CLS] column: report ``i``'s words are
``words[i, :lengths[i]]``, everything after is padding and never influences the result.

The local loss scores every (report, image) pair of the batch at once with batched matrix
products instead of GLoRIA's per-report loop; padded words are masked out of the softmax
over words and out of the aggregation. Reports are taken longest first in blocks of
similar length, each block cut to its own longest report, so little work goes to padding.
Work is split into blocks of reports x images whose largest intermediate
([images, reports, words, max(H*W, D)]) stays under ``LOCAL_BLOCK_BYTES``; when the whole
batch does not fit in that budget and autograd is on, every block runs under
``torch.utils.checkpoint(..., use_reentrant=False)`` so backward memory is bounded too
(at the price of recomputing each block's forward once). ``lengths`` is read on the host.

Under data-parallel training (``medmoe.distributed``), the global loss gathers every rank's
embeddings with their gradients and scores this rank's samples against all of them (the
local loss too with ``gather=True``), weighted by the rank's share of the global batch:
averaged over ranks, as DDP averages gradients, loss and gradient equal those of the
concatenated global batch.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .config import ATTENTIONS, LOCAL_AGGS
from .distributed import all_gather_with_grad, is_distributed
from .precision import upcast

__all__ = [
    "EPS",
    "LOCAL_BLOCK_BYTES",
    "MIN_BLOCK_ROWS",
    "global_contrastive_loss",
    "local_contrastive_loss",
    "local_similarity",
    "word_attention",
    "auxiliary_loss",
    "MedMoELoss",
]

EPS = 1e-8  # GLoRIA's clamp on products of norms
LOCAL_BLOCK_BYTES = 64 * 2**20  # budget for the largest per-block intermediate of the local loss


SIMILARITY_AGGS = (*LOCAL_AGGS, "max")  # the training aggregations and GLoRIA's zero-shot one


def check_agg(agg: str, allowed: tuple[str, ...] = LOCAL_AGGS) -> None:
    """ValueError unless ``agg`` is one of ``allowed`` (the local loss's word aggregations by default)."""
    if agg not in allowed:
        raise ValueError(f"agg must be one of {', '.join(map(repr, allowed))}, got {agg!r}")


def check_attention(attention: str) -> None:
    """ValueError unless ``attention`` is one of ``ATTENTIONS``."""
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {', '.join(map(repr, ATTENTIONS))}, got {attention!r}")


def _two_way_ce(image_rows: Tensor, report_rows: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
    """(image -> text, text -> image) cross-entropies. ``image_rows`` [b, B]: this rank's b images
    scored against all B reports; ``report_rows`` [b, B]: its b reports against all B images.
    The match of local sample k is global column ``offset + k`` (offset 0 without gathering)."""
    labels = offset + torch.arange(image_rows.shape[0], device=image_rows.device)
    return F.cross_entropy(image_rows, labels), F.cross_entropy(report_rows, labels)


def _gathered_ce(image_rows: Tensor, report_rows: Tensor, offset: int) -> tuple[Tensor, Tensor]:
    """``_two_way_ce`` of this rank's b samples against the B gathered ones, scaled by the rank's
    share of the global batch (b x ranks / B): DDP's average over ranks is then the mean over the
    global batch even when ranks hold different numbers of samples (rows skipped as unreadable)."""
    share = image_rows.shape[0] * torch.distributed.get_world_size() / image_rows.shape[1]
    i2t, t2i = _two_way_ce(image_rows, report_rows, offset)
    return i2t * share, t2i * share


def _cosine(x: Tensor, y: Tensor) -> Tensor:
    """[n, D] x [m, D] -> [n, m] cosine similarities with GLoRIA's clamp on the norm product."""
    norms = x.norm(dim=1, keepdim=True) * y.norm(dim=1, keepdim=True).t()
    return x @ y.t() / norms.clamp(min=EPS)


def global_contrastive_loss(image_emb: Tensor, text_emb: Tensor, temp3: float = 10.0,
                            gather: bool = True) -> tuple[Tensor, Tensor]:
    """Global contrastive loss of Sec. 4.4 (GLoRIA ``global_loss``).

    ``scores[j, i] = temp3 * <v_j, t_i> / clamp(|v_j| |t_i|, 1e-8)`` for image embeddings
    ``image_emb`` [B, D] and report embeddings ``text_emb`` [B, D]; returns
    ``(image_to_text, text_to_image)`` = (CE over rows, CE over columns), each the mean over
    the batch, with the matching pair (the diagonal) as target.

    Under distributed training (``gather``), every rank's embeddings are gathered with their
    gradients and this rank's samples are scored against all of them; averaged over ranks
    (as DDP averages gradients) this is the loss of the concatenated global batch.
    """
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"expected two [B, D] tensors, got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    with torch.autocast(device_type=image_emb.device.type, enabled=False):
        img, txt = upcast(image_emb), upcast(text_emb)
        dtype = torch.promote_types(img.dtype, txt.dtype)
        img, txt = img.to(dtype), txt.to(dtype)
        if not (gather and is_distributed()):
            scores = _cosine(img, txt) * temp3
            return _two_way_ce(scores, scores.t())
        both, offset = all_gather_with_grad(torch.cat([img, txt], dim=1))  # one collective for both
        all_img, all_txt = both.split(img.shape[1], dim=1)
        return _gathered_ce(_cosine(img, all_txt) * temp3, _cosine(txt, all_img) * temp3, offset)


MIN_BLOCK_ROWS = 128  # keep at least this many word rows per report block before cutting on length


def _report_blocks(sorted_lengths: list[int], n_images: int, row_bytes: int, budget: int):
    """Plan the blocks of the local loss.

    ``sorted_lengths``: report lengths, longest first; ``row_bytes``: bytes of one word's
    row of the largest intermediate (``max(S, D) * element_size``). Returns ``(bj, blocks)``:
    the image chunk size and ``(start, end, n_words)`` report blocks (in sorted order) such
    that ``(end - start) * bj * n_words * row_bytes <= budget`` (at least one report and one
    image per block). A block is closed early when it already has ``MIN_BLOCK_ROWS`` word
    rows and the next report is much shorter, so short reports are not padded to long ones.
    """
    b = len(sorted_lengths)
    pairs = max(1, budget // max(1, sorted_lengths[0] * row_bytes))
    if pairs >= b * n_images:
        bj = n_images
    else:  # roughly square blocks for the longest reports
        bj = min(n_images, max(1, math.isqrt(pairs)))
        bj = min(n_images, max(1, pairs // min(b, max(1, pairs // bj))))
    blocks = []
    st = 0
    while st < b:
        nb = sorted_lengths[st]
        cap = max(1, budget // max(1, bj * nb * row_bytes))
        en = st + 1
        while en < b and en - st < cap:
            if (en - st) * nb >= MIN_BLOCK_ROWS and sorted_lengths[en] * 5 <= nb * 4:
                break
            en += 1
        blocks.append((st, en, nb))
        st = en
    return bj, blocks


def _attention_inputs(w: Tensor, ctx: Tensor, attention: str) -> tuple[Tensor, Tensor]:
    """What the attention logits are products of: the words [.., N, D] and regions [.., D, S] themselves
    (``"gloria"``: raw products) or both unit-normalised (``"cosine"``)."""
    if attention == "cosine":
        return F.normalize(w, dim=-1), F.normalize(ctx, dim=-2)
    return w, ctx


def _region_weights(logits: Tensor, real: Tensor, temp1: float, attention: str) -> Tensor:
    """Each word's attention over the regions (docs/design.md §10), from its logits [..., N, S] and the
    mask ``real`` [..., N, 1] of real words; in place on ``logits`` (a matmul output: autograd keeps
    matmul's inputs, not its output).

    ``"gloria"`` (GLoRIA's ``attention_fn``): softmax over the report's real words per region, times
    temp1, softmax over regions; the region logits lie in [0, temp1], so one region gets at most
    e^temp1 times another's weight, and what all the report's words share cancels in the first softmax.
    ``"cosine"``: softmax over regions of temp1 x cos(t_n, v_s) (GLoRIA paper's Eq. 3 on cosines)."""
    if attention == "gloria":
        return torch.softmax(torch.softmax(logits.masked_fill_(~real, float("-inf")), dim=-2) * temp1, dim=-1)
    return torch.softmax(logits.mul_(temp1), dim=-1)


def _word_cosines(w: Tensor, mask: Tensor, ctx: Tensor, temp1: float, attention: str) -> Tensor:
    """cos(c_in, t_in) for a block of reports i and images j (GLoRIA ``attention_fn`` + ``cosine``):
    w [bi, N, D] words with padded rows zeroed; mask [bi, N] real words; ctx [bj, D, S] image
    regions. Returns [bj, bi, N] (padded words: arbitrary, mask them)."""
    bi, n, d = w.shape
    bj, _, s = ctx.shape
    wa, ca = _attention_inputs(w, ctx, attention)
    # logits[j, i, n, r] from <t_in, v_jr>: one product for all pairs of the block
    a = torch.bmm(wa.reshape(1, bi * n, d).expand(bj, bi * n, d), ca).view(bj, bi, n, s)
    q = _region_weights(a, mask.view(1, bi, n, 1), temp1, attention)
    c = torch.bmm(q.view(bj, bi * n, s), ctx.transpose(1, 2)).view(bj, bi, n, d)  # weighted context
    num = (c * w[None]).sum(dim=-1)
    den = (w.norm(dim=-1)[None] * c.norm(dim=-1)).clamp(min=EPS)
    return num / den


def _pair_scores(
    w: Tensor, mask: Tensor, log_len: Tensor, ctx: Tensor, *, temp1: float, temp2: float, agg: str, attention: str
) -> Tensor:
    """Z(i, j) for a block of reports i and images j (GLoRIA ``local_loss`` inner loop; with
    ``agg="max"`` its zero-shot ``get_local_similarities``). Shapes as ``_word_cosines`` plus
    log_len [bi]; returns [bj, bi] (rows images, columns reports), before the ``temp3`` scale."""
    z = (_word_cosines(w, mask, ctx, temp1, attention) * temp2).masked_fill(~mask[None], float("-inf"))
    if agg == "max":
        return z.amax(dim=-1)  # log max_n exp(temp2 * cos)
    z = torch.logsumexp(z, dim=-1)  # log sum_n exp(temp2 * cos)
    return z - log_len[None] if agg == "mean" else z


def _diagonal_attention(w: Tensor, mask: Tensor, ctx: Tensor, temp1: float, attention: str) -> Tensor:
    """Word attention of report i over its own image i: [B, N, S], zeros at padded words."""
    q = _region_weights(torch.bmm(*_attention_inputs(w, ctx, attention)), mask[:, :, None], temp1, attention)
    return q.masked_fill(~mask[:, :, None], 0.0)


def _masked_words(words: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Words with padded rows zeroed (even inf/nan padding never leaks) and the [B, N] mask of real words."""
    mask = torch.arange(words.shape[1], device=words.device)[None] < lengths[:, None]
    return words.masked_fill(~mask[:, :, None], 0.0), mask


@torch.no_grad()
def word_attention(regions: Tensor, words: Tensor, lengths: Tensor, temp1: float = 4.0,
                   attention: str = "gloria") -> Tensor:
    """Each report's word attention over its own image (GLoRIA ``attention_fn`` on the diagonal
    pairs): regions [B, D, H, W], words [B, N, D], lengths [B] -> [B, N, H, W], zeros at padding."""
    check_attention(attention)
    b, d, h, wd = regions.shape
    regions, words = upcast(regions), upcast(words)
    w, mask = _masked_words(words, torch.as_tensor(lengths, device=words.device))
    return _diagonal_attention(w, mask, regions.reshape(b, d, h * wd), temp1, attention).view(b, w.shape[1], h, wd)


def _local_scores(ctx: Tensor, words: Tensor, lengths: Tensor, *, temp1: float, temp2: float, agg: str,
                  attention: str, budget: int) -> Tensor:
    """Z(i, j) of every image j (ctx [Bi, D, S]) and report i (words [Br, N, D]): [Bi, Br].

    Reports are processed longest first in blocks of similar length, each block cut to its own
    longest report, so little work goes to padding. Images are split once with torch.split (one
    SplitBackward) so gradients accumulate in one buffer per chunk instead of a full-size zero
    tensor per block. Blocks are checkpointed when the whole matrix does not fit in ``budget``.
    """
    bi, d, s = ctx.shape
    w, mask = _masked_words(words, lengths)
    log_len = lengths.to(w.dtype).log()
    lens = lengths.tolist()
    order = sorted(range(len(lens)), key=lambda k: -lens[k])  # longest report first
    row_bytes = max(s, d) * ctx.element_size()
    bj, blocks = _report_blocks([lens[k] for k in order], bi, row_bytes, budget)
    fn = partial(_pair_scores, temp1=temp1, temp2=temp2, agg=agg, attention=attention)
    fits = bi * len(lens) * lens[order[0]] * row_bytes <= budget
    use_ckpt = not fits and torch.is_grad_enabled() and (ctx.requires_grad or w.requires_grad)

    perm = torch.tensor(order, device=ctx.device)
    w_s, m_s, l_s = w.index_select(0, perm), mask.index_select(0, perm), log_len.index_select(0, perm)
    c_chunks = torch.split(ctx, bj)
    cols = []
    for st, en, nb in blocks:
        wi, mi, li = w_s[st:en, :nb], m_s[st:en, :nb], l_s[st:en]
        parts = []
        for cj in c_chunks:
            if use_ckpt:
                parts.append(checkpoint(fn, wi, mi, li, cj, use_reentrant=False, preserve_rng_state=False))
            else:
                parts.append(fn(wi, mi, li, cj))
        cols.append(torch.cat(parts, dim=0))
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(lens), device=ctx.device)
    return torch.cat(cols, dim=1).index_select(1, inverse)


@torch.no_grad()
def local_similarity(regions: Tensor, words: Tensor, lengths: Tensor, temp1: float = 4.0, temp2: float = 5.0,
                     agg: str = "max", *, attention: str = "gloria", block_bytes: int | None = None) -> Tensor:
    """Image-report local similarity Z(i, j) of every image j (regions [Bi, D, H, W]) and report i
    (words [Br, N, D], lengths [Br]) without the ``temp3`` scale: [Bi, Br]. The word attention is the
    local loss's; ``agg="max"`` is GLoRIA's zero-shot ``get_local_similarities`` (temp2 x the best
    word's cosine), ``"sum"``/``"mean"`` the training aggregation."""
    check_agg(agg, SIMILARITY_AGGS)
    check_attention(attention)
    regions, words = upcast(regions), upcast(words)
    dtype = torch.promote_types(regions.dtype, words.dtype)
    b, d = regions.shape[:2]
    lengths = torch.as_tensor(lengths, device=regions.device).reshape(-1)
    return _local_scores(regions.to(dtype).reshape(b, d, -1), words.to(dtype), lengths, temp1=temp1, temp2=temp2,
                         agg=agg, attention=attention,
                         budget=LOCAL_BLOCK_BYTES if block_bytes is None else int(block_bytes))


def local_contrastive_loss(
    regions: Tensor,
    words: Tensor,
    lengths: Tensor,
    temp1: float = 4.0,
    temp2: float = 5.0,
    temp3: float = 10.0,
    agg: str = "sum",
    *,
    attention: str = "gloria",
    block_bytes: int | None = None,
    gather: bool = False,
) -> tuple[Tensor, Tensor]:
    """Local (word-region) contrastive loss of Sec. 4.4 (GLoRIA ``local_loss``), batched.

    Args:
        regions: [B, D, H, W] region features ``V_local`` of the B images.
        words: [B, N, D] padded word embeddings; only ``words[i, :lengths[i]]`` are real
            (no [CLS] column, unlike GLoRIA's ``words_emb``).
        lengths: [B] number of real words per report, each in 1..N.
        temp1, temp2, temp3: GLoRIA's attention sharpness, word-aggregation and pair-score
            temperatures.
        agg: ``"sum"`` (``log sum_n exp``) or ``"mean"`` (``log mean_n exp``).
        attention: the word attention over regions, ``"gloria"`` (GLoRIA's code) or ``"cosine"``
            (``_region_weights``).
        block_bytes: budget for the largest intermediate of one block of reports x images
            (default ``LOCAL_BLOCK_BYTES``).
        gather: under distributed training, score this rank's images against every rank's
            reports and its reports against every rank's images (default: per rank).

    Returns:
        ``(image_to_text, text_to_image)``: the cross-entropy over rows (images) and over
        columns (reports) of ``temp3 * Z`` with ``Z[j, i]`` the score of image j and report i.
        The word attention maps (GLoRIA's ``att_maps``) are ``word_attention``'s, computed
        only when asked for.
    """
    check_agg(agg)
    check_attention(attention)
    if regions.dim() != 4 or words.dim() != 3:
        raise ValueError(f"expected regions [B, D, H, W] and words [B, N, D], got {tuple(regions.shape)}, {tuple(words.shape)}")
    b, d = regions.shape[:2]
    if words.shape[0] != b or words.shape[2] != d:
        raise ValueError(f"regions {tuple(regions.shape)} and words {tuple(words.shape)} disagree on B or D")
    n = words.shape[1]
    lengths = torch.as_tensor(lengths).reshape(-1)
    if lengths.numel() != b:
        raise ValueError(f"lengths has {lengths.numel()} entries for a batch of {b}")
    if int(lengths.min()) < 1 or int(lengths.max()) > n:
        raise ValueError(f"lengths must lie in 1..{n}, got {lengths.tolist()}")

    with torch.autocast(device_type=regions.device.type, enabled=False):
        regions, words = upcast(regions), upcast(words)
        dtype = torch.promote_types(regions.dtype, words.dtype)
        regions, words = regions.to(dtype), words.to(dtype)
        lengths = lengths.to(regions.device)
        ctx = regions.reshape(b, d, -1)  # [B, D, S], a view for contiguous input
        score = partial(_local_scores, temp1=temp1, temp2=temp2, agg=agg, attention=attention,
                        budget=LOCAL_BLOCK_BYTES if block_bytes is None else int(block_bytes))
        if not (gather and is_distributed()):
            scores = score(ctx, words, lengths) * temp3  # [B images, B reports]
            i2t, t2i = _two_way_ce(scores, scores.t())
        else:  # this rank's images against all reports, and its reports against all images
            all_ctx, offset = all_gather_with_grad(ctx)
            all_words, _ = all_gather_with_grad(words)
            all_lengths, _ = all_gather_with_grad(lengths)
            i2t, t2i = _gathered_ce(score(ctx, all_words, all_lengths) * temp3,
                                    score(all_ctx, words, lengths).t() * temp3, offset)
    return i2t, t2i


def auxiliary_loss(logits: Tensor, target: Tensor, class_weight: Tensor | None = None) -> Tensor:
    """Auxiliary report-type loss of Sec. 4.5, ``L_aux = CE(W_c t_g, y)``.

    ``logits`` [B, K] (the router / report-type classifier output), ``target`` [B] with
    ``-1`` for an unknown type, which is ignored. Returns the mean cross-entropy over the
    labelled samples (with ``class_weight`` [K], the weighted mean, as ``F.cross_entropy``'s
    ``weight``: a rare class can count as much as a common one), or a zero that keeps the graph to
    ``logits`` when none is labelled. Computed without a data-dependent branch (no host sync).
    """
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [B, K] and target [B], got {tuple(logits.shape)}, {tuple(target.shape)}")
    target = target.to(device=logits.device, dtype=torch.long)
    known = target >= 0
    target = target.clamp(min=0)
    per = F.cross_entropy(upcast(logits), target, reduction="none")
    per = torch.where(known, per, torch.zeros_like(per))
    weight = known.to(per.dtype) if class_weight is None else class_weight.to(per)[target] * known
    return (per * weight).sum() / weight.sum().clamp(min=1e-12)


class MedMoELoss(torch.nn.Module):
    """``L_total = w_global L_global + w_local L_local + w_aux L_aux`` (Sec. 4.6, lambda = w_aux).

    ``L_global`` and ``L_local`` are the sums of both directions (image -> text and
    text -> image) of the Sec. 4.4 losses, as GLoRIA's training code adds them;
    ``L_aux`` (Sec. 4.5) is the mean over the router logits given (image-side and report-side
    routers), so lambda weighs the auxiliary task once however many routers learn it. Under
    distributed training the global
    loss is computed against every rank's samples; the local one too with ``gather_local``.
    With ``w_local=0`` the local loss is not computed at all.
    """

    def __init__(
        self,
        temp1: float = 4.0,
        temp2: float = 5.0,
        temp3: float = 10.0,
        agg: str = "sum",
        w_global: float = 1.0,
        w_local: float = 1.0,
        w_aux: float = 1.0,
        *,
        attention: str = "gloria",
        block_bytes: int | None = None,
        gather_local: bool = False,
        gather: bool = True,
        aux_class_weight: Tensor | None = None,
    ) -> None:
        super().__init__()
        check_agg(agg)
        check_attention(attention)
        self.temp1, self.temp2, self.temp3, self.agg, self.attention = temp1, temp2, temp3, agg, attention
        self.w_global, self.w_local, self.w_aux = w_global, w_local, w_aux
        self.block_bytes = block_bytes  # local-loss block budget (None: LOCAL_BLOCK_BYTES)
        self.gather_local = gather_local and gather
        self.gather = gather  # False: this process's samples only, even under DDP (rank 0's validation loss)
        self.aux_class_weight = aux_class_weight  # [K] weights of the auxiliary loss's classes (None: equal)

    @classmethod
    def from_config(cls, config, **kwargs) -> "MedMoELoss":
        """The loss a model configuration trains with (its temperatures, aggregation and weights);
        ``kwargs`` set the rest (open_clip's ``create_loss``)."""
        return cls(config.temp1, config.temp2, config.temp3, config.local_agg, config.w_global, config.w_local,
                   config.w_aux, attention=config.attention, **kwargs)

    def forward(
        self,
        image_global: Tensor,
        text_global: Tensor,
        regions: Tensor,
        words: Tensor,
        lengths: Tensor,
        route=None,
    ) -> dict[str, Tensor]:
        """``MedMoELoss()(**model(images, reports, modality))``: ``route`` (a ``model.gate.Route``, None
        without experts) brings the routers' logits and the auxiliary target."""
        g_i2t, g_t2i = global_contrastive_loss(image_global, text_global, self.temp3, gather=self.gather)
        glob = g_i2t + g_t2i
        if self.w_local:
            l_i2t, l_t2i = local_contrastive_loss(
                regions, words, lengths, self.temp1, self.temp2, self.temp3, self.agg, attention=self.attention,
                block_bytes=self.block_bytes, gather=self.gather_local)
            loc = l_i2t + l_t2i
        else:
            loc = torch.zeros((), dtype=glob.dtype, device=glob.device)
        if route is None or route.target is None:
            aux = torch.zeros((), dtype=glob.dtype, device=glob.device)
        else:
            aux = sum(auxiliary_loss(x, route.target, self.aux_class_weight) for x in route.logits) / len(route.logits)
        total = self.w_global * glob + self.w_local * loc + self.w_aux * aux
        return {"global": glob, "local": loc, "aux": aux, "total": total}
