"""The training loop and the methods on the tiny random Llama/Mistral: batching, loss, regime, resume,
checkpoint fingerprint, peak-FLOP cache, answer-only logits, and the saved model reproducing the trained one."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pytest
import torch

from ftbench import resources, training
from ftbench.methods import load_tuned, prepare, regime, save_trained
from ftbench.params import LoraParams, ModelSpec, QLoraParams, TopLayerParams, TrainParams
from ftbench.training import (
    IGNORE,
    Checkpointer,
    accumulate_step,
    answer_loss,
    batch_plan,
    collate,
    encode_examples,
    fingerprint,
    padding_fraction,
    train,
)

SYSTEM = "Answer with the exact words from the context, nothing else."
EXAMPLES = [
    {"instruction": f"Who acted in event {i}?",
     "input": f"Report {i}: " + "On a grey morning the coastal brigade moved north. " * (1 + i % 4)
              + f"Unit {i} led the patrol.",
     "output": f"Unit {i}" + " and the reserve" * (i % 3)}
    for i in range(12)
]
NO_DROPOUT = {"lora": LoraParams(dropout=0.0), "qlora": QLoraParams(dropout=0.0), "top_layer": TopLayerParams()}


def cfg(**kw) -> TrainParams:
    base = dict(epochs=1, batch_size=4, grad_accum=1, warmup_ratio=0.0, log_every=1, checkpoint_every=0,
                max_seq_len=192, lr=1e-2)
    return TrainParams(**{**base, **kw})


@pytest.fixture(scope="module")
def data(smollm_tokenizer):
    return encode_examples(smollm_tokenizer, EXAMPLES, max_seq_len=192, style="chat", system_prompt=SYSTEM,
                           completion_only=True, counts={})


def build(path, method="lora", *, seed=0, **kw):
    torch.manual_seed(seed)
    return prepare(method, "tiny", ModelSpec(path=str(path)), NO_DROPOUT[method] if "cfg" not in kw else kw.pop("cfg"),
                   dtype=kw.pop("dtype", torch.float32), device="cpu", **kw)


def assert_backward_in_fp32(model) -> None:
    """One answer-only forward and backward: a finite loss over the 2 labelled positions, and every trainable
    parameter gets a float32 gradient (its master precision), whatever the dtype of the frozen rest."""
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             "labels": torch.tensor([[IGNORE, IGNORE, 7, 8]])}
    loss, n = answer_loss(model, batch)
    loss.backward()
    assert n == 2 and torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


def assert_trains_exactly(model, expected: set[str], frozen: torch.dtype) -> None:
    """Every parameter: trains iff it is in ``expected``; trainable ones in fp32 (the master weights), frozen
    floating-point ones in ``frozen``; and train.json's regime says so (LLaMA-Factory's test_freeze style)."""
    for n, p in model.named_parameters():
        assert p.requires_grad == (n in expected), n
        if p.requires_grad:
            assert p.dtype == torch.float32, n
        elif p.is_floating_point():
            assert p.dtype == frozen, n
    assert regime(model) == {"trainable_dtype": ["float32"], "gradient_checkpointing": False}


def run(model, data, tok, c, **kw):
    return train(model, data, c, lr=c.lr, seed=0, pad_id=tok.pad_token_id, device="cpu", **kw)


# --- 1. batching ---------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [False, True])
def test_batch_plan_every_epoch_covers_the_data_once(group):
    lengths = [7, 30, 12, 12, 90, 5, 44, 18, 61, 3, 25]
    for n in (1, 3, 8, 11):
        for bs in (1, 3, 4, 8):
            for epochs in (0.5, 1, 2, 2.5, 3):
                plan = batch_plan(lengths[:n], batch_size=bs, epochs=epochs, seed=1, group_by_length=group)
                per_epoch = math.ceil(n / bs)
                assert len(plan) == max(1, math.ceil(per_epoch * epochs))
                assert all(1 <= len(b) <= bs for b in plan)
                for e in range(int(epochs)):  # every full epoch: each example exactly once
                    assert sorted(i for b in plan[e * per_epoch:(e + 1) * per_epoch] for i in b) == list(range(n))


def test_two_epochs_with_a_partial_last_batch_train(tiny_llama, smollm_tokenizer, data):
    """12 examples, batch 5: the old plan asked for 6 batches out of a 24-index order cut at 5 -> an empty batch."""
    model = build(tiny_llama)
    result = run(model, data, smollm_tokenizer, cfg(epochs=2, batch_size=5, grad_accum=2))
    assert result.samples == 24 and result.steps == 3 and result.epochs == 2
    result = run(build(tiny_llama), data, smollm_tokenizer, cfg(epochs=1.5, batch_size=5, group_by_length=False))
    assert result.steps == 5 and result.samples == 12 + 10  # 3 batches (5, 5, 2), then 2 of the second pass


# --- 2. token-weighted loss across gradient accumulation ------------------------------------------


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["lora", "top_layer"])
def test_grad_accum_is_the_same_step_as_one_big_batch(tiny_llama, smollm_tokenizer, data, method):
    rows = list(range(8))  # answers of 3 to 9 tokens: unequal counts per micro-batch
    assert len({sum(data[i].n_labels for i in rows[:4]), sum(data[i].n_labels for i in rows[4:])}) == 2
    model = build(tiny_llama, method)
    model.train()
    big = accumulate_step(model, data, [rows], pad_id=smollm_tokenizer.pad_token_id, device="cpu")
    g_big = _grads(model)
    model.zero_grad()
    small = accumulate_step(model, data, [rows[:4], rows[4:]], pad_id=smollm_tokenizer.pad_token_id, device="cpu")
    g_small = _grads(model)
    assert small["loss"] == pytest.approx(big["loss"], rel=1e-5)
    reference = model(**collate([data[i] for i in rows], smollm_tokenizer.pad_token_id)).loss
    assert big["loss"] == pytest.approx(float(reference.detach()), rel=1e-5)
    for n in g_big:
        torch.testing.assert_close(g_small[n], g_big[n], rtol=1e-4, atol=1e-6)

    # and through the loop: one optimizer step of 8 == two accumulated steps of 4, same weights after it
    c8 = cfg(batch_size=8, lr=1e-3)
    a, b = build(tiny_llama, method), build(tiny_llama, method)
    ra = run(a, data[:8], smollm_tokenizer, c8)
    rb = run(b, data[:8], smollm_tokenizer, dataclasses.replace(c8, batch_size=4, grad_accum=2))
    assert ra.steps == rb.steps == 1 and rb.final_loss == pytest.approx(ra.final_loss, rel=1e-5)
    pb = dict(b.named_parameters())
    for n, p in a.named_parameters():
        torch.testing.assert_close(p, pb[n], rtol=1e-4, atol=1e-6)


# --- 3. max_grad_norm ----------------------------------------------------------------------------


def test_max_grad_norm_is_the_parameter(tiny_llama, smollm_tokenizer, data, monkeypatch):
    calls = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda p, max_norm, **kw: calls.append(max_norm)
                        or real(p, max_norm, **kw))
    run(build(tiny_llama), data[:8], smollm_tokenizer, cfg(max_grad_norm=0.25))
    assert calls == [0.25, 0.25]
    calls.clear()
    run(build(tiny_llama), data[:8], smollm_tokenizer, cfg(max_grad_norm=None))
    assert calls == []


# --- 4, 6, 9. resume: time carried, same batches, stale checkpoints refused ------------------------


class Crash(Exception):
    pass


class CrashingCheckpointer(Checkpointer):
    """Dies right after the checkpoint of ``at`` is on disk, like the SIGKILL drill, but in-process."""

    def __init__(self, directory, config, at):
        super().__init__(directory, config)
        self.at = at

    def save(self, state):
        super().save(state)
        if state["step"] == self.at:
            raise Crash


def _key(data, c, system=SYSTEM):
    return fingerprint(model={"path": "tiny"}, method="lora", method_cfg={}, train=c, prompt_style="chat",
                       system_prompt=system, seed=0, lr=c.lr, device="cpu", dtype=torch.float32, data=data)


def _recorder(model):
    seen = []
    model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].tolist()))
    return seen


def test_resume_carries_time_and_counts_and_sees_the_same_batches(tiny_llama, smollm_tokenizer, data, tmp_path):
    c = cfg(batch_size=2, checkpoint_every=2, epochs=1.5)
    fresh_model = build(tiny_llama)
    fresh_seen = _recorder(fresh_model)
    fresh = run(fresh_model, data, smollm_tokenizer, c)

    crashing = CrashingCheckpointer(tmp_path / "ck", _key(data, c), at=2)
    first = build(tiny_llama)
    seen = _recorder(first)
    with pytest.raises(Crash):
        run(first, data, smollm_tokenizer, c, checkpointer=crashing, log=lambda step, values: time.sleep(0.5))
    before_kill = 1.0  # two logged steps of 0.5 s each, inside the loop
    second = build(tiny_llama)
    seen_after = _recorder(second)
    resumed = run(second, data, smollm_tokenizer, c, checkpointer=Checkpointer(tmp_path / "ck", _key(data, c)))

    assert resumed.resumed_from_step == 2
    assert resumed.train_seconds >= before_kill
    assert (resumed.train_tokens, resumed.samples, resumed.answer_tokens, resumed.steps) == \
        (fresh.train_tokens, fresh.samples, fresh.answer_tokens, fresh.steps)
    assert seen[:4] + seen_after == fresh_seen  # 2 steps x 1 micro-batch before the crash, the rest after
    assert resumed.final_loss == pytest.approx(fresh.final_loss, abs=1e-6)


def test_resume_carries_energy_of_the_crashed_attempt(tiny_llama, smollm_tokenizer, data, tmp_path):
    """Each checkpoint stores the energy used so far; the resumed run reports it, and train.json adds it to
    its own attempt's energy. Energy that was not measured before the crash stays unknown (None)."""
    from ftbench.costs import train_report
    from ftbench.resources import PeakFlops

    c = cfg(batch_size=2, checkpoint_every=2, epochs=1.5)
    for measured_before, expected in ((lambda: 7.5, 7.5), (lambda: None, None)):
        directory = tmp_path / f"ck-{expected}"
        with pytest.raises(Crash):
            run(build(tiny_llama), data, smollm_tokenizer, c, energy_j=measured_before,
                checkpointer=CrashingCheckpointer(directory, _key(data, c), at=2))
        model = build(tiny_llama)
        resumed = run(model, data, smollm_tokenizer, c, energy_j=lambda: 2.0,
                      checkpointer=Checkpointer(directory, _key(data, c)))
        assert resumed.resumed_from_step == 2 and resumed.energy_before_resume_j == expected
        report = train_report(model, resumed, identity={}, cfg=c, lr=c.lr, val_loss=None,
                              resources={"device": "cpu", "energy_j": 2.0, "energy_wh": 2.0 / 3600},
                              peak=PeakFlops(1e10, "params", "test"), artifact=tmp_path, base_size_bytes=None,
                              train_data_sha256="x", examples={})
        assert report["energy_j"] == (None if expected is None else 9.5)
    assert run(build(tiny_llama), data, smollm_tokenizer, c).energy_before_resume_j == 0.0


