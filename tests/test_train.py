"""The trainer on tiny MedSynth runs: bad rows, exact resume after kill -9, and learning."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from medmoe.cli import main
from medmoe.runs import latest_checkpoint


@pytest.fixture(scope="module")
def medsynth(tmp_path_factory):
    from medmoe.data.synth import generate

    return generate(tmp_path_factory.mktemp("medsynth"), n=160, seed=3, size=64, progress=False)


def train_argv(data, out, steps, *extra):
    return ["train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--steps", str(steps),
            "--batch-size", "8", "--checkpoint-every", "4", "--eval-every", "100", "--quiet", *extra]


def weights(run):
    return load_file(latest_checkpoint(run) / "model" / "model.safetensors")


@pytest.mark.slow
def test_resume_after_kill_9_gives_the_same_weights(tmp_path, medsynth):
    assert main(train_argv(medsynth, tmp_path / "straight", 12)) == 0

    cmd = [sys.executable, "-m", "medmoe", *train_argv(medsynth, tmp_path / "killed", 12)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while latest_checkpoint(tmp_path / "killed") is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run, possibly mid-write of the next checkpoint
    proc.wait()
    stopped_at = json.loads((latest_checkpoint(tmp_path / "killed") / "trainer.json").read_text())["step"]
    assert 4 <= stopped_at <= 12

    assert main(train_argv(medsynth, tmp_path / "killed", 12, "--resume", str(tmp_path / "killed"))) == 0
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert latest_checkpoint(tmp_path / "killed").name == "step-000012"


@pytest.mark.slow
def test_unreadable_rows_are_skipped_counted_and_training_proceeds(tmp_path, medsynth):
    rows = [json.loads(line) for line in medsynth.read_text().splitlines()]
    for r in rows:
        r["image"] = str(medsynth.parent / r["image"])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    bad = [{"image": str(tmp_path / "broken.png"), "report": "Normal chest.", "split": "train"},  # fails at load
           {"image": "missing.png", "report": "Normal."}, {"image": rows[0]["image"], "report": ""},
           {"image": rows[0]["image"], "report": "x", "modality": "sonar"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in bad + rows) + "\n")
    assert main(train_argv(tmp_path / "m.jsonl", tmp_path / "run", 36)) == 0  # > 2 epochs: row 1 is drawn
    skipped = [json.loads(line) for line in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    manifest_rows = {s["row"] for s in skipped if s["stage"] == "manifest"}
    assert manifest_rows == {2, 3, 4}
    assert any(s["row"] == 1 and s["stage"] == "train" and "cannot decode" in s["reason"] for s in skipped)
    assert latest_checkpoint(tmp_path / "run").name == "step-000036"


@pytest.mark.slow
def test_a_short_tiny_run_retrieves_clearly_above_chance(tmp_path):
    """Held-out (val) retrieval of a ~30 s CPU run: R@5 at least 3x chance, R@1 at least 2x."""
    from medmoe.data.synth import generate

    data = generate(tmp_path / "data", n=600, seed=0, size=64, progress=False)
    argv = ["train", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "120",
            "--batch-size", "32", "--lr", "1e-3", "--eval-every", "1000", "--quiet"]
    assert main(argv) == 0
    scores = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = [s for s in scores if s["split"] == "val"][-1]
    chance_r5 = 5 * final["chance_r1"]
    assert min(final["i2t_r5"], final["t2i_r5"]) >= 3 * chance_r5
    assert min(final["i2t_r1"], final["t2i_r1"]) >= 2 * final["chance_r1"]
    assert final["routing_acc_image"] > 0.8
    assert 0 <= final["zeroshot_acc"] <= 1  # MedSynth's prompts name the val rows' classes: a learning curve


def test_non_finite_losses_skip_steps_and_ten_in_a_row_stop_the_run(tmp_path, medsynth, monkeypatch, capsys):
    from medmoe.losses import MedMoELoss

    real, calls = MedMoELoss.forward, []

    def forward(self, *args, **kwargs):  # finite for 3 steps, then NaN for good
        calls.append(1)
        losses = real(self, *args, **kwargs)
        if len(calls) > 3:
            losses["total"] = losses["total"] * float("nan")
        return losses

    monkeypatch.setattr(MedMoELoss, "forward", forward)
    assert main(train_argv(medsynth, tmp_path / "run", 30, "--checkpoint-every", "2")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "10 non-finite steps in a row at step 13" in err[0] and "step-000002" in err[0]
    assert latest_checkpoint(tmp_path / "run").name == "step-000002"  # the last good one
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("nonfinite")] == list(range(4, 14))


def test_training_streams_webdataset_shards(tmp_path, medsynth):
    from medmoe.data.shards import write_shards

    write_shards(medsynth, tmp_path / "shards", shard_size=32, split="train", progress=False)
    argv = train_argv(f"{tmp_path}/shards/{{000000..000003}}.tar", tmp_path / "run", 4, "--val", str(medsynth),
                      "--workers", "2")
    assert main(argv) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"][-1]
    samples = json.loads((tmp_path / "shards" / "shards.json").read_text())["samples"]
    assert train["epoch"] == round(4 / (samples // 8), 4)
    assert [r for r in records if r["split"] == "val"][-1]["n"] > 0


@pytest.mark.slow
def test_training_is_a_function_of_the_seed_whatever_the_loader_workers(tmp_path, medsynth):
    """The data order, augmentation and dropout come from (seed, step, ...) keys, not from the
    process that happens to load a batch: same seed -> bit-identical weights, another -> different."""
    for name, extra in [("a", ["--workers", "0"]), ("b", ["--workers", "2"]), ("c", ["--workers", "0", "--seed", "1"])]:
        assert main(train_argv(medsynth, tmp_path / name, 3, *extra)) == 0
    a, b, c = (weights(tmp_path / name) for name in "abc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_negative_seed_is_a_config_error(tmp_path, medsynth, capsys):
    assert main(train_argv(medsynth, tmp_path / "run", 1, "--seed", "-1")) == 2
    assert "--seed must be >= 0" in capsys.readouterr().err
