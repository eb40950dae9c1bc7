"""The compare app: ask every run of a model the same question, flag answers, and rate runs blind.

    python -m ftbench.compare [--params params.yaml] [--host 127.0.0.1] [--port 7860]

Run it from the repository root (it reads ``params.yaml``, ``models/`` and ``predictions/``).

* **Ask** answers with the baseline and every tuned run of one model side by side, through the same
  ``generation.fit_prompts`` and ``generation.generate`` calls (prompt format, context shortening by
  ``eval.context_truncation``, greedy decoding settings) as the ``evaluate`` stage. One base model is
  loaded once: LoRA adapters are loaded under their run names and switched with ``set_adapter``
  (``disable_adapter`` for the baseline); a top-layer run copies its saved blocks into the base and the
  base tensors are restored afterwards. QLoRA adapters need a quantised
  base: a second, quantised copy is loaded on first use, only when the model has QLoRA runs. LoRA is
  *not* merged (``evaluate`` merges it): merging is a float-rounding-level change, and unmerged adapters
  let one base serve every run.
* **Flag** appends the question, context, every answer and a reason to ``data/human/flags.jsonl``.
* **Rate (blind)** needs no model: it samples a test question and two runs' committed predictions, shows
  them as A and B in random order, appends the vote to ``data/human/votes.jsonl`` and then reveals the runs.

Generation is queued one request at a time (the adapters of one in-memory model cannot serve two runs at
once); Flag and Rate have their own unlimited queue, so a slow model never blocks raters.
"""

from __future__ import annotations

import argparse
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from ftbench.generation import EvalPrompt, fit_prompts, generate
from ftbench.human import FLAGS_PATH, VOTES_PATH, append_record, make_vote, model_predictions, utc_now
from ftbench.io import FtbenchError
from ftbench.methods import ADAPTER_METHODS, TOP_LAYER_FILE, quantization_config
from ftbench.params import METHOD_PARAMS, Params, load_params
from ftbench.prompts import render_prompt
from ftbench.registry import load_model, load_tokenizer, pick_device, pick_dtype
from ftbench.stage import model_dir, run_name

MAX_SLOTS = 12  # answer boxes on the Ask tab (baseline + up to 11 tuned runs)
RUN_DIR = re.compile(rf"^({'|'.join(METHOD_PARAMS)})-s(\d+)$")
CHOICE_LABELS = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both bad"}


@dataclass
class Run:
    """One answerable run of a model: the baseline, or a tuned artifact under ``models/<model>/<run>``."""

    name: str
    method: str | None = None
    path: Path | None = None
    problem: str | None = None  # why it cannot answer (missing adapter), shown in its answer box


def _artifact_problem(model: str, method: str, seed: str, path: Path) -> str | None:
    needed = path / ("adapter_config.json" if method in ADAPTER_METHODS else TOP_LAYER_FILE)
    if needed.is_file():
        return None
    return f"missing adapter: {needed} not found; train it (`dvc repro train@{model}-{method}-{seed}`) or `dvc pull`"


def list_runs(root: Path, params: Params, model: str) -> list[Run]:
    """Baseline first, then every tuned run the run matrix names or ``models/<model>/`` holds."""
    names = {run_name(m, s) for m in params.run.methods for s in params.run.seeds} if model in params.run.models \
        else set()
    folder = (root / model_dir(model, "baseline")).parent
    names |= {p.name for p in folder.iterdir() if p.is_dir() and RUN_DIR.match(p.name)} if folder.is_dir() else set()
    runs = [Run("baseline")]
    for name in sorted(names):
        method, seed = RUN_DIR.match(name).groups()
        path = root / model_dir(model, name)
        runs.append(Run(name, method, path, _artifact_problem(model, method, seed, path)))
    return runs