def test_stale_checkpoint_is_not_resumed(tiny_llama, smollm_tokenizer, data, tmp_path):
    c = cfg(batch_size=2, checkpoint_every=2)
    directory = tmp_path / "ck"
    with pytest.raises(Crash):
        run(build(tiny_llama), data, smollm_tokenizer, c,
            checkpointer=CrashingCheckpointer(directory, _key(data, c), at=2))

    edited = encode_examples(smollm_tokenizer, [{**EXAMPLES[0], "output": "Unit 0 alone"}, *EXAMPLES[1:]],
                             max_seq_len=192, style="chat", system_prompt=SYSTEM, completion_only=True, counts={})
    other_prompt = encode_examples(smollm_tokenizer, EXAMPLES, max_seq_len=192, style="chat", system_prompt="Be brief.",
                                   completion_only=True, counts={})
    stale = [(edited, _key(edited, c)), (other_prompt, _key(other_prompt, c, "Be brief.")),
             (data, _key(data, dataclasses.replace(c, group_by_length=False))),
             (data, _key(data, dataclasses.replace(c, grad_accum=2))),
             (data, _key(data, dataclasses.replace(c, max_seq_len=160)))]
    no_saving = dataclasses.replace(c, checkpoint_every=0)  # keep the crashed run's checkpoint on disk
    for d, key in stale:
        result = run(build(tiny_llama), d, smollm_tokenizer, no_saving, checkpointer=Checkpointer(directory, key))
        assert result.resumed_from_step is None
    # the unchanged run does resume from it
    result = run(build(tiny_llama), data, smollm_tokenizer, c, checkpointer=Checkpointer(directory, _key(data, c)))
    assert result.resumed_from_step == 2


