"""The compare app, launched in-process on a free loopback port and driven like a user would drive it:
with gradio_client (Ask, Flag, Rate, bad input, two raters at once) and in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tiny_params

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ARTIFACTS = REPO / "tests" / "artifacts"  # git-ignored: the Chromium screenshot is kept here
MODEL = "tiny"
RUNS = ["baseline", "lora-s42", "qlora-s42", "top_layer-s42"]
QUESTIONS = [
    {"id": "q1", "doc_id": "d1", "instruction": "Who attacked the convoy?",
     "input": "On Monday the 3rd Brigade attacked the convoy near the river crossing.", "output": "the 3rd Brigade"},
    {"id": "q2", "doc_id": "d2", "instruction": "Where did the exercise take place?",
     "input": "The navy held its annual exercise in the South China Sea in May.", "output": "the South China Sea"},
    {"id": "q3", "doc_id": "d3", "instruction": "Which fleet moved north?",  # over train.max_seq_len: shortened
     "input": "The ministry issued a long statement about the weather. " * 30 + "The 5th Fleet moved north.",
     "output": "The 5th Fleet"},
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_artifacts(root: Path, params) -> None:
    """A tiny trained-looking artifact per method: random (non-zero) LoRA deltas, a perturbed top block."""
    import torch

    from ftbench.methods import prepare, save_trained

    spec = params.model(MODEL)
    for seed, method in enumerate(("lora", "qlora", "top_layer"), 1):
        torch.manual_seed(seed)
        # qlora's adapter is trained on a quantised base but saved like LoRA's; build it unquantised here.
        model = prepare("lora" if method == "qlora" else method, MODEL, spec,
                        params.method("lora" if method == "qlora" else method), dtype=torch.float32, device="cpu")
        with torch.no_grad():
            for p in (p for p in model.parameters() if p.requires_grad):
                p.add_(torch.randn_like(p) * (0.5 if method != "top_layer" else 0.2))
        save_trained(model, method, root / "models" / MODEL / f"{method}-s42", {"method": method, "seed": 42})


def _evaluate_every_run(root: Path, params) -> None:
    """Predictions through the evaluate/baseline stages' own code path (load_tuned merges LoRA)."""
    import torch

    from ftbench.evaluation import evaluate
    from ftbench.methods import load_tuned
    from ftbench.registry import load_model, load_tokenizer
    from ftbench.stage import model_dir, predictions_path, run_metrics_dir

    spec = params.model(MODEL)
    for run in RUNS:
        method = None if run == "baseline" else run.rsplit("-s", 1)[0]

        def load(method=method, run=run):
            if method is None:
                model = load_model(MODEL, spec, dtype=torch.float32, device="cpu")
            else:
                model = load_tuned(method, MODEL, spec, params.method(method), model_dir(MODEL, run),
                                   dtype=torch.float32, device="cpu")
            return model, load_tokenizer(MODEL, spec)

        evaluate(load, params, device="cpu", identity={"model": MODEL, "method": method or "baseline"},
                 out_dir=run_metrics_dir(MODEL, run), predictions_path=predictions_path(MODEL, run))


