"""The demo pipeline (medmoe/demo.py): every model trains the same number of steps, even when the
time box cuts the budget, and the report says how many each trained."""
import json

import pytest

from medmoe.config import load_config
from medmoe.demo import PACE_STEPS, run_demo, synth_manifest
from medmoe.runs import trained_steps
from medmoe.train.args import TrainArgs


@pytest.mark.slow
def test_time_box_fixes_one_step_count_for_every_model(tmp_path, capsys):
    configs = {v: load_config("tiny", v) for v in ("medmoe", "static")}
    args = TrainArgs(data=str(synth_manifest(tmp_path)), out=str(tmp_path), steps=PACE_STEPS + 3, batch_size=8,
                     workers=0, progress=False, time_limit=1e-6)  # a box no step fits in: one step each
    report = run_demo(configs, args, n=80).read_text()

    steps = {v: trained_steps(tmp_path / v) for v in configs}
    assert steps == {"medmoe": 1, "static": 1}  # the first model's pace set the count; neither ran its 8 steps
    for v in configs:  # the logs agree with the checkpoints: no model trained past the budget
        logged = [json.loads(line) for line in (tmp_path / v / "metrics.jsonl").read_text().splitlines()]
        assert max(r["step"] for r in logged if r["split"] == "train") == 1
        # one schedule for all: each model was asked for exactly those steps, none cut by a time box of its own
        asked = json.loads((tmp_path / v / "train_args.json").read_text())
        assert asked["steps"] == 1 and asked["time_limit"] is None
    assert "Every variant trained the same number of steps: 1." in report
    assert "- `medmoe`: 1 steps" in report and "- `static`: 1 steps" in report
    assert "every model trains 1 steps (time box" in report
    assert "steps trained: medmoe 1, static 1" in capsys.readouterr().out