def test_length_grouping_pads_less_than_random_batches():
    rng = torch.Generator().manual_seed(0)
    lengths = [int(x) for x in torch.randint(20, 60, (200,), generator=rng)]
    lengths += [int(x) for x in torch.randint(300, 500, (40,), generator=rng)]  # a long tail
    random_plan = batch_plan(lengths, batch_size=8, epochs=1, seed=3, group_by_length=False)
    grouped = batch_plan(lengths, batch_size=8, epochs=1, seed=3, group_by_length=True)
    assert padding_fraction(lengths, grouped) < 0.5 * padding_fraction(lengths, random_plan)
    assert grouped == batch_plan(lengths, batch_size=8, epochs=1, seed=3, group_by_length=True)  # seeded
    assert grouped != batch_plan(lengths, batch_size=8, epochs=1, seed=4, group_by_length=True)
    assert sorted(i for b in grouped for i in b) == list(range(len(lengths)))
    longest = [max(lengths[i] for i in b) for b in grouped]
    assert longest != sorted(longest)  # the groups are shuffled, not served shortest first


# --- 5. one regime for every method ---------------------------------------------------------------


def _expected_trainable(model, method):
    names = [n for n, _ in model.named_parameters()]
    if method in ("lora", "qlora"):
        return {n for n in names if ".lora_A." in n or ".lora_B." in n}
    return {n for n in names if n.startswith("model.layers.1.")}