def _talkative_base(tiny_llama: Path, out: Path) -> Path:
    """The tiny random Llama with noisier weights: the shared one answers every prompt with newlines only,
    which would leave the baseline's box empty and test nothing of the baseline path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_llama):
    """A project dir with params, test split, one artifact per method, and evaluate's predictions."""
    from ftbench.params import load_params

    root = tmp_path_factory.mktemp("compare")
    base = _talkative_base(tiny_llama, root / "base")
    raw = tiny_params(base, **{"run.methods": ["lora", "qlora", "top_layer"]})
    # Batch size 1: evaluate then generates each question unpadded, as Ask does (padding in a batch can move
    # the last float bits, which a random model's near-tied logits may turn into another token).
    raw["eval"].update({"max_new_tokens": 8, "batch_size": 1, "bertscore_model": "none", "bootstrap_resamples": 100})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (root / "data/processed").mkdir(parents=True)
    (root / "data/processed/test.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    cwd = Path.cwd()
    os.chdir(root)
    try:
        params = load_params("params.yaml")
        _tiny_artifacts(root, params)
        _evaluate_every_run(root, params)
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture(scope="module")
def server(project):
    """The app on a free loopback port, in this process; yields (url, project root)."""
    from ftbench.compare import build_app

    demo = build_app(project)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", project
    finally:
        demo.close()


def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def _predicted(root: Path, run: str, question_id: str) -> dict:
    """The row evaluate wrote for ``question_id`` in ``run``'s predictions."""
    rows = map(json.loads, (root / f"predictions/{MODEL}/{run}.jsonl").read_text().splitlines())
    return next(r for r in rows if r["id"] == question_id)


def _ask(client, instruction: str, context: str, model: str = MODEL) -> tuple[str, dict]:
    out = client.predict(model, instruction, context, api_name="/ask")
    return out[0], out[1]


def test_ask_gives_evaluates_answer_for_every_run(server):
    """Ask on a test question = what evaluate wrote to predictions/ for that question, run by run."""
    url, root = server
    client = _client(url)
    for q in QUESTIONS:
        status, answers = _ask(client, q["instruction"], q["input"])
        assert list(answers) == RUNS, status
        for run in RUNS:
            assert answers[run] == _predicted(root, run, q["id"])["answer"], (run, q["id"])
        assert "Done: 4 of 4 runs answered" in status and "QLoRA" in status
        assert ("Context shortened (keeping its start)" in status) == (q["id"] == "q3"), status
        # the runs really differ (a test where every run gives the same text would prove nothing)
        assert len({answers[r] for r in RUNS}) == len(RUNS) and all(answers.values()), answers


def test_ask_rejects_bad_input_with_a_message(server, tmp_path):
    from gradio_client.exceptions import AppError

    url, root = server
    client = _client(url)
    with pytest.raises(AppError, match="instruction is empty"):
        _ask(client, "   ", "some context")
    with pytest.raises(AppError, match="over tiny's window of 1024"):
        _ask(client, "Who?", "word " * 1500)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["models"]["untrained"] = params["models"][MODEL]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        from ftbench.compare import CompareApp

        app = CompareApp(root)
        with pytest.raises(Exception, match="'untrained' has no trained runs"):
            next(app.ask("untrained", "Who?", ""))
    finally:
        del params["models"]["untrained"]
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_missing_adapter_is_named_and_other_runs_answer(server):
    url, root = server
    adapter = root / f"models/{MODEL}/lora-s42/adapter_config.json"
    hidden = adapter.with_name("hidden.json")
    adapter.rename(hidden)
    try:
        status, answers = _ask(_client(url), QUESTIONS[0]["instruction"], QUESTIONS[0]["input"])
    finally:
        hidden.rename(adapter)
    assert answers["lora-s42"].startswith("⚠ missing adapter") and "adapter_config.json" in answers["lora-s42"]
    assert "missing adapter" in status and "Done: 3 of 4 runs answered" in status
    for run in ("baseline", "qlora-s42", "top_layer-s42"):
        assert answers[run] == _predicted(root, run, QUESTIONS[0]["id"])["answer"], run


def test_flag_appends_one_record(server):
    url, root = server
    flags = root / "data/human/flags.jsonl"
    before = flags.read_text().splitlines() if flags.exists() else []
    client = _client(url)
    _ask(client, QUESTIONS[1]["instruction"], QUESTIONS[1]["input"])
    message = client.predict("the baseline rambles", "ann", api_name="/flag")
    assert "Flagged" in message
    lines = flags.read_text().splitlines()
    assert len(lines) == len(before) + 1
    record = json.loads(lines[-1])
    assert record["reason"] == "the baseline rambles" and record["rater"] == "ann" and record["model"] == MODEL
    assert record["instruction"] == QUESTIONS[1]["instruction"] and record["input"] == QUESTIONS[1]["input"]
    assert list(record["answers"]) == RUNS and record["time"].endswith("Z")


def _rate_once(client, rater: str, choice: str) -> tuple[tuple, str]:
    shown = client.predict(MODEL, api_name="/next_pair")
    reveal = client.predict(rater, api_name=f"/vote_{choice}")
    return shown, reveal


def test_rate_appends_one_blind_vote_then_reveals(server):
    from gradio_client.exceptions import AppError

    url, root = server
    votes = root / "data/human/votes.jsonl"
    before = len(votes.read_text().splitlines()) if votes.exists() else 0
    client = _client(url)
    shown, reveal = _rate_once(client, "bob", "a")
    question, context, reference, answer_a, answer_b = shown[:5]
    assert not any(run in json.dumps(shown[:6]) for run in RUNS)  # blind: no run name before the vote
    lines = votes.read_text().splitlines()
    assert len(lines) == before + 1
    vote = json.loads(lines[-1])
    assert set(vote) == {"rater", "time", "model", "question_id", "run_a", "run_b", "choice"}
    assert vote["rater"] == "bob" and vote["choice"] == "a" and vote["model"] == MODEL
    assert vote["run_a"] != vote["run_b"] and {vote["run_a"], vote["run_b"]} <= set(RUNS)
    assert f"A was **{vote['run_a']}**, B was **{vote['run_b']}**" in reveal
    shown_a, shown_b = (_predicted(root, vote[k], vote["question_id"]) for k in ("run_a", "run_b"))
    assert (shown_a["answer"], shown_b["answer"], shown_a["reference"]) == (answer_a, answer_b, reference)
    assert shown_a["answer"] != shown_b["answer"]  # pairs with identical texts are skipped
    with pytest.raises(AppError, match="already voted"):
        client.predict("bob", api_name="/vote_b")
    client.predict(MODEL, api_name="/next_pair")
    with pytest.raises(AppError, match="Enter your name"):
        client.predict("  ", api_name="/vote_tie")
    assert len(votes.read_text().splitlines()) == before + 1


def test_two_raters_voting_at_once_lose_nothing(server):
    url, root = server
    votes = root / "data/human/votes.jsonl"
    before = len(votes.read_text().splitlines()) if votes.exists() else 0
    per_rater, errors, barrier = 15, [], threading.Barrier(2)

    def rater(name: str, choice: str) -> None:
        try:
            client = _client(url)
            barrier.wait()
            for _ in range(per_rater):
                _rate_once(client, name, choice)
        except Exception as e:  # surfaced below with the thread's name
            errors.append((name, e))

    threads = [threading.Thread(target=rater, args=args) for args in (("carol", "tie"), ("dave", "both_bad"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    new = [json.loads(line) for line in votes.read_text().splitlines()[before:]]
    assert len(new) == 2 * per_rater
    assert sorted((v["rater"], v["choice"]) for v in new) == sorted([("carol", "tie")] * per_rater
                                                                     + [("dave", "both_bad")] * per_rater)


# --------------------------------------------------------------------------- headless Chromium


class DevTools:
    """The Chrome DevTools Protocol over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out, NUL-separated
    JSON): no websocket client and no browser download needed."""

    def __init__(self, profile: Path):
        self._to_browser_r, self._to_browser_w = os.pipe()
        self._from_browser_r, self._from_browser_w = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        # A shell moves our pipe ends to the fds the protocol expects (3 and 4) without a preexec_fn,
        # which is unsafe in this multi-threaded process (the app's server runs in it).
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{self._to_browser_r} 4>&{self._from_browser_w}', "chromium", *flags],
            pass_fds=(self._to_browser_r, self._from_browser_w), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(self._to_browser_r)
        os.close(self._from_browser_w)
        self._buffer, self._next_id, self.session = b"", 0, None

    def send(self, method: str, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_browser_w, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_browser_r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited: {self.proc.stderr.read().decode()[-2000:]}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", width=1400, height=1100, deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", url=url)

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 240.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"page never satisfied: {expression}")

    def type_into(self, selector: str, text: str) -> None:
        """Focus the element and insert text as keyboard input does (Gradio sees real input events)."""
        assert self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                       "if (!e) return false; e.focus(); return true; })()"), selector
        self.send("Input.insertText", text=text)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_browser_w)
        os.close(self._from_browser_r)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (./scripts/ensure-chromium)")
def test_chromium_fills_ask_and_shows_answers_side_by_side(server, tmp_path):
    from PIL import Image

    url, root = server
    browser = DevTools(tmp_path / "profile")
    try:
        browser.open(url)
        browser.wait_for("!!document.querySelector('#ask-instruction textarea')", timeout=120)
        browser.type_into("#ask-instruction textarea", QUESTIONS[0]["instruction"])
        browser.type_into("#ask-context textarea", QUESTIONS[0]["input"])
        browser.js("document.querySelector('#ask-submit').click()")
        browser.wait_for("(document.querySelector('#ask-status') || {}).innerText?.includes('Done:')")
        labels = browser.js("[...document.querySelectorAll('.answer')].filter(e => e.offsetParent)"
                            ".map(e => [e.querySelector('[data-testid=\"block-info\"]')?.innerText || e.innerText, "
                            "e.querySelector('textarea')?.value, e.getBoundingClientRect().top])")
        shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
    finally:
        browser.close()
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "compare_ask.png"
    path.write_bytes(base64.b64decode(shot))
    print(f"screenshot: {path}")
    assert [lab[0].strip().splitlines()[0] for lab in labels] == RUNS, labels
    # every box holds that run's answer, as evaluate wrote it
    assert [lab[1] for lab in labels] == [_predicted(root, r, QUESTIONS[0]["id"])["answer"] for r in RUNS]
    assert len({round(lab[2]) for lab in labels}) == 1, labels  # one row: side by side
    with Image.open(path) as img:
        assert img.width >= 1400 and len(img.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