@dataclass
class Engine:
    """One model in memory serving every run: base + named LoRA adapters, swapped top-layer blocks,
    and (only if needed, on first use) a quantised base for QLoRA adapters."""

    root: Path
    params: Params
    model: str
    runs: list[Run]
    device: str = field(init=False)
    tokenizer: Any = field(init=False)
    _quantised: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        import torch
        from peft import PeftModel
        from safetensors.torch import load_file

        spec = self.params.model(self.model)
        self.device = pick_device(self.params.run.device)
        self.dtype = pick_dtype(self.params.train.dtype, self.device)
        self.tokenizer = load_tokenizer(self.model, spec)
        base = load_model(self.model, spec, dtype=self.dtype, device=self.device)
        self.window = getattr(base.config, "max_position_embeddings", None)
        # Parameter objects survive peft's wrapping (they move under ``base_layer``), so top-layer
        # tensors can be swapped by their plain names even when adapters are loaded.
        self._params = dict(base.named_parameters())
        self._blocks: dict[str, dict[str, torch.Tensor]] = {}
        self.net = base
        for run in self.runs:
            if run.problem or run.method in (None, "qlora"):
                continue
            if run.method in ADAPTER_METHODS:  # lora, dora, lora_all: named adapters on the one base
                if isinstance(self.net, PeftModel):
                    self.net.load_adapter(run.path, adapter_name=run.name)
                else:
                    self.net = PeftModel.from_pretrained(base, run.path, adapter_name=run.name)
            else:
                state = load_file(run.path / TOP_LAYER_FILE, device=self.device)
                if set(state) - set(self._params):
                    run.problem = f"{run.path / TOP_LAYER_FILE} holds weights this model lacks: retrain it"
                else:
                    self._blocks[run.name] = state

    @property
    def has_qlora(self) -> bool:
        return any(r.method == "qlora" and not r.problem for r in self.runs)

    def _qlora_net(self) -> Any:
        """The quantised base with every QLoRA adapter, loaded on first use (as ``load_tuned`` loads it)."""
        if self._quantised is None:
            from peft import PeftModel

            cfg = self.params.method("qlora")
            net = load_model(self.model, self.params.model(self.model), dtype=self.dtype, device=self.device,
                             quantization_config=quantization_config(cfg, self.device))
            for run in (r for r in self.runs if r.method == "qlora" and not r.problem):
                if isinstance(net, PeftModel):
                    net.load_adapter(run.path, adapter_name=run.name)
                else:
                    net = PeftModel.from_pretrained(net, run.path, adapter_name=run.name)
            self._quantised = net
        return self._quantised

    def prompt(self, example: dict) -> tuple[EvalPrompt, int]:
        """The prompt ``evaluate`` would build for ``example`` (shortened by ``eval.context_truncation`` to
        ``train.max_seq_len``), and the token count of the unshortened one."""
        ev = self.params.eval
        full = render_prompt(self.tokenizer, example, ev.prompt, ev.system_prompt)
        fitted = fit_prompts(self.tokenizer, [example], style=ev.prompt, system_prompt=ev.system_prompt,
                             max_prompt_tokens=self.params.train.max_seq_len,
                             context_truncation=ev.context_truncation)[0]
        return fitted, len(self.tokenizer(full, add_special_tokens=False)["input_ids"])

    def _generate(self, net: Any, prompt: EvalPrompt) -> str:
        ev = self.params.eval
        answers, _ = generate(net, self.tokenizer, [prompt.text], max_new_tokens=ev.max_new_tokens,
                              batch_size=ev.batch_size, max_prompt_tokens=self.params.train.max_seq_len,
                              device=self.device, latency_examples=0)
        return answers[0]

    def answer(self, run: Run, prompt: EvalPrompt) -> str:
        """``run``'s greedy answer to ``prompt``."""
        import contextlib

        import torch

        if run.method == "qlora":
            net = self._qlora_net()
            net.set_adapter(run.name)
            return self._generate(net, prompt)
        if run.method in ADAPTER_METHODS:
            self.net.set_adapter(run.name)
            return self._generate(self.net, prompt)
        plain = self.net.disable_adapter() if hasattr(self.net, "disable_adapter") else contextlib.nullcontext()
        with plain:
            if run.method is None:
                return self._generate(self.net, prompt)
            saved = {n: self._params[n].detach().clone() for n in self._blocks[run.name]}
            try:
                with torch.no_grad():
                    for n, t in self._blocks[run.name].items():
                        self._params[n].copy_(t.to(self._params[n].dtype))
                return self._generate(self.net, prompt)
            finally:
                with torch.no_grad():
                    for n, t in saved.items():
                        self._params[n].copy_(t)