@pytest.mark.parametrize("method", ["lora", "qlora", "top_layer"])
@pytest.mark.parametrize("frozen", [torch.float32, torch.bfloat16])
def test_every_parameter_trains_or_not_in_the_stated_dtype(tiny_llama, method, frozen):
    """LLaMA-Factory test_freeze style: requires_grad and dtype of every parameter, per method."""
    if method == "qlora" and frozen == torch.bfloat16:
        pytest.skip("the 4-bit compute dtype follows the device (float32 on the CPU)")
    model = build(tiny_llama, method, dtype=frozen, trainable_dtype=torch.float32)
    expected = _expected_trainable(model, method)
    assert expected and len(expected) == (8 if method != "top_layer" else 9)  # 2 blocks x q,v x A,B | one block
    assert_trains_exactly(model, expected, frozen)
    assert_backward_in_fp32(model)  # the fp32 parts run inside the low-precision model, forward and backward


@pytest.mark.parametrize("bits,layer", [(4, "Linear4bit"), (8, "Linear8bitLt")])
def test_qlora_base_layers_are_quantised(tiny_llama, bits, layer):
    import bitsandbytes as bnb

    model = build(tiny_llama, "qlora", cfg=QLoraParams(bits=bits, dropout=0.0))
    cls = getattr(bnb.nn, layer)
    for name, module in model.named_modules():
        if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")):
            base = getattr(module, "base_layer", module)
            assert isinstance(base, cls), f"{name} is {type(base).__name__}"
    assert not isinstance(model.get_output_embeddings(), cls)  # the head stays unquantised


