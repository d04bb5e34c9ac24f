import json
import subprocess
import sys

import pytest

from medmoe.cli import build_parser, main

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: medmoe " + command in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["config", "--preset", "huge"], "unknown preset 'huge'"),
    (["config", "--set", "num_experts"], "--set expects key=value"),
    (["config", "--set", "num_experts=many"], "'num_experts' must be int"),
    (["flops", "--set", "flavour=red"], "unknown config key(s): flavour"),
])
def test_user_errors_are_one_line_with_exit_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("medmoe: error: ") and message in err


def test_python_dash_m_runs_the_cli():
    run = subprocess.run([sys.executable, "-m", "medmoe", "config", "--preset", "tiny", "--set", "bogus=1"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "unknown config key" in run.stderr


def test_synth_command_writes_a_manifest(tmp_path):
    assert main(["synth", str(tmp_path / "s"), "--n", "12", "--size", "64", "--seed", "5", "--quiet"]) == 0
    rows = (tmp_path / "s" / "manifest.jsonl").read_text().splitlines()
    assert len(rows) == 12 and all((tmp_path / "s" / json.loads(r)["image"]).is_file() for r in rows)
    assert main(["synth", str(tmp_path / "t"), "--n", "0"]) == 2


def test_synth_mix_draws_only_the_named_modalities(tmp_path):
    assert main(["synth", str(tmp_path / "s"), "--n", "16", "--size", "32", "--mix", "ct=1, mri=2", "--quiet"]) == 0
    rows = [json.loads(r) for r in (tmp_path / "s" / "manifest.jsonl").read_text().splitlines()]
    assert {row["modality"] for row in rows} == {"ct", "mri"}


@pytest.mark.parametrize("mix, message", [
    ("xray=0.6,bone=0.4", "unknown modality 'bone'"),
    ("xray=0", "weight of xray in the mix must be a finite number > 0"),
    ("ct=1,mri=-0.5", "weight of mri"),
    ("xray=lots", "expected MODALITY=WEIGHT"),
    ("xray,ct", "expected MODALITY=WEIGHT"),
    ("ct=1,ct=2", "ct is given twice"),
])
def test_synth_bad_mix_is_one_line_with_exit_status_2(tmp_path, mix, message, capsys):
    assert main(["synth", str(tmp_path / "s"), "--mix", mix, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("medmoe: error: --mix: ") and message in err, err
    assert not (tmp_path / "s").exists()


def test_unusable_data_is_one_line_with_exit_status_1(tmp_path, tiny, capsys):
    (tmp_path / "m.jsonl").write_text('{"image": "missing.png", "report": "Normal."}\n')
    (tmp_path / "junk.png").write_bytes(b"not an image")
    tiny.save_pretrained(tmp_path / "model")
    for argv, message in [(["data", "check", str(tmp_path / "m.jsonl")], "no usable row"),
                          (["explain", "--model", str(tmp_path / "model"), "--image", str(tmp_path / "junk.png"),
                            "--report", "Normal.", "--out", str(tmp_path / "a.png")], "junk.png: not a recognised")]:
        capsys.readouterr()
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("medmoe: error: ") and message in err