class CompareApp:
    """The app's state and handlers, separate from the Gradio layout so that tests can call them too."""

    def __init__(self, root: str | Path = ".", params_file: str | Path = "params.yaml") -> None:
        self.root = Path(root)
        self.params = load_params(self.root / params_file)
        self.engine: Engine | None = None
        self._listing: list[tuple[str, str | None]] = []  # the runs the engine was built for
        self.rng = random.Random()

    # ---------------------------------------------------------------- Ask

    def _engine(self, model: str, runs: list[Run]) -> Engine:
        listing = [(r.name, r.problem) for r in runs]
        if self.engine is None or self.engine.model != model or self._listing != listing:
            self.engine = None  # free the previous model before loading the next
            self.engine, self._listing = Engine(self.root, self.params, model, runs), listing
        return self.engine

    def _slots(self, runs: list[Run], answers: dict[str, str]) -> list[Any]:
        boxes = [gr.update(visible=True, label=r.name, value=answers.get(r.name, "…")) for r in runs[:MAX_SLOTS]]
        return boxes + [gr.update(visible=False, value="")] * (MAX_SLOTS - len(boxes))

    def ask(self, model: str, instruction: str, context: str):
        """Generator behind Submit: yields (status, answers, *slots, last ask) after each run answers."""
        if not model or model not in self.params.models:
            raise gr.Error(f"Pick a model of the registry ({', '.join(self.params.models)}).")
        if not (instruction or "").strip():
            raise gr.Error("The instruction is empty: type a question first.")
        runs = list_runs(self.root, self.params, model)
        if not any(r.method and not r.problem for r in runs):
            missing = "; ".join(r.problem for r in runs if r.problem)
            raise gr.Error(f"Model '{model}' has no trained runs under models/{model}/. "
                           + (missing or f"Train it: dvc exp run -S 'run.models=[{model}]'."))
        example = {"instruction": instruction.strip(), "input": (context or "").strip()}
        answers: dict[str, str] = {}
        loading = self.engine is None or self.engine.model != model
        yield (f"Loading {model}…" if loading else "Generating…"), answers, *self._slots(runs, answers), None
        try:
            engine = self._engine(model, runs)
        except FtbenchError as e:
            raise gr.Error(str(e)) from None
        prompt, n_tokens = engine.prompt(example)
        if engine.window and n_tokens > engine.window:
            raise gr.Error(f"The prompt is {n_tokens} tokens, over {model}'s window of {engine.window}: "
                           "shorten the context.")
        ev, budget = self.params.eval, self.params.train.max_seq_len
        notes = [f"Context shortened (keeping its {ev.context_truncation}) to fit train.max_seq_len = {budget} "
                 f"prompt tokens (was {n_tokens}), as evaluate shortens it."] if prompt.shortened else []
        if engine.has_qlora:
            notes.append("QLoRA runs answer on a second, quantised copy of the base (loaded on first use).")
        for i, run in enumerate(runs, 1):
            if run.problem:
                answers[run.name] = f"⚠ {run.problem}"
                continue
            yield f"Answering with {run.name} ({i}/{len(runs)})…", answers, *self._slots(runs, answers), None
            answers[run.name] = engine.answer(run, prompt)
        problems = [f"⚠ {r.name}: {r.problem}" for r in runs if r.problem]
        done = f"Done: {len(runs) - len(problems)} of {len(runs)} runs answered."
        status = "  \n".join([done, *notes, *problems])
        record = {"model": model, **example, "answers": answers}
        yield status, answers, *self._slots(runs, answers), record

    def flag(self, last: dict | None, reason: str, rater: str) -> str:
        if not last:
            raise gr.Error("Nothing to flag yet: ask a question first.")
        append_record(self.root / FLAGS_PATH, {"time": utc_now(), "rater": (rater or "").strip() or None,
                                               "reason": (reason or "").strip() or None, **last})
        return f"Flagged: appended to {FLAGS_PATH}."

    # ---------------------------------------------------------------- Rate

    def rate_models(self) -> list[str]:
        return [m for m in self.params.models if len(model_predictions(self.root, m)) >= 2]

    def next_pair(self, model: str) -> tuple:
        """A random question and two runs' answers to it, in random order, names hidden in the state."""
        runs = model_predictions(self.root, model) if model else {}
        if len(runs) < 2:
            raise gr.Error(f"Model '{model}' needs predictions of at least two runs under predictions/{model}/: "
                           "run `dvc repro` (or `dvc pull`).")
        names = sorted(runs)
        pair = None
        for _ in range(50):  # prefer two different answers: a vote on identical texts says nothing
            a, b = self.rng.sample(names, 2)
            qid = self.rng.choice(sorted(set(runs[a]) & set(runs[b])))
            pair = {"model": model, "question_id": qid, "run_a": a, "run_b": b, "voted": False}
            if runs[a][qid]["answer"].strip() != runs[b][qid]["answer"].strip():
                break
        row_a, row_b = runs[pair["run_a"]][pair["question_id"]], runs[pair["run_b"]][pair["question_id"]]
        question = f"**Question** ({model}, id {pair['question_id']}): {row_a['question']}"
        return (question, row_a.get("context", ""), row_a["reference"], row_a["answer"], row_b["answer"],
                "Which answer is better? The runs are revealed after your vote.", pair)

    def vote(self, rater: str, pair: dict | None, choice: str) -> tuple[str, dict]:
        if not pair:
            raise gr.Error("Press 'Next pair' first.")
        if pair.get("voted"):
            raise gr.Error("You already voted on this pair: press 'Next pair'.")
        if not (rater or "").strip():
            raise gr.Error("Enter your name (rater) before voting.")
        vote = make_vote(rater=rater, model=pair["model"], question_id=pair["question_id"], run_a=pair["run_a"],
                         run_b=pair["run_b"], choice=choice)
        append_record(self.root / VOTES_PATH, vote)
        reveal = (f"Recorded **{CHOICE_LABELS[choice]}**. A was **{pair['run_a']}**, B was **{pair['run_b']}**. "
                  "Press 'Next pair' for another.")
        return reveal, {**pair, "voted": True}

    # ---------------------------------------------------------------- layout

    def blocks(self) -> gr.Blocks:
        models = list(self.params.models)
        default = next((m for m in self.params.run.models if m in models), models[0] if models else None)
        rate_models = self.rate_models()
        with gr.Blocks(title="ftbench compare") as demo:
            gr.Markdown("# ftbench compare\nAsk every run of a model the same question, flag answers, "
                        "and rate runs blind. Votes feed the `human_eval` stage (`dvc repro`).")
            with gr.Tab("Ask"):
                with gr.Row():
                    model = gr.Dropdown(models, value=default, label="Model")
                instruction = gr.Textbox(label="Instruction", placeholder="e.g. Who attacked the convoy?", lines=2,
                                         elem_id="ask-instruction")
                context = gr.Textbox(label="Context (optional)", lines=5, elem_id="ask-context")
                submit = gr.Button("Submit", variant="primary", elem_id="ask-submit")
                status = gr.Markdown(elem_id="ask-status")
                with gr.Row(equal_height=True):
                    slots = [gr.Textbox(label=f"run {i}", visible=False, interactive=False, lines=4, min_width=220,
                                        elem_classes=["answer"]) for i in range(MAX_SLOTS)]
                with gr.Accordion("Answers as JSON", open=False):
                    answers = gr.JSON()
                last = gr.State(None)
                with gr.Row():
                    reason = gr.Textbox(label="Flag reason (optional)", scale=4)
                    flagger = gr.Textbox(label="Your name (optional)", scale=1)
                    flag_btn = gr.Button("Flag", scale=1)
                flag_status = gr.Markdown()
            submit.click(self.ask, [model, instruction, context], [status, answers, *slots, last], api_name="ask",
                         concurrency_limit=1, concurrency_id="generate")
            flag_btn.click(self.flag, [last, reason, flagger], flag_status, api_name="flag", concurrency_limit=None)

            with gr.Tab("Rate (blind)"):
                gr.Markdown("Two runs of one model answer the same test question (from the committed predictions). "
                            "Pick the better answer; the runs are named after your vote. No model is loaded.")
                with gr.Row():
                    rater = gr.Textbox(label="Your name (rater)", scale=2)
                    rate_model = gr.Dropdown(rate_models, value=rate_models[0] if rate_models else None,
                                             label="Model", scale=2)
                    next_btn = gr.Button("Next pair", scale=1)
                question = gr.Markdown("No predictions found: run `dvc repro` (or `dvc pull`)." if not rate_models
                                       else "Press 'Next pair'.")
                with gr.Row():
                    ctx = gr.Textbox(label="Context", interactive=False, lines=4, scale=3)
                    reference = gr.Textbox(label="Reference answer", interactive=False, scale=1)
                with gr.Row(equal_height=True):
                    answer_a = gr.Textbox(label="Answer A", interactive=False, lines=3)
                    answer_b = gr.Textbox(label="Answer B", interactive=False, lines=3)
                reveal = gr.Markdown()
                pair = gr.State(None)
                with gr.Row():
                    buttons = {c: gr.Button(label) for c, label in CHOICE_LABELS.items()}
            next_btn.click(self.next_pair, rate_model, [question, ctx, reference, answer_a, answer_b, reveal, pair],
                           api_name="next_pair", concurrency_limit=None)
            for choice, button in buttons.items():
                button.click(lambda r, p, c=choice: self.vote(r, p, c), [rater, pair], [reveal, pair],
                             api_name=f"vote_{choice}", concurrency_limit=None)
        return demo


def build_app(root: str | Path = ".", params_file: str | Path = "params.yaml") -> gr.Blocks:
    """The Gradio app for the project at ``root``, queue enabled (launch it, or drive it with gradio_client)."""
    return CompareApp(root, params_file).blocks().queue()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    args = p.parse_args(argv)
    try:
        demo = build_app(".", args.params)
    except FtbenchError as e:
        raise SystemExit(f"error: {e}") from None
    demo.launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