def test_qlora_takes_one_kernel_path_on_every_cpu(tiny_llama, monkeypatch, tmp_path):
    """On a CPU with AVX512-BF16, bitsandbytes would evaluate 4-bit layers with a fused bf16 kernel (and this
    CPU-only machine with the fp32 dequantise path): the same run scored differently across machines. Every
    quantised load (train, evaluate, the compare app) switches that kernel off."""
    import bitsandbytes as bnb
    import bitsandbytes.nn.modules as bnb_modules

    from ftbench.methods import load_tuned, save_trained

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)  # pretend to be such a CPU
    cfg = QLoraParams(dropout=0.0)
    model = build(tiny_llama, "qlora", cfg=cfg)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
    raw = bnb.nn.Linear4bit(8, 8, quant_type="nf4")
    assert raw.support_avx512bf16_for_cpu  # what bitsandbytes does on its own there: the patch took effect
    save_trained(model, "qlora", tmp_path, {})
    tuned = load_tuned("qlora", "tiny", ModelSpec(path=str(tiny_llama)), cfg, tmp_path,
                       dtype=torch.float32, device="cpu")
    loaded = [m for m in tuned.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert loaded and not any(m.support_avx512bf16_for_cpu for m in loaded)


def test_top_layer_with_head_in_fp32_inside_a_bf16_model(tiny_mistral):
    model = build(tiny_mistral, "top_layer", cfg=TopLayerParams(lm_head=True), dtype=torch.bfloat16)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "lm_head.weight" in trainable and "model.embed_tokens.weight" not in trainable  # untied head
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             "labels": torch.tensor([[IGNORE, 6, 7, 8]])}
    loss, n = answer_loss(model, batch)
    loss.backward()
    assert n == 3 and model.lm_head.weight.grad.dtype == torch.float32
    assert model(**batch).logits.dtype == torch.float32


@pytest.mark.parametrize("method", ["lora", "qlora", "top_layer"])
def test_gradient_checkpointing_for_every_method_same_gradients(tiny_llama, smollm_tokenizer, data, method):
    batch = collate(data[:4], smollm_tokenizer.pad_token_id)
    grads, embedded = [], []
    for checkpointing in (False, True):
        model = build(tiny_llama, method, gradient_checkpointing=checkpointing)
        assert regime(model)["gradient_checkpointing"] is checkpointing
        model.train()
        model.get_input_embeddings().register_forward_hook(lambda m, a, out: embedded.append(out.requires_grad))
        answer_loss(model, batch)[0].backward()
        grads.append(_grads(model))
    assert embedded == [False, False]  # no backward through the frozen embeddings (and, for top_layer, blocks)
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7)


# --- 7. peak FLOP/s measured once per machine ------------------------------------------------------


def test_peak_flops_probe_is_cached_per_machine_and_dtype(tmp_path, monkeypatch):
    monkeypatch.setenv("FTBENCH_CACHE", str(tmp_path))
    probes = []
    monkeypatch.setattr(resources, "measure_peak_flops",
                        lambda device, dtype, n: probes.append((device, dtype, n)) or 1e9 * len(probes))
    first = resources.peak_flops("cpu", torch.float32)
    again = resources.peak_flops("cpu", torch.float32)
    assert (first.source, again.source) == ("measured_matmul_probe", "cached_probe")
    assert again.flops == first.flops == 1e9 and len(probes) == 1
    table = json.loads((tmp_path / "peak_flops.json").read_text())
    assert list(table) == [first.key] and f"threads={torch.get_num_threads()}" in first.key
    other = resources.peak_flops("cpu", torch.bfloat16)
    assert other.source == "measured_matmul_probe" and other.flops == 2e9 and other.key != first.key
    assert resources.peak_flops("cpu", torch.float32, 5e12) == resources.PeakFlops(5e12, "params", None)
    assert len(probes) == 2


# --- 8. answer-only logits -------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_mistral"])
@pytest.mark.parametrize("method,method_cfg", [("lora", LoraParams(dropout=0.0)), ("qlora", QLoraParams(dropout=0.0)),
                                               ("top_layer", TopLayerParams(lm_head=True))])
@pytest.mark.parametrize("completion_only", [True, False])
def test_answer_only_loss_equals_the_full_logits_loss(request, smollm_tokenizer, arch, method, method_cfg,
                                                      completion_only):
    rows = encode_examples(smollm_tokenizer, EXAMPLES[:4], max_seq_len=192, style="chat", system_prompt=SYSTEM,
                           completion_only=completion_only, counts={})
    batch = collate(rows, smollm_tokenizer.pad_token_id)
    model = build(request.getfixturevalue(arch), method, cfg=method_cfg)
    shapes = []
    model.get_output_embeddings().register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape)))
    loss, n = answer_loss(model, batch)
    assert n == int((batch["labels"][:, 1:] != IGNORE).sum()) and shapes == [(n, len(smollm_tokenizer))]
    with torch.no_grad():
        reference = model(**batch).loss
    assert float(loss) / n == pytest.approx(float(reference), rel=1e-5)


