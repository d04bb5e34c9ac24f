"""Training options come from TrainArgs' fields: every field with ``option`` is a flag of ``medmoe
train`` (and ``demo``), with its default in the help, and the parsed flags build TrainArgs."""
import argparse
import dataclasses

import pytest

from medmoe.cli import build_parser
from medmoe.cli.training import _train_args
from medmoe.errors import ConfigError
from medmoe.options import add_options, given_options, option
from medmoe.train.args import TrainArgs


def parse(*argv):
    return build_parser().parse_args(list(argv))


def test_no_flags_give_the_dataclass_defaults():
    assert _train_args(parse("train", "--data", "d", "--out", "o")) == TrainArgs(data="d", out="o")


def test_existing_flag_names_set_their_fields():
    args = _train_args(parse("train", "--data", "d", "--out", "o", "--batch-size", "8", "--accum-steps", "2",
                             "--time-limit", "2.5", "--no-sync-bn", "--gather-local", "--quiet", "--device", "cpu",
                             "--checkpoint-every", "3", "--epochs", "1.5"))
    assert (args.batch_size, args.accum_steps, args.time_limit, args.sync_bn, args.gather_local, args.progress,
            args.device, args.checkpoint_every, args.epochs) == (8, 2, 2.5, False, True, False, "cpu", 3, 1.5)


def test_demo_has_its_own_defaults_and_minutes():
    demo = parse("demo")
    assert (demo.steps, demo.time_limit, demo.preset) == (240, 8.0, "small")
    assert parse("demo", "--minutes", "3", "--steps", "5").time_limit == 3.0
    for flag in ("--data", "--resume", "--val"):
        with pytest.raises(SystemExit):
            parse("demo", flag, "x")


def test_every_option_field_is_a_flag_with_its_default_in_the_help(capsys):
    with pytest.raises(SystemExit):
        parse("train", "--help")
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(TrainArgs):
        if "help" in f.metadata and f.type != "bool":
            flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
            shown = f.default in (None, dataclasses.MISSING) or f"(default: {f.default})" in text
            assert flag in text and shown, f.name
    assert "--no-sync-bn" in text and "--quiet" in text and "(default: 32)" in text


def test_choices_are_checked_by_the_parser_and_the_dataclass():
    with pytest.raises(SystemExit):
        parse("train", "--device", "tpu")
    with pytest.raises(ConfigError, match="device must be one of auto, cpu, cuda"):
        TrainArgs(data="d", out="o", device="tpu")


def test_a_new_field_with_option_is_all_it_takes():
    @dataclasses.dataclass
    class Settings:
        size: int = option(3, "a size")
        rate: float | None = option(None, "a rate")
        fast: bool = option(False, "go fast")
        checked: bool = option(True, "check")
        mode: str = option("a", "a mode", choices=("a", "b"))
        verbose: bool = option(True, "say less", flag="--silent")
        hidden: int = 7  # not an option

    parser = argparse.ArgumentParser()
    add_options(parser, Settings)
    assert Settings(**given_options(parser.parse_args([]), Settings)) == Settings()
    given = parser.parse_args(["--size", "5", "--rate", "0.5", "--fast", "--no-checked", "--mode", "b", "--silent"])
    assert Settings(**given_options(given, Settings)) == Settings(5, 0.5, True, False, "b", False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--hidden", "1"])
