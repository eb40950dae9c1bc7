"""One run across processes: the train stage under torchrun, 2 CPU processes with gloo, on the tiny Llama.

The 2-process run with ``batch_size: 4`` must train what a 1-process run with ``batch_size: 8`` trains (the
same global batch, the same seeded plan): the same weights and losses up to float error. LoRA dropout is 0
here: its masks are drawn per process and cannot match a 1-process run by construction.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_project, run
from safetensors.torch import load_file

from ftbench.distributed import launch_command, launched
from ftbench.io import ConfigError
from ftbench.methods import prepare, save_trained
from ftbench.params import METHOD_PARAMS, ModelSpec, TrainParams

pytestmark = pytest.mark.slow

# Reduction order differs (one batch of 8 vs two of 4 summed by all-reduce): float32 rounding over 4 AdamW
# steps. The weights here are within this of each other; a wrong split (an example dropped or seen twice,
# a wrong token weighting) moves them by far more. A wrong gradient *scale* would not show in weights
# (AdamW divides it out): test_a_two_process_step_has_the_gradient_of_one_process checks gradients.
ATOL = 1e-5
STAGES = ["train@tiny-lora-42", "train@tiny-top_layer-42"]
WEIGHTS = {"lora-s42": "adapter_model.safetensors", "top_layer-s42": "tuned_layers.safetensors"}


@pytest.mark.parametrize("method", ["lora", "top_layer"])
def test_a_two_process_step_has_the_gradient_of_one_process(tmp_path, tiny_llama, method):
    """The gradient after all-reduce equals one process's on the whole global batch: the split over ranks
    (uneven, and a rank with no example), the no-sync accumulation and the world-size scaling. Weights after
    AdamW could not show a wrong scale (Adam divides it out); gradients do."""
    script = str(Path(__file__).with_name("dist_step.py"))
    run([sys.executable, script, str(tiny_llama), method, str(tmp_path / "one.pt")], tmp_path)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script,
         str(tiny_llama), method, str(tmp_path / "two.pt")], tmp_path)
    one, two = (torch.load(tmp_path / f, weights_only=False) for f in ("one.pt", "two.pt"))
    assert (one["world_size"], two["world_size"]) == (1, 2) and two["ranks_agree"]
    assert two["done"]["samples"] == one["done"]["samples"] == 8
    assert two["done"]["tokens"] == one["done"]["tokens"]
    assert two["done"]["loss"] == pytest.approx(one["done"]["loss"], rel=1e-6)
    assert one["grads"].keys() == two["grads"].keys()
    for n, g in one["grads"].items():
        assert "lora_A" in n or float(g.abs().max()) > 0, n  # A's gradient is 0 while B starts at 0
        torch.testing.assert_close(two["grads"][n], g, rtol=1e-4, atol=1e-6)


def _project(root: Path, tiny_llama: Path, dropout: float = 0.0, **train) -> Path:
    """The tiny study, 2 epochs of 16 examples: 4 optimizer steps of a global batch of 8."""
    return make_project(root, tiny_llama, **{f"train.{k}": v for k, v in {"epochs": 2, **train}.items()},
                        **{"methods.lora": {"r": 8, "alpha": 16, "dropout": dropout,
                                            "target_modules": ["q_proj", "v_proj"]}})


def _weights(root: Path, run_id: str) -> dict[str, torch.Tensor]:
    return load_file(root / "models/tiny" / run_id / WEIGHTS[run_id])


def _train_json(root: Path, run_id: str) -> dict:
    return json.loads((root / "metrics/runs/tiny" / run_id / "train.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama):
    """The same study trained by 1 process (batch 8) and by 2 processes (batch 4 each)."""
    base = tmp_path_factory.mktemp("dist")
    # micro_batch_tokens is per process: 2 × 150 cuts the global batches where 1 × 300 cuts them
    one = _project(base / "one", tiny_llama, batch_size=8, checkpoint_every=0, micro_batch_tokens=300)
    two = _project(base / "two", tiny_llama, batch_size=4, checkpoint_every=0, launcher="torchrun", num_processes=2,
                   micro_batch_tokens=150)
    for root in (one, two):
        run(["dvc", "repro", *STAGES], root)
    return one, two


@pytest.mark.parametrize("run_id", list(WEIGHTS))
def test_two_processes_train_what_one_process_trains(runs, run_id):
    one, two = runs
    a, b = _weights(one, run_id), _weights(two, run_id)
    assert a.keys() == b.keys()
    if run_id == "lora-s42":  # LoRA's B starts at zero: training moved it far beyond the tolerance
        assert max(float(a[k].abs().max()) for k in a if "lora_B" in k) > 100 * ATOL
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= ATOL, f"{run_id}: weights differ by {worst:g}"
    ja, jb = _train_json(one, run_id), _train_json(two, run_id)
    assert (ja["world_size"], jb["world_size"]) == (1, 2)
    assert ja["global_batch"] == jb["global_batch"] == 8
    assert (ja["distributed"], jb["distributed"]) == ("none", "ddp")
    assert ja["micro_batches"] == jb["micro_batches"] > ja["steps"]  # batches were cut, the same way
    for key in ("steps", "samples", "train_tokens", "answer_tokens"):
        assert ja[key] == jb[key], key  # every example once, counted once (summed over the ranks)
    assert jb["final_loss"] == pytest.approx(ja["final_loss"], abs=ATOL)
    assert jb["val_loss"] == pytest.approx(ja["val_loss"], abs=ATOL)
    ranks = jb["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["peak_rss_mb"] > 0 for r in ranks)
    assert jb["peak_rss_mb"] == max(r["peak_rss_mb"] for r in ranks)


def test_only_rank_zero_writes(runs):
    """One loss curve with each step once (two writers would log every step twice), no stray files."""
    _, two = runs
    for run_id in WEIGHTS:
        with open(two / "metrics/runs/tiny" / run_id / "dvclive/plots/metrics/train/loss.tsv") as f:
            steps = [int(row["step"]) for row in csv.DictReader(f, delimiter="\t")]
        assert steps and len(steps) == len(set(steps)), steps
        assert sorted(p.name for p in (two / "checkpoints/tiny" / run_id).iterdir()) == ["status.json"]
    leftovers = [p for p in two.rglob("*") if p.name.endswith((".tmp", ".partial")) and ".dvc" not in p.parts]
    assert not leftovers, leftovers


def test_killing_one_rank_resumes_from_the_last_checkpoint(tmp_path, tiny_llama):
    """SIGKILL rank 1 after the step-1 checkpoint: the job fails, nothing half-written is left, and the next
    `dvc repro` resumes at step 1 and ends exactly where an uninterrupted 2-process run ends. LoRA dropout is on:
    each rank's own RNG state must come back for its dropout masks to be the same."""
    stage, kw = "train@tiny-lora-42", dict(dropout=0.05, batch_size=4, checkpoint_every=1, launcher="torchrun",
                                           num_processes=2)
    whole = _project(tmp_path / "whole", tiny_llama, **kw)
    run(["dvc", "repro", stage], whole)
    root = _project(tmp_path / "killed", tiny_llama, **kw)
    killed = run(["dvc", "repro", stage], root, check=False,
                 env={"FTBENCH_KILL_AT_STEP": "1", "FTBENCH_KILL_RANK": "1"})
    assert killed.returncode != 0, killed.stdout[-2000:]
    assert not (root / "models/tiny/lora-s42").exists()  # no partial model
    assert not (root / "metrics/runs/tiny/lora-s42/train.json").exists()
    assert (root / "checkpoints/tiny/lora-s42/state.pt").exists()

    run(["dvc", "repro", stage], root)
    report = _train_json(root, "lora-s42")
    assert report["resumed_from_step"] == 1 and report["world_size"] == 2
    a, b = _weights(whole, "lora-s42"), _weights(root, "lora-s42")
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs from the uninterrupted one"
    assert report["samples"] == _train_json(whole, "lora-s42")["samples"]


