"""Shared prompt prefixes: the same document's questions repeat the system prompt and the whole context, and
only the question and answer differ. Computing that prefix once instead of once per question is the largest
saving left on this data (a third of the training tokens, half of the test prompts' tokens).

- :func:`share_groups` finds prompts that share a long token prefix (used by training and generation).
- :func:`pack_shared` lays a micro-batch out for training: one row per group, the shared prefix ("trunk")
  once, then each member's own tokens ("branch"), with a mask under which every branch sees the trunk and
  itself, causally, and position ids that restart each branch where the trunk ends. Each branch's tokens
  therefore see exactly what they would see unpacked, so the loss and the gradients are those of the
  unpacked batch up to float rounding (tested); only dropout draws one mask for the trunk, where the
  unpacked batch draws one per copy.

Separate from ``training.py`` and ``generation.py`` because both use it, and a change here must rerun both
the stages that train and the stages that generate (it is a dep of each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

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


def pack_shared(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor] | None:
    """A training micro-batch of ``(input_ids, labels)`` pairs with shared prompt prefixes packed, or None when
    no two examples share one (the caller then pads them as usual).

    Returns ``input_ids``, ``labels``, ``position_ids`` (R × W) and ``attention_mask`` (R × 1 × W × W, bool, True
    where a query may attend a key). A group is laid out as its trunk, then each member's remaining tokens;
    groups are packed several to a row (as wide as the longest group), and attend only within themselves.
    A padding position attends only itself (finite everywhere, and no real position attends it).
    ``computed_tokens`` is the number of real positions (the trunk counted once).
    """
    groups = share_groups([ids[:prompt_length(labels)] for ids, labels in examples])
    if all(len(g.members) == 1 for g in groups):
        return None
    rows = []
    for g in groups:
        trunk = g.prefix if len(g.members) > 1 else 0
        first = examples[g.members[0]][0]
        ids, labels, pos, branch = list(first[:trunk]), [IGNORE] * trunk, list(range(trunk)), [0] * trunk
        for b, m in enumerate(g.members, start=1):
            m_ids, m_labels = examples[m]
            ids += m_ids[trunk:]
            labels += m_labels[trunk:]
            pos += range(trunk, len(m_ids))
            branch += [b] * (len(m_ids) - trunk)
        # A row's first token is never predicted when padded (nothing precedes it); packed, it would be predicted
        # from the previous segment. A branch's first token must be a prompt token: share_groups ensures it.
        labels[0] = IGNORE
        if trunk and any(examples[m][1][trunk] != IGNORE for m in g.members):
            raise AssertionError("a branch would start with a labelled token")
        rows.append((ids, labels, pos, branch))
    # Rows of different lengths would pad the batch to the longest: pack them, longest first, into rows (first
    # fit; a segment id keeps a row's groups apart), at the row width among a few (up to twice the longest) that
    # leaves the fewest positions to compute. Wider rows hold two short groups; the price, attention over the
    # whole row (width squared, masked), is not counted: it is ~10 % of a step at these widths.
    longest = max(len(r[0]) for r in rows)
    best = None
    for width in sorted({longest, *(int(longest * f) for f in (1.125, 1.25, 1.375, 1.5, 1.75, 2.0))}):
        lines: list[list[tuple]] = []
        for r in sorted(rows, key=lambda r: -len(r[0])):
            line = next((ln for ln in lines if sum(len(x[0]) for x in ln) + len(r[0]) <= width), None)
            if line is None:
                lines.append([r])
            else:
                line.append(r)
        width = max(sum(len(x[0]) for x in ln) for ln in lines)
        if best is None or len(lines) * width < best[0] * best[1]:
            best = (len(lines), width, lines)
    _, width, lines = best
    out_ids = torch.full((len(lines), width), pad_id, dtype=torch.long)
    out_labels = torch.full((len(lines), width), IGNORE, dtype=torch.long)
    out_pos = torch.zeros((len(lines), width), dtype=torch.long)
    out_branch = torch.zeros((len(lines), width), dtype=torch.long)
    out_seg = torch.full((len(lines), width), -1, dtype=torch.long)
    for r, line in enumerate(lines):
        at = 0
        for seg, (ids, labels, pos, branch) in enumerate(line):
            n = len(ids)
            out_ids[r, at:at + n], out_labels[r, at:at + n] = torch.tensor(ids), torch.tensor(labels)
            out_pos[r, at:at + n], out_branch[r, at:at + n] = torch.tensor(pos), torch.tensor(branch)
            out_seg[r, at:at + n] = seg
            at += n
    sq, sk = out_seg[:, :, None], out_seg[:, None, :]
    q, k = out_branch[:, :, None], out_branch[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (sk >= 0) & (sk == sq) & ((k == 0) | (k == q))
    allowed |= torch.eye(width, dtype=torch.bool) & (sq < 0)  # padding attends itself only
    return {"input_ids": out_ids, "labels": out_labels, "position_ids": out_pos, "attention_mask": allowed[:, None],
            "computed_tokens": int((out_seg >= 0).sum())}
