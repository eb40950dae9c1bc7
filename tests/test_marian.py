"""The MarianMT backend for real: a tiny random MarianMT with SentencePiece tokenizers trained here on
the fixture, driven through the translate stage, with the segment cache across runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

N_DOCS = 6


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory) -> Path:
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    out = tmp_path_factory.mktemp("tiny-marian")
    docs = json.loads((REPO / "data/raw/cmnee_fixture.json").read_text(encoding="utf-8"))
    memory = json.loads((REPO / "data/raw/translation_memory.json").read_text(encoding="utf-8"))
    (out / "zh.txt").write_text("\n".join(d["text"] for d in docs), encoding="utf-8")
    (out / "en.txt").write_text("\n".join(memory.values()), encoding="utf-8")
    for side in ("zh", "en"):
        spm.SentencePieceTrainer.train(input=str(out / f"{side}.txt"), model_prefix=str(out / side),
                                       vocab_size=1000 if side == "zh" else 400,
                                       character_coverage=1.0, model_type="unigram", bos_id=-1, eos_id=1, pad_id=2,
                                       unk_id=0, minloglevel=2)
    vocab = {"<unk>": 0, "</s>": 1, "<pad>": 2}
    for side in ("zh", "en"):
        proc = spm.SentencePieceProcessor(model_file=str(out / f"{side}.model"))
        for i in range(proc.get_piece_size()):
            vocab.setdefault(proc.id_to_piece(i), len(vocab))
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "source.spm").write_bytes((out / "zh.model").read_bytes())
    (out / "target.spm").write_bytes((out / "en.model").read_bytes())
    tok = MarianTokenizer(source_spm=str(out / "source.spm"), target_spm=str(out / "target.spm"),
                          vocab=str(out / "vocab.json"), source_lang="zh", target_lang="en")
    config = MarianConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                          decoder_ffn_dim=32, max_position_embeddings=512, pad_token_id=2, eos_token_id=1,
                          decoder_start_token_id=2, forced_eos_token_id=1)
    torch.manual_seed(0)
    model = MarianMTModel(config)
    with torch.no_grad():  # a random model may stop at once; never let it emit an empty translation
        model.final_logits_bias[0, 1] = -1e4
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _project(tmp_path: Path, marian: Path, n_docs: int) -> Path:
    docs = json.loads((REPO / "data/raw/cmnee_fixture.json").read_text(encoding="utf-8"))[:n_docs]
    (tmp_path / "data/raw").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data/raw/docs.json").write_text(json.dumps(docs, ensure_ascii=False), encoding="utf-8")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["raw"] = "data/raw/docs.json"
    params["translate"].update({"backends": ["marian"], "marian_model": str(marian), "batch_size": 4})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def _translate(root: Path) -> dict:
    subprocess.run([sys.executable, str(REPO / "stages/translate.py")], cwd=root, check=True, capture_output=True)
    return json.loads((root / "data/interim/translate_stats.json").read_text())


def test_marian_translates_every_segment_and_caches(tmp_path, tiny_marian):
    root = _project(tmp_path, tiny_marian, N_DOCS - 2)
    first = _translate(root)
    assert first["by_backend"] == {"marian": first["segments"]} and first["segments"] > 10
    rows = [json.loads(line) for line in (root / "data/interim/translated.jsonl").read_text().splitlines()]
    assert all(r["text_en"].strip() for r in rows)
    assert all(a["en"].strip() for r in rows for ev in r["events"] for a in ev["arguments"])
    cache = json.loads((root / "data/interim/translation_cache.json").read_text())
    assert cache["model"] == str(tiny_marian) and len(cache["table"]) == first["segments"]

    _project(tmp_path, tiny_marian, N_DOCS)  # two documents more: only their new segments are translated
    second = _translate(root)
    assert second["by_backend"]["cache"] == first["segments"]
    assert 0 < second["by_backend"]["marian"] == second["segments"] - first["segments"]
    again = [json.loads(line) for line in (root / "data/interim/translated.jsonl").read_text().splitlines()]
    assert again[:len(rows)] == rows  # cached segments give the same text

    other = tmp_path / "other-marian"  # another model (here: the same weights under another name)
    shutil.copytree(tiny_marian, other)
    _project(tmp_path, other, N_DOCS)
    third = _translate(root)
    assert third["by_backend"] == {"marian": second["segments"]}  # nothing served from the first model's cache
    assert json.loads((root / "data/interim/translation_cache.json").read_text())["model"] == str(other)


def test_unreachable_marian_model_is_one_clear_line(tmp_path):
    root = _project(tmp_path, Path("/nonexistent/opus-mt-zh-en"), 1)
    proc = subprocess.run([sys.executable, str(REPO / "stages/translate.py")], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "translate.marian_model '/nonexistent/opus-mt-zh-en' could not be loaded" in proc.stderr
    assert "Fix:" in proc.stderr and "Traceback" not in proc.stderr
