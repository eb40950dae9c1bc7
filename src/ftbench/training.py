"""The training loop: setup, train, save (torchtune-recipe style, explicit rather than a Trainer).

An explicit loop keeps visible what the comparison depends on:

- the loss covers the answer tokens only, and the output head runs only where a label is
  (:func:`answer_loss`), so the (batch, seq, vocab) logits tensor is never built;
- an optimizer step's loss is the sum of its answer-token losses over all its micro-batches divided
  by their answer tokens, so ``batch_size=8`` and ``batch_size=4, grad_accum=2`` are the same step, and
  so is a batch cut into micro-batches of at most ``micro_batch_tokens`` positions (:func:`split_by_positions`,
  what caps the activation memory of the largest batches);
- the batches of every epoch are fixed up front from the seed (:func:`batch_plan`), length-grouped
  if asked, so a resumed run sees exactly the batches an uninterrupted one sees;
- tokens/s counts non-padding tokens, and time, tokens and samples are carried across a resume;
- checkpoints hold everything needed to resume bit-for-bit on the CPU (trainable weights,
  optimiser, scheduler, RNG state, progress), and a fingerprint of the data and of every parameter
  that changes the batches or the loss, so a stale checkpoint is never resumed;
- several processes (DDP / FSDP / DeepSpeed through accelerate, :mod:`ftbench.distributed`) run the same
  loop: each takes its share of every global micro-batch, and only rank 0 writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ftbench.distributed import Dist
from ftbench.io import ConfigError, DataError, write_json
from ftbench.params import TrainParams
from ftbench.prefix import model_mask, pack_shared, prompt_length, segment_attention, share_groups, supports_packing
from ftbench.prompts import fit_context, render_prompt
from ftbench.registry import base_model

log = logging.getLogger(__name__)

IGNORE = -100
# Answer positions per output-head chunk: a chunk's logits (chunk x vocab floats) are recomputed in the
# backward pass instead of kept, so memory stays at one chunk whatever the answers' total length.
HEAD_CHUNK = 1024
# Config attributes of architectures whose logits are more than ``lm_head(hidden)`` (soft-capping, scaling):
# answer_loss would silently compute a different loss for them.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_labels(self) -> int:
        """Positions the loss covers (labels shifted by one, as the model predicts the next token)."""
        return sum(label != IGNORE for label in self.labels[1:])


def encode_examples(tokenizer: Any, examples: list[dict], *, max_seq_len: int, style: str,
                    system_prompt: str | None, completion_only: bool, counts: dict) -> list[Encoded]:
    """Prompt + answer + EOS as token ids; labels mask the prompt when ``completion_only``.

    Prompts that do not fit are shortened around the answer (see :func:`fit_context`); pairs
    that cannot fit even then are dropped and counted.
    """
    out = []
    eos = tokenizer.eos_token or ""
    for ex in examples:
        answer_ids = tokenizer(ex["output"] + eos, add_special_tokens=False)["input_ids"]
        fitted = fit_context(tokenizer, ex, max_seq_len - len(answer_ids),
                             lambda e: render_prompt(tokenizer, e, style, system_prompt))
        if fitted is None:
            counts["train_dropped_too_long"] = counts.get("train_dropped_too_long", 0) + 1
            continue
        ex, truncated = fitted
        counts["train_truncated"] = counts.get("train_truncated", 0) + int(truncated)
        prompt = render_prompt(tokenizer, ex, style, system_prompt)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        labels = ([IGNORE] * len(prompt_ids) if completion_only else list(prompt_ids)) + answer_ids
        out.append(Encoded(prompt_ids + answer_ids, labels))
    return out


def data_hash(data: list[Encoded]) -> str:
    """SHA-256 of the encoded examples (ids and labels, in order).

    Hashing what the model is trained on, not the JSONL, covers the data and everything that shapes
    the tokens: prompt style, system prompt, max_seq_len truncation and completion_only masking.
    """
    h = hashlib.sha256()
    for e in data:
        h.update(json.dumps([e.input_ids, e.labels], separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def micro_batch(batch: list[Encoded], pad_id: int, share_prefix: bool) -> dict[str, Any]:
    """The tensors of one micro-batch: packed with its shared prompt prefixes when ``share_prefix`` and two
    examples share one, else padded side by side; ``computed_tokens`` is the real positions the model runs."""
    packed = pack_shared([(e.input_ids, e.labels) for e in batch], pad_id) if share_prefix else None
    if packed is not None:
        return packed
    return {**collate(batch, pad_id), "computed_tokens": sum(len(e.input_ids) for e in batch)}


def sharing_units(data: list[Encoded]) -> list[list[int]]:
    """Examples that share a prompt prefix (one document's questions), for :func:`batch_plan`'s ``units``."""
    groups = share_groups([e.input_ids[:prompt_length(e.labels)] for e in data])
    # in data order, so that units of one example give exactly the plain plan
    return sorted((sorted(g.members) for g in groups), key=lambda u: u[0])


def split_by_positions(data: list[Encoded], batch: list[int], budget: int | None,
                       share_prefix: bool) -> list[list[int]]:
    """``batch`` cut into micro-batches of at most ``budget`` positions each (``train.micro_batch_tokens``).

    Activation memory grows with the positions a forward runs, so the peak of a run is set by its largest batch;
    capping the positions caps the peak, and :func:`accumulate_step` weighs every micro-batch by the labelled
    tokens of the whole step, so the update is the batch's own (float rounding and dropout draws aside). Positions
    are counted as the model runs them: with ``share_prefix`` a shared prefix once per micro-batch (a unit, one
    document's questions, stays whole when it fits in a micro-batch of its own, and each part of a cut one runs
    the prefix again; a unit over the budget fills the room left first), padding not counted. An example longer
    than ``budget`` runs alone. Units keep the batch's order. None: ``[batch]``.
    """
    if budget is None:
        return [batch]
    units = [([i], 0) for i in batch]
    if share_prefix:
        groups = share_groups([data[i].input_ids[:prompt_length(data[i].labels)] for i in batch])
        units = [([batch[m] for m in sorted(g.members)], g.prefix if len(g.members) > 1 else 0)
                 for g in sorted(groups, key=lambda g: min(g.members))]
    pieces: list[list[int]] = [[]]
    used = 0
    for members, trunk in units:
        whole = trunk + sum(len(data[i].input_ids) - trunk for i in members)
        if pieces[-1] and used + whole > budget >= whole:
            pieces.append([])  # the unit fits whole only in a micro-batch of its own: it starts the next one
            used = 0
        first = True  # the unit's first member in this micro-batch brings the shared prefix with it
        for i in members:
            cost = len(data[i].input_ids) - (0 if first else trunk)
            if pieces[-1] and used + cost > budget:  # the unit alone is over the budget: cut it here
                pieces.append([])
                used, cost = 0, len(data[i].input_ids)
            pieces[-1].append(i)
            used += cost
            first = False
    return pieces


# transformers' LengthGroupedSampler sorts within megabatches of 50 batches: most of the padding saving
# of a full sort, while batch composition still changes from one epoch to the next on large data.
MEGABATCH = 50


def batch_plan(lengths: list[int], *, batch_size: int, epochs: float, seed: int,
               group_by_length: bool, units: list[list[int]] | None = None) -> list[list[int]]:
    """Indices of every micro-batch of the run, in order, fixed up front from ``seed``.

    Each epoch is one shuffled pass over the data cut into ``ceil(n / batch_size)`` batches (the last
    one smaller), so no batch is empty and none spans two epochs, whatever ``n``, ``batch_size`` and
    ``epochs``. A fractional last epoch takes the first batches of its pass (``ceil(per_epoch·epochs)``
    micro-batches in all). With ``group_by_length`` each megabatch of the shuffled pass is sorted by
    length, cut into batches of similar lengths (less padding), and the batches are shuffled (seeded).
    Being a pure function of the lengths and the seed, a resumed run recomputes the same plan.

    ``units`` (groups of indices, e.g. the questions of one document: ``prefix.share_groups``) are shuffled,
    sorted and laid out as wholes (:func:`_unit_pass`), so a unit's examples share a batch unless it had
    to be cut; batches still hold ``batch_size`` examples. Units of one example give the plain plan.
    """
    n = len(lengths)
    if n == 0:
        return []
    per_epoch = math.ceil(n / batch_size)
    total = max(1, math.ceil(per_epoch * epochs))
    rng = random.Random(seed)
    plan: list[list[int]] = []
    while len(plan) < total:
        if units is None:
            idx = list(range(n))
            rng.shuffle(idx)
            if group_by_length:
                mega = MEGABATCH * batch_size
                # sorted() is stable: equal lengths keep their shuffled order
                idx = [i for m in range(0, n, mega) for i in sorted(idx[m:m + mega], key=lambda i: lengths[i])]
        else:
            idx = _unit_pass(units, lengths, rng, batch_size, group_by_length)
        batches = [idx[i:i + batch_size] for i in range(0, n, batch_size)]
        if group_by_length:
            rng.shuffle(batches)
        plan.extend(batches[:total - len(plan)])
    return plan


#: How far ahead the unit plan looks for a unit that fits the room left in a batch before it cuts one.
LOOKAHEAD = 16


def _unit_pass(units: list[list[int]], lengths: list[int], rng: random.Random, batch_size: int,
               grouped: bool) -> list[int]:
    """One shuffled pass over whole units, laid out so that batches of ``batch_size`` cut as few as possible.

    Units are shuffled; with ``grouped`` they are sorted by their longest member within consecutive runs of
    about :data:`MEGABATCH` batches (length grouping, unit by unit). Batches are then filled in that order;
    a unit larger than the room left waits while one of the next :data:`LOOKAHEAD` units that fits goes in,
    and is cut only if none does. Returns the pass's order (cut it into ``batch_size`` pieces for the batches).
    """
    order = list(range(len(units)))
    rng.shuffle(order)
    if grouped:
        runs, run, size = [], [], 0
        for u in order:
            run.append(u)
            size += len(units[u])
            if size >= MEGABATCH * batch_size:
                runs.append(run)
                run, size = [], 0
        runs.append(run)
        order = [u for r in runs for u in sorted(r, key=lambda u: max(lengths[i] for i in units[u]))]
    out: list[int] = []
    pending = list(order)
    while pending:
        room = batch_size - len(out) % batch_size
        k = next((j for j, u in enumerate(pending[:LOOKAHEAD]) if len(units[u]) <= room), 0)
        out.extend(units[pending.pop(k)])
    return out


def padding_fraction(lengths: list[int], plan: list[list[int]]) -> float:
    """Share of the positions of the padded batches that are padding (what grouping by length lowers)."""
    padded = sum(max(lengths[i] for i in b) * len(b) for b in plan)
    return 1.0 - sum(lengths[i] for b in plan for i in b) / padded if padded else 0.0


def _decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The transformer body (hidden states) and the output head of a plain or peft causal LM.

    peft injects LoRA layers in place, so the decoder of ``get_base_model()`` runs the adapters too.
    """
    base = base_model(model)
    for attr in _LOGIT_TRANSFORMS:
        if getattr(base.config, attr, None) not in (None, 1, 1.0):
            raise ConfigError(f"{type(base).__name__} transforms its logits ({attr}); the answer-only loss does not",
                              fix="use a Llama- or Mistral-style model")
    return base.get_decoder(), base.get_output_embeddings()


def _head_loss_sum(head: Any, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # Logits in float32 before the softmax, as transformers' own causal-LM loss does.
    return F.cross_entropy(head(hidden).float(), labels, reduction="sum")


def answer_loss(model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the labelled positions, and their number.

    The same value as ``model(**batch).loss × n`` within float error, but the output head runs only on
    the hidden states of labelled positions (the answer tokens with ``completion_only_loss``): on the
    QA data a handful of positions out of ~120, and the head is the largest matmul of a small model.
    A batch from :func:`ftbench.prefix.pack_shared` (4-D mask, ``position_ids``) gives the same sum as its
    examples padded side by side; within :func:`ftbench.prefix.segment_attention` (which :func:`accumulate_step`
    holds around forward and backward, and :func:`eval_loss` around forward) its attention runs segment by
    segment. Past :data:`HEAD_CHUNK` positions the head runs in chunks whose logits are recomputed in backward.
    """
    decoder, head = _decoder_and_head(model)
    mask, extra = batch["attention_mask"], {}
    if mask.dim() == 4:  # packed shared prefixes (prefix.pack_shared): bool "may attend"
        mask = model_mask(model, mask)
        extra["position_ids"] = batch["position_ids"]
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=mask, use_cache=False, **extra).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    hidden, labels = hidden[:, :-1][keep], labels[keep]
    n = int(labels.numel())
    if n <= HEAD_CHUNK:
        return _head_loss_sum(head, hidden, labels), n
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, n, HEAD_CHUNK):
        total = total + checkpoint(_head_loss_sum, head, hidden[i:i + HEAD_CHUNK], labels[i:i + HEAD_CHUNK],
                                   use_reentrant=False)
    return total, n


class AnswerLoss(torch.nn.Module):
    """:func:`answer_loss` as a module, so that DDP / FSDP / DeepSpeed wrap the forward pass that runs."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model
        base = base_model(model)
        self._no_split_modules = getattr(base, "_no_split_modules", None)  # FSDP wraps these blocks one by one

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        return answer_loss(self.model, {"input_ids": input_ids, "attention_mask": attention_mask,
                                        "labels": labels, "position_ids": position_ids})[0]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(*, model: dict, method: str, method_cfg: dict, train: TrainParams, prompt_style: str,
                system_prompt: str | None, seed: int, lr: float, device: str, dtype: Any,
                data: list[Encoded]) -> dict:
    """Everything a checkpoint must match to be resumed: the training data and every knob that changes
    the batches or the loss. The prompt knobs are also inside the data hash (they shape the tokens);
    they are listed too so that a mismatch is readable in the checkpoint."""
    return {"model": model, "method": method, "method_config": method_cfg, "train": asdict(train),
            "prompt_style": prompt_style, "system_prompt": system_prompt, "seed": seed, "lr": lr,
            # the device type, not its index: run.device auto may resume a run on another GPU of the machine
            "device": torch.device(device).type, "dtype": str(dtype), "n_train": len(data),
            "train_data_sha256": data_hash(data)}


@dataclass
class TrainResult:
    steps: int
    epochs: float
    train_tokens: int          # non-padding tokens through forward+backward
    answer_tokens: int         # tokens the loss was computed on
    samples: int
    train_seconds: float       # time inside the loop, summed over a crash and its resumes (excludes load, save)
    padding_fraction: float    # share of the batch positions the model ran that are padding
    final_loss: float | None
    resumed_from_step: int | None
    energy_before_resume_j: float | None = None  # energy the crashed attempts used (None: not measured)
    world_size: int = 1        # processes that trained (each on its share of every global micro-batch)
    global_batch: int = 0      # examples per optimizer step, all processes together
    computed_tokens: int = 0   # positions the model ran (a shared prefix once per batch; padding excluded)
    prefix_shared: bool = False  # some micro-batch ran packed (computed_tokens < train_tokens)
    micro_batches: int = 0     # forward/backward passes of one process (more than steps × grad_accum where
                               # micro_batch_tokens cut a batch)


class Checkpointer:
    """Resumable state in a directory DVC persists across runs (``persist: true``); what it caches is the
    completion marker a finished run leaves, so a clone's ``dvc pull`` finds the stage up to date.

    ``state.pt`` is replaced atomically; ``config`` (see :func:`fingerprint`) guards against resuming
    a different run.
    """

    def __init__(self, directory: Path, config: dict):
        self.dir = directory
        self.hash = config_hash(config)

    def load(self) -> dict | None:
        path = self.dir / "state.pt"
        if not path.exists():
            return None
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("config_hash") != self.hash:
            log.warning("%s was written for other data or parameters: training starts over", path)
            return None
        return state

    def save(self, state: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "state.pt.tmp"
        torch.save({**state, "config_hash": self.hash}, tmp)
        tmp.replace(self.dir / "state.pt")

    def finish(self) -> None:
        """Drop the resumable state; keep a marker so the (persisted) directory still exists."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / "status.json", {"complete": True, "config_hash": self.hash})


def crash_drill(step: int, rank: int) -> None:
    """``FTBENCH_KILL_AT_STEP=N`` (and ``FTBENCH_KILL_RANK=r``, default 0): SIGKILL rank r right after the
    step-N checkpoint is on disk; what an OOM-killer or a pre-empted node does, for the resume tests and
    for users checking their setup."""
    if os.environ.get("FTBENCH_KILL_AT_STEP") == str(step) and os.environ.get("FTBENCH_KILL_RANK", "0") == str(rank):
        os.kill(os.getpid(), signal.SIGKILL)


def accumulate_step(model: Any, data: list[Encoded], micro_batches: list[list[int]], *, pad_id: int,
                    device: str, dist: Dist | None = None, share_prefix: bool = False) -> dict:
    """Forward and backward of one optimizer step's micro-batches; gradients accumulate in ``.grad``.

    Every micro-batch's summed loss is divided by the labelled tokens of the whole step, so the
    accumulated gradient is that of one batch holding all of them (not a mean of per-batch means,
    which weighs a token of a short-answer batch more). Returns the step's loss (the same
    token-weighted mean) and its token and sample counts.

    ``model`` is a causal LM, an :class:`AnswerLoss`, or (``dist`` active) the one ``dist`` wrapped. With
    several processes each micro-batch is a global one: this rank takes its contiguous share of it (so that a
    document's questions, adjacent in the plan, stay together and can share their prefix),
    the gradient is scaled by ``world_size`` to undo the all-reduce's mean, and the counts returned are
    summed over ranks.

    With ``share_prefix`` a micro-batch whose examples share a prompt prefix runs packed
    (:func:`ftbench.prefix.pack_shared`): same loss and gradients, the prefix computed once, its attention
    segment by segment (:func:`ftbench.prefix.segment_attention`, held through backward too, where gradient
    checkpointing runs the forward again). ``tokens`` counts the examples' tokens either way; ``computed`` the
    positions run, ``positions`` those plus padding.
    """
    dist = dist or Dist()
    n_step = sum(data[i].n_labels for b in micro_batches for i in b)
    done = {"loss": 0.0, "tokens": 0, "samples": 0, "computed": 0, "positions": 0}
    forward = model if dist.active or isinstance(model, AnswerLoss) else AnswerLoss(model)
    for j, b in enumerate(micro_batches):
        share = math.ceil(len(b) / dist.world_size)  # contiguous: a unit's examples stay on one rank
        mine, weight = b[dist.rank * share:(dist.rank + 1) * share], 1.0
        if not mine:  # fewer examples than ranks: this rank still joins the all-reduce, with a zero gradient
            mine, weight = b[:1], 0.0
        batch = micro_batch([data[i] for i in mine], pad_id, share_prefix)
        computed, tokens = batch.pop("computed_tokens"), sum(len(data[i].input_ids) for i in mine)
        done["positions"] += weight * batch["input_ids"].numel()
        done["computed"] += weight * computed
        segments = batch.pop("segments", None)
        batch = {k: v.to(device) for k, v in batch.items()}
        with dist.no_sync(model, skip=j < len(micro_batches) - 1), segment_attention(segments):
            loss_sum = forward(**batch)
            loss = loss_sum / max(n_step, 1)
            if dist.world_size > 1:
                loss = loss * (dist.world_size * weight)
            dist.backward(loss)
        done["loss"] += weight * float(loss_sum.detach()) / max(n_step, 1)
        done["tokens"] += weight * tokens
        done["samples"] += weight * len(mine)
    done = dist.sum(done)
    return {"loss": done["loss"], "tokens": int(done["tokens"]), "answer_tokens": n_step,
            "samples": int(done["samples"]), "computed": int(done["computed"]), "positions": int(done["positions"])}


# Counters a checkpoint carries, so that a resumed run reports the whole run's figures.
_PROGRESS = ("step", "tokens", "answer_tokens", "samples", "computed", "positions", "micro_batches", "seconds")


def linear_warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int,
                           total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' ``get_linear_schedule_with_warmup``, factor for factor (tested): the rate rises linearly over
    ``warmup_steps``, then falls linearly to 0 at ``total_steps``. Here because importing transformers' own imports
    its trainer utilities, and with them peft and bitsandbytes (~3 s), in runs that need neither (top layer, full).
    """
    def factor(step: int) -> float:
        if step < warmup_steps:
            return float(step) / float(max(1, warmup_steps))
        return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(model: Any, data: list[Encoded], cfg: TrainParams, *, lr: float, seed: int, pad_id: int, device: str,
          checkpointer: Checkpointer | None = None, log: Callable[[int, dict], None] | None = None,
          energy_j: Callable[[], float | None] | None = None, dist: Dist | None = None) -> TrainResult:
    """Train the parameters of ``model`` that require grad; return what the cost report needs.

    ``energy_j`` reads the energy this process has used so far (``ResourceMonitor.energy_so_far_j``); each
    checkpoint stores it (summed over ranks), added to what earlier attempts used, so that a resumed run
    reports the energy of the whole run and not only of its last attempt (``TrainResult.energy_before_resume_j``).

    With several processes (``dist``), ``cfg.batch_size`` is per process: the plan is cut into global
    micro-batches of ``batch_size × world_size``, only rank 0 logs and writes checkpoints, and the wrapped
    model is left in ``dist.wrapped`` (FSDP's full parameters are gathered through it to save the result).
    """
    if not data:
        raise DataError("no training example is left after encoding",
                        fix="check data/processed/train.jsonl and train.max_seq_len")
    dist = dist or Dist()
    seed_everything(seed)
    wrapped, optimizer = dist.wrap(AnswerLoss(model), lambda ps: torch.optim.AdamW(ps, lr=lr,
                                                                                   weight_decay=cfg.weight_decay), cfg)
    dist.wrapped = wrapped
    params = [p for p in wrapped.parameters() if p.requires_grad]
    lengths = [len(e.input_ids) for e in data]
    global_bs = cfg.batch_size * dist.world_size
    share = cfg.share_prefix and supports_packing(model, max(lengths))
    plan = batch_plan(lengths, batch_size=global_bs, epochs=cfg.epochs, seed=seed, group_by_length=cfg.group_by_length,
                      units=sharing_units(data) if share else None)
    steps = [plan[i:i + cfg.grad_accum] for i in range(0, len(plan), cfg.grad_accum)]
    per_epoch = math.ceil(len(data) / global_bs)
    scheduler = linear_warmup_schedule(optimizer, math.ceil(cfg.warmup_ratio * len(steps)), len(steps))
    # whole trainable weights by name, for checkpoints (sharded backends checkpoint through accelerate)
    named = {} if dist.sharded else {n: p for n, p in dist.unwrap(wrapped).model.named_parameters() if p.requires_grad}

    progress = dict.fromkeys(_PROGRESS, 0)
    progress["seconds"] = 0.0
    resumed, energy_before = None, 0.0
    state = checkpointer.load() if checkpointer else None
    if state is not None:
        if dist.sharded:
            dist.load_sharded(checkpointer.dir, state["sharded"])
        else:
            with torch.no_grad():
                for n, t in state["trainable"].items():
                    named[n].copy_(t.to(named[n].device, named[n].dtype))
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng = state["rng_ranks"][dist.rank] if "rng_ranks" in state else state
        torch.set_rng_state(rng["rng_cpu"])
        if rng.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["rng_cuda"])
        random.setstate(rng["rng_py"])
        progress = {k: state.get(k, 0) for k in _PROGRESS}
        resumed = progress["step"]
        energy_before = state.get("energy_j")

    wrapped.train()
    loss_value = None
    start = time.perf_counter() - progress["seconds"]  # the clock goes on from where the checkpoint left it
    # micro_batch_tokens is per process, like batch_size: a global micro-batch may hold world_size times as many
    # positions, and each rank then takes its share of the examples (so a rank's share may be over it or under it)
    budget = cfg.micro_batch_tokens * dist.world_size if cfg.micro_batch_tokens else None
    for micro_batches in steps[progress["step"]:]:
        micro_batches = [p for b in micro_batches for p in split_by_positions(data, b, budget, share)]
        done = accumulate_step(wrapped, data, micro_batches, pad_id=pad_id, device=device, dist=dist,
                               share_prefix=share)
        for k in ("tokens", "answer_tokens", "samples", "computed", "positions"):
            progress[k] += done[k]
        progress["micro_batches"] += len(micro_batches)
        if cfg.max_grad_norm is not None:
            dist.clip_grad_norm_(wrapped, params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        progress["step"] += 1
        loss_value = done["loss"]
        last = progress["step"] == len(steps)
        if log and dist.is_main and (progress["step"] % cfg.log_every == 0 or last):
            log(progress["step"], {"loss": loss_value, "lr": scheduler.get_last_lr()[0],
                                   "epoch": progress["samples"] / len(data)})
        if checkpointer and cfg.checkpoint_every and progress["step"] % cfg.checkpoint_every == 0 and not last:
            progress["seconds"] = time.perf_counter() - start
            _checkpoint(checkpointer, dist, named, optimizer, scheduler, progress, energy_before, energy_j)
            crash_drill(progress["step"], dist.rank)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    wrapped.eval()
    ran = plan[:sum(len(s) for s in steps[:progress["step"]])]
    return TrainResult(steps=progress["step"], epochs=len(ran) / per_epoch, train_tokens=progress["tokens"],
                       answer_tokens=progress["answer_tokens"], samples=progress["samples"], train_seconds=seconds,
                       padding_fraction=1.0 - progress["computed"] / max(progress["positions"], 1),
                       final_loss=loss_value, computed_tokens=progress["computed"],
                       prefix_shared=progress["computed"] < progress["tokens"],
                       micro_batches=progress["micro_batches"],
                       resumed_from_step=resumed, energy_before_resume_j=energy_before if resumed is not None else 0.0,
                       world_size=dist.world_size, global_batch=global_bs * cfg.grad_accum)


def _rng_state() -> dict:
    return {"rng_cpu": torch.get_rng_state(), "rng_py": random.getstate(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _checkpoint(checkpointer: Checkpointer, dist: Dist, named: dict, optimizer: Any, scheduler: Any, progress: dict,
                energy_before: float | None, energy_j: Callable[[], float | None] | None) -> None:
    """Write a resumable checkpoint: rank 0 alone writes state.pt; a sharded backend's shards come from every
    rank through accelerate. Every rank waits until it is on disk, so a rank killed after it loses nothing."""
    ranks = dist.gather(energy_j() if energy_j else None)
    now = None if any(e is None for e in ranks) else sum(ranks)
    rngs = dist.gather(_rng_state())
    sharded = dist.save_sharded(checkpointer.dir, progress["step"]) if dist.sharded else None
    if dist.is_main:
        weights = {"sharded": sharded} if sharded else {
            "trainable": {n: p.detach().cpu() for n, p in named.items()}, "optimizer": optimizer.state_dict()}
        checkpointer.save({
            "energy_j": None if now is None or energy_before is None else energy_before + now,
            **weights, "scheduler": scheduler.state_dict(),
            **(rngs[0] if dist.world_size == 1 else {"rng_ranks": rngs}), **progress,
        })
    dist.barrier()
    if sharded:
        dist.drop_sharded(checkpointer.dir, keep=sharded)


@torch.no_grad()
def eval_loss(model: Any, data: list[Encoded], *, batch_size: int, pad_id: int, device: str,
              dist: Dist | None = None, share_prefix: bool = False) -> float | None:
    """Mean answer-token loss on held-out pairs (validation), weighted by token count.

    With several processes every rank computes it through the wrapped model (FSDP gathers its shards in
    the wrapped forward), on all the pairs: the same value everywhere, no gathering needed.
    """
    forward = dist.wrapped if dist is not None and dist.wrapped is not None else AnswerLoss(model)
    forward.eval()
    total, count = 0.0, 0
    for i in range(0, len(data), batch_size):
        part = data[i:i + batch_size]
        batch = micro_batch(part, pad_id, share_prefix and supports_packing(model, max(len(e.input_ids) for e in part)))
        batch.pop("computed_tokens")
        segments = batch.pop("segments", None)
        batch = {k: v.to(device) for k, v in batch.items()}
        with segment_attention(segments):
            total += float(forward(**batch))
        count += int((batch["labels"][:, 1:] != IGNORE).sum())
    return total / count if count else None


def result_dict(result: TrainResult) -> dict:
    return asdict(result)
