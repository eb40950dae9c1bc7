"""Shared prompt prefixes: the same document's questions repeat the system prompt and the whole context, and
only the question and answer differ. Computing that prefix once instead of once per question is the largest
saving left on this data (a third of the training tokens, half of the test prompts' tokens).

- :func:`share_groups` finds prompts that share a long token prefix (used by training and generation).
- :func:`tree` lays a group out as one segment: the shared prefix ("trunk") once, then each member's own
  tokens ("branch"), with position ids that restart each branch where the trunk ends; :func:`pack_segments`
  packs segments several to a row under a mask in which every branch sees the trunk and itself, causally,
  and nothing of another segment. Each branch's tokens therefore see exactly what they would see unpacked.
- :func:`pack_shared` builds a training micro-batch that way: the loss and the gradients are those of the
  unpacked batch up to float rounding (tested); only dropout draws one mask for the trunk, where the
  unpacked batch draws one per copy. Generation prefills a batch's prompts the same way
  (``generation._prefill_packed``).
- :func:`supports_packing` says whether a model's attention takes such masks, :func:`model_mask` gives the
  mask in the form its attention takes.
- :func:`segment_attention`: within it, SDPA attention over a packed batch runs segment by segment (each
  segment's queries against its own keys only), not over whole rows where most of the mask is False.

Separate from ``training.py`` and ``generation.py`` because both use it, and a change here must rerun both
the stages that train and the stages that generate (it is a dep of each).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ftbench.registry import base_model

IGNORE = -100

#: Prompts share a prefix when it covers at least this share of each of them: the same document's questions
#: (context and system prompt in common) qualify; two documents that share only the system prompt and the
#: template do not (the copy would save too little to pay for the extra padding).
SHARE_MIN = 0.5


@dataclass
class PrefixGroup:
    """Prompts (indices) whose first ``prefix`` tokens are identical; ``prefix`` < every member's length."""

    members: list[int]
    prefix: int
    lengths: list[int] = field(default_factory=list)


