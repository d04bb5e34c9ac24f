import json
import subprocess
import sys

import pytest

from medmoe.cli import build_parser, main
from medmoe.cli.common import MODEL_HELP

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
    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "12", "--size", "64", "--seed", "5", "--quiet"]) == 0
    rows = (tmp_path / "s" / "manifest.jsonl").read_text().splitlines()
    assert len(rows) == 12 and all((tmp_path / "s" / json.loads(r)["image"]).is_file() for r in rows)
    assert main(["synth", "--out", str(tmp_path / "t"), "--n", "0"]) == 2


def test_the_old_positional_output_still_works_for_a_release(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "s"), "--n", "4", "--size", "32", "--quiet"]) == 0
    assert "'medmoe synth OUT' is deprecated, use 'medmoe synth --out OUT'" in capsys.readouterr().err
    assert (tmp_path / "s" / "manifest.jsonl").is_file()
    assert main(["synth", str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert main(["synth", "--n", "4"]) == 2 and "needs --out" in capsys.readouterr().err


def test_every_command_that_takes_a_model_takes_one_model_option():
    commands = build_parser()._subparsers._group_actions[0].choices
    with_model = {name: next((a for a in p._actions if a.dest == "model"), None) for name, p in commands.items()}
    with_model = {name: action for name, action in with_model.items() if action is not None}
    assert set(with_model) == {"eval", "benchmark", "explain", "classify", "app", "export", "finetune"}
    assert all(a.help == MODEL_HELP and a.required and a.option_strings == ["--model"] for a in with_model.values())


def test_a_hub_id_loads_in_every_model_command(tiny_folder, tmp_path, monkeypatch, capsys):
    import medmoe.hub

    monkeypatch.setattr(medmoe.hub, "download", lambda repo_id: tiny_folder if repo_id == "org/name" else None)
    from pydicom.data import get_testdata_file

    dicom = get_testdata_file("CT_small.dcm")
    assert main(["explain", "--model", "org/name", "--image", dicom, "--report", "Liver lesion.",
                 "--out", str(tmp_path / "a.png")]) == 0
    assert main(["classify", "--model", "org/name", "--image", dicom, "--classes", "a", "b"]) == 0
    (tmp_path / "root").mkdir()
    assert main(["benchmark", "--model", "org/name", "--root", str(tmp_path / "root"), "--quiet"]) == 1  # no data
    assert "not a medmoe model folder" not in capsys.readouterr().err


def test_synth_mix_draws_only_the_named_modalities(tmp_path):
    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "16", "--size", "32", "--mix", "ct=1, mri=2",
                 "--quiet"]) == 0
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
    assert main(["synth", "--out", str(tmp_path / "s"), "--mix", mix, "--quiet"]) == 2
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


def test_a_missing_extra_is_one_line_but_a_broken_import_is_a_traceback(tiny_folder, tmp_path, monkeypatch, capsys):
    import importlib.util

    import medmoe.cli.use

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    assert main(["export", "--model", str(tiny_folder), "--out", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxscript not installed" in err and "pip install 'medmoe[export]'" in err

    def broken(args):
        import medmoe.no_such_module  # noqa: F401  a bug, not a missing extra

    monkeypatch.setattr(medmoe.cli.use, "cmd_export", broken)
    with pytest.raises(ImportError):
        main(["export", "--model", str(tiny_folder), "--out", str(tmp_path / "onnx")])


def test_label_modality_lives_under_data_and_the_old_name_warns(tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "report": "Axial CT of the abdomen."}) + "\n")
    assert main(["data", "label-modality", str(manifest), "--out", str(tmp_path / "a.jsonl")]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert main(["label-modality", str(manifest), "--out", str(tmp_path / "b.jsonl")]) == 0
    assert "'medmoe label-modality' is deprecated, use 'medmoe data label-modality'" in capsys.readouterr().err
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def test_markdown_and_json_outputs_are_written_atomically(tmp_path, monkeypatch):
    import os

    from medmoe.cli.common import write_json, write_text

    target = tmp_path / "tables.md"
    write_text(str(target), "old tables\n")

    def interrupted(src, dst):  # the process dies between writing the new file and renaming it
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_text(str(target), "new tables\n" * 1000)
    with pytest.raises(KeyboardInterrupt):
        write_json(str(tmp_path / "r.json"), {"a": 1})
    assert target.read_text() == "old tables\n" and not (tmp_path / "r.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tables.md"]  # no temporary file left behind
