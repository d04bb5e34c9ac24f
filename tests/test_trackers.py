"""``--log-to tensorboard,wandb``: the same scalars as metrics.jsonl and the evaluation figures, read back from
TensorBoard's event files and from the offline W&B run's log, with no network and no account."""
import json
import struct
import sys

import pytest

from medmoe.cli import main
from medmoe.errors import ConfigError
from medmoe.train.trackers import parse_log_to, scalars


def wandb_history(run_file) -> list[dict]:
    """The history rows of an offline W&B run (``run-ID.wandb``): a LevelDB-style log (7-byte file header, 32 KiB
    blocks of records with a 7-byte header: CRC, length, type full/first/middle/last) of ``Record`` protobufs."""
    from wandb.proto import wandb_internal_pb2

    data, position, block, pending, rows = run_file.read_bytes(), 7, 32768, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # the rest of a block too short for a header: padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk, position = data[position + 7 : position + 7 + length], position + 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
        elif kind == 0:
            position += block - position % block
    return rows


def test_log_to_names_its_trackers():
    assert parse_log_to("tensorboard, wandb,tensorboard") == ("tensorboard", "wandb") and parse_log_to(None) == ()
    with pytest.raises(ConfigError, match="--log-to takes tensorboard and/or wandb"):
        parse_log_to("mlflow")
    record = {"step": 10, "split": "train", "total": 1.5, "route_load": [0.25, 0.75], "nonfinite": True, "lr": 1e-4}
    assert scalars(record) == {"train/total": 1.5, "train/route_load/0": 0.25, "train/route_load/1": 0.75,
                               "train/lr": 1e-4}


@pytest.mark.slow
def test_training_logs_to_tensorboard_and_offline_wandb(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from medmoe.data.synth import generate

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    data = generate(tmp_path / "data", n=60, seed=3, size=64, progress=False)
    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", str(data), "--out", str(run), "--steps", "6", "--batch-size",
                 "8", "--log-every", "2", "--eval-every", "4", "--workers", "0", "--quiet",
                 "--log-to", "tensorboard,wandb"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 4, 6] and any(r["split"] == "val" for r in records)

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    for key in ("total", "local", "lr", "images_per_s", "data_wait"):
        logged = [(e.step, e.value) for e in events.Scalars(f"train/{key}")]
        assert logged == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in train], key
    assert [e.step for e in events.Scalars("val/i2t_r1")] == [r["step"] for r in records if r["split"] == "val"]
    assert {"attention", "routing"} <= set(events.Tags()["images"])
    assert events.Images("attention")[0].step == 4 and events.Images("attention")[0].width > 300

    (run_file,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    history = wandb_history(run_file)
    logged = {row["_step"]: row for row in history if "train/total" in row}
    assert {s: row["train/total"] for s, row in logged.items()} == {r["step"]: pytest.approx(r["total"]) for r in train}
    assert any(row.get("attention/_type") == "image-file" and row["attention/width"] > 300 for row in history)


def test_a_missing_tracker_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    assert main(["train", "--preset", "tiny", "--data", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "run"),
                 "--log-to", "wandb"]) == 2
    assert capsys.readouterr().err.strip() == ("medmoe: error: --log-to wandb needs the wandb package: "
                                               "pip install 'medmoe[wandb]'")
    assert main(["train", "--preset", "tiny", "--data", "x", "--out", str(tmp_path / "run"), "--log-to", "csv"]) == 2