def _common(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def share_groups(prompts: list[list[int]], *, min_share: float = SHARE_MIN) -> list[PrefixGroup]:
    """Group token sequences that share a long prefix (same document, another question).

    Prompts are visited in lexicographic token order, so prompts with a common prefix are adjacent; a prompt
    joins the previous group when the group's common prefix with it still covers ``min_share`` of every
    member. The prefix always leaves at least one token of each prompt outside it (generation needs the
    logits of a prompt's last position; training needs the token before the first label in the branch). A
    prompt that shares with no other is a group of one. Deterministic: a pure function of the tokens.
    """
    groups: list[PrefixGroup] = []
    for i in sorted(range(len(prompts)), key=lambda k: prompts[k]):
        row = prompts[i]
        if groups and len(row) > 1:
            g = groups[-1]
            first = prompts[g.members[0]]
            limit = min(g.prefix if len(g.members) > 1 else len(first) - 1, len(row) - 1)
            n = _common(first, row, limit)
            if n >= 1 and n >= min_share * max(len(row), *g.lengths):
                g.members.append(i)
                g.lengths.append(len(row))
                g.prefix = n
                continue
        groups.append(PrefixGroup([i], max(len(row) - 1, 0), [len(row)]))
    return groups


def prompt_length(labels: list[int]) -> int:
    """Positions before the first labelled one: the part of an example a shared prefix may cover."""
    return next((i for i, label in enumerate(labels) if label != IGNORE), len(labels))


@dataclass
class Segment:
    """A tree of tokens packed as one piece: a trunk every branch sees, then branches that see the trunk and
    themselves. ``branch`` is 0 on the trunk and b > 0 on branch b; ``pos`` restarts each branch where the
    trunk ends."""

    ids: list[int]
    pos: list[int]
    branch: list[int]


def tree(trunk: list[int], branches: list[list[int]]) -> Segment:
    """The :class:`Segment` of a shared ``trunk`` and the ``branches`` that continue it."""
    ids, pos, branch = list(trunk), list(range(len(trunk))), [0] * len(trunk)
    for b, tail in enumerate(branches, start=1):
        ids += tail
        pos += range(len(trunk), len(trunk) + len(tail))
        branch += [b] * len(tail)
    return Segment(ids, pos, branch)


@dataclass
class Packing:
    """Segments laid out in rows: ``input_ids``, ``position_ids`` (R × W), ``attention_mask`` (R × 1 × W × W,
    bool, True where a query may attend a key), where each segment starts (row, column), and ``spans``: each
    row's segments as ``(start, end, causal)`` columns (``causal``: the segment's mask is plain causal, a trunk
    with at most one branch), what :func:`segment_attention` takes."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    starts: list[tuple[int, int]]
    computed_tokens: int
    spans: list[list[tuple[int, int, bool]]] = field(default_factory=list)


def pack_segments(segments: list[Segment], pad_id: int) -> Packing:
    """Pack segments (none empty) several to a row, each attending only within itself.

    Rows of different lengths would pad the batch to the longest: segments are packed longest first into
    rows (first fit; a segment id keeps a row's segments apart), at the row width among a few (up to twice
    the longest) that leaves the fewest positions to compute. Wider rows hold two short segments; their
    attention costs nothing extra under :func:`segment_attention` (each segment attends within itself). A
    padding position attends only itself (finite everywhere, and no real position attends it).
    """
    longest = max(len(s.ids) for s in segments)
    order = sorted(range(len(segments)), key=lambda i: -len(segments[i].ids))
    best = None
    for width in sorted({longest, *(int(longest * f) for f in (1.125, 1.25, 1.375, 1.5, 1.75, 2.0))}):
        lines: list[list[int]] = []
        for i in order:
            line = next((ln for ln in lines if sum(len(segments[x].ids) for x in ln) + len(segments[i].ids) <= width),
                        None)
            if line is None:
                lines.append([i])
            else:
                line.append(i)
        width = max(sum(len(segments[x].ids) for x in ln) for ln in lines)
        if best is None or len(lines) * width < best[0] * best[1]:
            best = (len(lines), width, lines)
    _, width, lines = best
    out_ids = torch.full((len(lines), width), pad_id, dtype=torch.long)
    out_pos = torch.zeros((len(lines), width), dtype=torch.long)
    out_branch = torch.zeros((len(lines), width), dtype=torch.long)
    out_seg = torch.full((len(lines), width), -1, dtype=torch.long)
    starts: list[tuple[int, int]] = [(0, 0)] * len(segments)
    spans: list[list[tuple[int, int, bool]]] = []
    for r, line in enumerate(lines):
        at = 0
        spans.append([])
        for seg, i in enumerate(line):
            s, n = segments[i], len(segments[i].ids)
            out_ids[r, at:at + n], out_pos[r, at:at + n] = torch.tensor(s.ids), torch.tensor(s.pos)
            out_branch[r, at:at + n] = torch.tensor(s.branch)
            out_seg[r, at:at + n] = seg
            starts[i] = (r, at)
            spans[r].append((at, at + n, max(s.branch) <= 1))
            at += n
    sq, sk = out_seg[:, :, None], out_seg[:, None, :]
    q, k = out_branch[:, :, None], out_branch[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (sk >= 0) & (sk == sq) & ((k == 0) | (k == q))
    allowed |= torch.eye(width, dtype=torch.bool) & (sq < 0)  # padding attends itself only
    return Packing(out_ids, out_pos, allowed[:, None], starts, int((out_seg >= 0).sum()), spans)


def pack_shared(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any] | None:
    """A training micro-batch of ``(input_ids, labels)`` pairs with shared prompt prefixes packed, or None when
    no two examples share one (the caller then pads them as usual).

    Returns ``input_ids``, ``labels``, ``position_ids`` (R × W) and ``attention_mask`` (R × 1 × W × W, bool, True
    where a query may attend a key). A group is laid out as its trunk, then each member's remaining tokens
    (:func:`tree`); groups are packed several to a row (:func:`pack_segments`), and attend only within themselves.
    ``computed_tokens`` is the number of real positions (the trunk counted once); ``segments`` the packing's
    spans, for :func:`segment_attention`.
    """
    groups = share_groups([ids[:prompt_length(labels)] for ids, labels in examples])
    if all(len(g.members) == 1 for g in groups):
        return None
    segments, labels = [], []
    for g in groups:
        trunk = g.prefix if len(g.members) > 1 else 0
        segments.append(tree(examples[g.members[0]][0][:trunk], [examples[m][0][trunk:] for m in g.members]))
        seg_labels = [IGNORE] * trunk + [t for m in g.members for t in examples[m][1][trunk:]]
        # A row's first token is never predicted when padded (nothing precedes it); packed, it would be predicted
        # from the previous segment. A branch's first token must be a prompt token: share_groups ensures it.
        seg_labels[0] = IGNORE
        if trunk and any(examples[m][1][trunk] != IGNORE for m in g.members):
            raise AssertionError("a branch would start with a labelled token")
        labels.append(seg_labels)
    packing = pack_segments(segments, pad_id)
    out_labels = torch.full(packing.input_ids.shape, IGNORE, dtype=torch.long)
    for (r, at), seg_labels in zip(packing.starts, labels, strict=True):
        out_labels[r, at:at + len(seg_labels)] = torch.tensor(seg_labels)
    return {"input_ids": packing.input_ids, "labels": out_labels, "position_ids": packing.position_ids,
            "attention_mask": packing.attention_mask, "computed_tokens": packing.computed_tokens,
            "segments": packing.spans}


def supports_packing(model: Any, max_len: int) -> bool:
    """Whether packing gives this model what padding gives it: its attention takes the 4-D masks packing
    needs (SDPA and eager do; flash-attention kernels take no mask and would let branches see each other),
    and no sliding window shorter than an example (a custom mask replaces the window)."""
    base = base_model(model)
    window = getattr(base.config, "sliding_window", None)
    return (getattr(base.config, "_attn_implementation", None) in ("sdpa", "eager")
            and (window is None or window >= max_len))


def model_mask(model: Any, allowed: torch.Tensor) -> torch.Tensor:
    """A packed bool "may attend" mask as this model's attention takes it: SDPA takes it as it is; eager adds
    the mask to the scores, so it gets 0 where allowed and the lowest value elsewhere, in the dtype of the
    frozen weights (the attention's dtype when trainable ones are kept in float32), or of any weight when
    none is frozen (``full``, or a model loaded for inference)."""
    base = base_model(model)
    if getattr(base.config, "_attn_implementation", None) != "eager":
        return allowed
    weights = [p for p in base.get_decoder().parameters() if p.is_floating_point()]
    dtype = next((p.dtype for p in weights if not p.requires_grad), weights[0].dtype)
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


#: Attention arguments that change the scores; transformers' SDPA function applies them (or refuses them).
_SCORE_MODIFIERS = ("position_bias", "softcap", "s_aux", "sinks")


def _segmented(spans: list[list[tuple[int, int, bool]]], fallback: Callable) -> Callable:
    """An SDPA attention function (transformers' ``AttentionInterface`` signature) for a packed batch laid out as
    ``spans``: each segment's queries attend its own keys, under its block of the mask (or causally, without a
    mask, where the block is plain causal), grouped-query heads unrepeated on the CPU and without a mask (where
    SDPA's kernels take them so). Padding positions get zeros (no real position attends them). Anything else (a
    cache, a mask of another shape, a score modifier such as a position bias or a soft cap, which only
    transformers' own function applies or refuses) goes to ``fallback``."""

    def attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                  **kwargs: Any) -> tuple[torch.Tensor, None]:
        rows, heads, width, dim = query.shape
        if (attention_mask is None or attention_mask.dtype != torch.bool
                or tuple(attention_mask.shape) != (rows, 1, width, width) or key.shape[2] != width
                or len(spans) != rows or any(kwargs.get(k) is not None for k in _SCORE_MODIFIERS)):
            return fallback(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        groups = heads // key.shape[1]
        out = query.new_zeros((rows, width, heads, value.shape[-1]))
        for r, row in enumerate(spans):
            for a, b, causal in row:
                mask = None if causal else attention_mask[r:r + 1, :, a:b, a:b]
                k, v = key[r:r + 1, :, a:b], value[r:r + 1, :, a:b]
                gqa = groups > 1 and (mask is None or query.device.type == "cpu")
                if groups > 1 and not gqa:  # a GPU kernel with a mask takes repeated heads, not enable_gqa
                    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
                block = F.scaled_dot_product_attention(query[r:r + 1, :, a:b], k, v, attn_mask=mask,
                                                       dropout_p=dropout, is_causal=causal, scale=scaling,
                                                       enable_gqa=gqa)
                out[r, a:b] = block[0].transpose(0, 1)
        return out, None

    return attention


@contextmanager
def segment_attention(spans: list[list[tuple[int, int, bool]]] | None) -> Iterator[None]:
    """Within the block, a model with SDPA attention runs a packed forward (a :class:`Packing`'s mask, laid out
    as its ``spans``) segment by segment.

    SDPA over a whole packed row computes every query against every key of the row and masks most of them out:
    a row holding two segments costs twice the attention it needs, and the CPU kernel skips nothing under an
    explicit mask. Per segment, the work is each segment's own square (its causal triangle where the segment is
    plain causal), and the result is the same up to float rounding (tested). transformers looks its attention
    function up by name at every forward, so the block swaps the ``"sdpa"`` entry of ``ALL_ATTENTION_FUNCTIONS``
    and puts back what was there on the way out, error or not; ``spans`` None or empty changes nothing. Eager
    attention is untouched (its additive mask is already exact). With gradient checkpointing, backward runs the
    forward again: it must run within the same block (``training.accumulate_step`` holds it through backward),
    since the whole-row path saves other tensors than the segmented one and checkpointing refuses the mismatch.
    """
    if not spans:
        yield
        return
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS as FUNCTIONS

    local = FUNCTIONS._local_mapping  # the instance's own overrides (transformers' GeneralInterface)
    had, previous = "sdpa" in local, local.get("sdpa")
    FUNCTIONS["sdpa"] = _segmented(spans, FUNCTIONS["sdpa"])
    try:
        yield
    finally:
        if had:
            FUNCTIONS["sdpa"] = previous
        else:
            del FUNCTIONS["sdpa"]