def test_fsdp_packs_4bit_weights_in_the_model_dtype():
    """peft's FSDP-QLoRA recipe: under FSDP the 4-bit weights are stored in the dtype the model is loaded in."""
    from ftbench.methods import quantization_config
    from ftbench.params import QLoraParams

    assert quantization_config(QLoraParams(), "cpu").bnb_4bit_quant_storage == torch.uint8
    assert quantization_config(QLoraParams(), "cpu", fsdp_dtype=torch.bfloat16).bnb_4bit_quant_storage == \
        torch.bfloat16
    with pytest.raises(ConfigError, match="quant_storage"):
        quantization_config(QLoraParams(quant_storage="uint8"), "cpu", fsdp_dtype=torch.bfloat16)


def test_launch_command(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("FTBENCH_LAUNCHED", raising=False)
    argv = ["stages/train.py", "--model", "m", "--method", "lora", "--seed", "1"]
    assert launch_command(TrainParams(), argv) is None  # launcher: none
    cmd = launch_command(TrainParams(launcher="torchrun", num_processes=2), argv)
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] and cmd[6:] == argv
    config = tmp_path / "ddp.yaml"
    config.write_text("distributed_type: MULTI_GPU\n")
    cmd = launch_command(TrainParams(launcher="accelerate", accelerate_config=str(config), num_processes=4), argv)
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(config)]
    assert cmd[5:7] == ["--num_processes", "4"] and cmd[7:] == argv
    with pytest.raises(ConfigError, match="accelerate_config"):
        launch_command(TrainParams(launcher="accelerate", accelerate_config=str(tmp_path / "missing.yaml")), argv)
    deepspeed = tmp_path / "ds.yaml"
    deepspeed.write_text("distributed_type: DEEPSPEED\ndeepspeed_config: {zero_stage: 2}\n")
    with pytest.raises(ConfigError, match="grad_accum must be 1"):  # in the parent, before any rank loads
        launch_command(TrainParams(launcher="accelerate", accelerate_config=str(deepspeed), grad_accum=2), argv)
    with pytest.raises(ConfigError, match="micro_batch_tokens .* must be null"):  # DeepSpeed would step per pass
        launch_command(TrainParams(launcher="accelerate", accelerate_config=str(deepspeed), micro_batch_tokens=512),
                       argv)
    (tmp_path / "bad.yaml").write_text("- not\n- a mapping\n")
    with pytest.raises(ConfigError, match="not an accelerate config"):
        launch_command(TrainParams(launcher="accelerate", accelerate_config=str(tmp_path / "bad.yaml")), argv)
    for name in ("ddp", "fsdp", "fsdp-qlora", "deepspeed-zero2", "deepspeed-zero3"):  # the shipped ones parse
        config = Path(__file__).parents[1] / "configs/accelerate" / f"{name}.yaml"
        assert launch_command(TrainParams(launcher="accelerate", accelerate_config=str(config)), argv) is not None
    monkeypatch.setenv("WORLD_SIZE", "2")  # inside a launched process: never launch again
    assert launched() and launch_command(TrainParams(launcher="torchrun"), argv) is None


@pytest.mark.parametrize("method", ["lora", "dora", "lora_all"])
def test_adapter_saved_from_gathered_weights_is_what_peft_saves(tmp_path, tiny_llama, method):
    """Under FSDP peft cannot find the adapter by walking the (wrapped) modules; the stage saves it from the
    gathered weights by name instead. Both ways must write the same adapter file."""
    torch.manual_seed(0)
    model = prepare(method, "tiny", ModelSpec(path=str(tiny_llama)), METHOD_PARAMS[method](), dtype=torch.float32,
                    device="cpu")
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for p in trained.values():
            p.add_(torch.randn_like(p))  # B (and DoRA's magnitude) away from their initial values
    save_trained(model, method, tmp_path / "peft", {})
    save_trained(model, method, tmp_path / "gathered", {}, trained={n: p.detach() for n, p in trained.items()})
    a = load_file(tmp_path / "peft/adapter_model.safetensors")
    b = load_file(tmp_path / "gathered/adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) == len(trained)
    assert all(torch.equal(a[k], b[k]) for k in a)
    config = [json.loads((tmp_path / d / "adapter_config.json").read_text()) for d in ("peft", "gathered")]
    assert config[0] == config[1]