def test_chunked_head_gives_the_same_loss_and_gradients(tiny_llama, smollm_tokenizer, monkeypatch):
    rows = encode_examples(smollm_tokenizer, EXAMPLES[:3], max_seq_len=192, style="chat", system_prompt=SYSTEM,
                           completion_only=False, counts={})
    batch = collate(rows, smollm_tokenizer.pad_token_id)
    model = build(tiny_llama, "top_layer", cfg=TopLayerParams(lm_head=True))
    whole, _ = answer_loss(model, batch)
    whole.backward()
    g_whole = _grads(model)
    model.zero_grad()
    monkeypatch.setattr(training, "HEAD_CHUNK", 16)
    chunked, n = answer_loss(model, batch)
    chunked.backward()
    assert n > 16 * 4
    assert float(chunked) == pytest.approx(float(whole), rel=1e-5)
    for name, g in _grads(model).items():
        torch.testing.assert_close(g, g_whole[name], rtol=1e-4, atol=1e-6)


# --- 10, 11. the trained model learns, and what ships reproduces it --------------------------------


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("method", ["lora", "qlora", "top_layer"])
def test_training_lowers_the_loss_and_the_saved_model_reproduces_it(tiny_llama, smollm_tokenizer, data, method,
                                                                    tmp_path):
    spec, method_cfg = ModelSpec(path=str(tiny_llama)), NO_DROPOUT[method]
    fixed = collate(data[:4], smollm_tokenizer.pad_token_id)
    model = build(tiny_llama, method)
    model.eval()
    with torch.no_grad():
        before = float(model(**fixed).loss)
    run(model, data[:4], smollm_tokenizer, cfg(epochs=8, lr=1e-2))
    with torch.no_grad():
        after = float(model(**fixed).loss)
    # The tiny model's frozen, tied, 0.02-std embeddings cap what adapters can do to its logits (about
    # 1.3 nats below uniform at best); 8 steps take LoRA ~0.2 and top_layer ~0.8 nats down. The slow
    # SmolLM2 test asks for a relative drop.
    assert after < before - 0.15, (before, after)

    save_trained(model, method, tmp_path, {"method": method})
    trained = _logits(model, fixed)
    reloaded = load_tuned(method, "tiny", spec, method_cfg, tmp_path, dtype=torch.float32, device="cpu")
    torch.testing.assert_close(_logits(reloaded, fixed), trained, rtol=1e-4, atol=1e-4)
    if method == "lora":
        assert not hasattr(reloaded, "peft_config")  # merged into plain weights
        unmerged = load_tuned(method, "tiny", spec, method_cfg, tmp_path, dtype=torch.float32, device="cpu",
                              merge=False)
        assert hasattr(unmerged, "peft_config")
        torch.testing.assert_close(_logits(reloaded, fixed), _logits(unmerged, fixed), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("warmup", "total"), [(0, 1), (1, 1), (3, 45), (5, 45), (0, 10), (45, 45)])
def test_linear_warmup_schedule_is_transformers_own(warmup, total):
    """ftbench's schedule (kept out of transformers' trainer utilities, whose import pulls in peft and
    bitsandbytes) gives exactly the learning rates of transformers' ``get_linear_schedule_with_warmup``, past the
    end included; and a run resumed halfway from either one's state dict into the other (a checkpoint written
    before the switch, or read by older code) goes on with the same rates."""
    from transformers import get_linear_schedule_with_warmup

    from ftbench.training import linear_warmup_schedule

    def rates(first, then=None, resume_at=None):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        sched = first(opt, warmup, total)
        out = []
        for step in range(total + 2):
            if step == resume_at:  # a new optimizer and scheduler take over from the saved state
                state, opt = sched.state_dict(), torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
                sched = then(opt, warmup, total)
                sched.load_state_dict(state)
                opt.param_groups[0]["lr"] = sched.get_last_lr()[0]  # as the optimizer's own state dict restores it
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    theirs = rates(get_linear_schedule_with_warmup)
    assert rates(linear_warmup_schedule) == theirs
    half = max(1, total // 2)
    assert rates(get_linear_schedule_with_warmup, linear_warmup_schedule, resume_at=half) == theirs
    assert rates(linear_warmup_schedule, get_linear_schedule_with_warmup, resume_at=half) == theirs
