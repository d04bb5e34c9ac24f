"""Hub save/load without a network: a local Hugging Face cache layout, a mocked HfApi."""
import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

import medmoe
from medmoe.hub import push_to_hub, save_for_hub

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root, model_folder, repo="org--name"):
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo_dir = root / f"models--{repo}"
    shutil.copytree(model_folder, repo_dir / "snapshots" / SNAPSHOT)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(SNAPSHOT)
    return root


LOAD = """
import json, sys, medmoe
try:
    model = medmoe.load(sys.argv[1])
except FileNotFoundError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"source": str(model.source), "weight": model.image.global_proj.weight.sum().item()}))
"""


def load_offline(repo_id, cache):
    env = {"PATH": "", "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache / "home")}
    run = subprocess.run([sys.executable, "-c", LOAD, repo_id], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.slow
def test_load_reads_a_hub_id_from_the_offline_cache(tiny, tiny_folder, tmp_path):
    cache = hub_cache(tmp_path / "hub", tiny_folder)
    loaded = load_offline("org/name", cache)
    assert loaded["source"].endswith(f"models--org--name/snapshots/{SNAPSHOT}")
    assert loaded["weight"] == pytest.approx(tiny.image.global_proj.weight.sum().item(), abs=1e-6)
    missing = load_offline("org/other", cache)
    assert "org/other" in missing["error"] and "cache" in missing["error"]


def test_load_reads_a_model_folder_and_a_training_run(tiny, tiny_folder, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_folder, run / "checkpoints" / "step-000002" / "model")
    (run / "checkpoints" / "latest").write_text("step-000002")
    for source in (tiny_folder, run):
        model = medmoe.load(source)
        assert torch.equal(model.image.global_proj.weight, tiny.image.global_proj.weight)
    assert model.source == run / "checkpoints" / "step-000002" / "model"
    with pytest.raises(FileNotFoundError, match="not a medmoe model folder"):
        medmoe.load(tmp_path / "nothing-here")


@pytest.fixture
def trained_run(tiny_folder, tmp_path):
    """A run folder as ``medmoe demo`` leaves it: checkpoint, train_args, metrics, eval JSON beside it."""
    run = tmp_path / "demo" / "medmoe"
    shutil.copytree(tiny_folder, run / "checkpoints" / "step-000030" / "model")
    (run / "checkpoints" / "latest").write_text("step-000030")
    (run / "train_args.json").write_text(json.dumps({"data": "medsynth/manifest.jsonl", "steps": 30,
                                                     "batch_size": 8, "seed": 0, "world": 1}))
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 10, "split": "train", "loss": 3.5}, {"step": 30, "split": "train", "loss": 2.25},
        {"step": 30, "split": "val", "i2t_r1": 0.125}]) + "\n")
    (run.parent / "eval_medmoe.json").write_text(json.dumps({"variant": "medmoe", "zeroshot": {"accuracy": 0.8125}}))
    return run


def test_save_for_hub_writes_the_model_and_its_card(tiny, trained_run, tmp_path):
    folder = save_for_hub(medmoe.load(trained_run), tmp_path / "upload", repo_id="org/medmoe-tiny")
    card = (folder / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "medmoe" and "mixture-of-experts" in meta["tags"]
    assert "medmoe.load('org/medmoe-tiny')" in body
    assert '"num_experts": 4' in body  # the configuration
    assert '"trained_steps": 30' in body and '"data": "medsynth/manifest.jsonl"' in body and "0.125" in body
    assert "| zeroshot.accuracy | 0.8125 |" in body
    assert json.loads((folder / "eval.json").read_text())["zeroshot"]["accuracy"] == 0.8125
    reloaded = medmoe.load(folder)
    assert torch.equal(reloaded.gate.image_router.mlp[0].weight, tiny.gate.image_router.mlp[0].weight)


def test_a_model_without_a_run_gets_a_card_without_training_or_evaluation(tiny, tmp_path):
    card = (save_for_hub(tiny, tmp_path / "upload") / "README.md").read_text()
    assert "## Configuration" in card and "## Training" not in card and "## Evaluation" not in card
    assert not (tmp_path / "upload" / "eval.json").exists()


def test_push_to_hub_uploads_the_saved_folder(trained_run, monkeypatch):
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            from pathlib import Path

            files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
            calls.append(("upload_folder", repo_id, files, "org/medmoe-tiny" in (Path(folder_path) / "README.md").read_text()))
            return "commit-info"

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert medmoe.load(trained_run).push_to_hub("org/medmoe-tiny", token="t0k") == "commit-info"
    assert calls[0] == ("init", "t0k") and calls[1] == ("create_repo", "org/medmoe-tiny", False, True)
    _, repo, files, card_names_repo = calls[2]
    assert repo == "org/medmoe-tiny" and card_names_repo
    assert {"README.md", "config.json", "model.safetensors", "eval.json"} <= set(files)
    assert any(f.startswith("tokenizer/") for f in files)
