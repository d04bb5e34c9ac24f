"""The compiled path (torch.compile of the backbone and text encoder): the same numbers as eager, and
eager with one warning line where the compiler cannot run."""
import copy

import pytest
import torch

import medmoe
from medmoe.model import compile as compile_module
from medmoe.model.compile import compile_model

REPORTS = ["Moderate left pleural effusion.", "Hypodense lesion in the liver.", "T2 hyperintense focus."]


@pytest.mark.slow
def test_compiled_model_matches_eager():
    """Dynamo's graph capture and AOTAutograd's decompositions, run by the aot_eager backend (inductor's
    C++ code generation adds about a minute on 2 cores; its parity at the paper preset is measured by
    benchmarks/speed.py --compile), for a first batch size and then a second (automatic dynamic shapes)."""
    torch.manual_seed(0)
    eager = medmoe.create_model("tiny").eval()
    fast = compile_model(copy.deepcopy(eager), backend="aot_eager")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for batch, reports in ((3, REPORTS), (5, REPORTS[:2])):
            images = torch.randn(batch, 3, 64, 64, generator=generator)
            a, b = eager.encode_image(images), fast.encode_image(images)
            torch.testing.assert_close(b.local_map, a.local_map, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(b.global_emb, a.global_emb, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(fast.encode_text(reports).words, eager.encode_text(reports).words,
                                       atol=1e-5, rtol=1e-5)
    assert fast.image.backbone._compiled_call_impl is not None and eager.image.backbone._compiled_call_impl is None


def test_train_compiles_the_model_when_asked(tmp_path, monkeypatch):
    import medmoe.model.compile
    from medmoe.data.synth import generate
    from medmoe.train.args import TrainArgs
    from medmoe.train.loop import train

    compiled = []
    monkeypatch.setattr(medmoe.model.compile, "compile_model", lambda model: compiled.append(model) or model)
    manifest = generate(tmp_path / "s", n=24, seed=1, size=64, progress=False)
    config = medmoe.load_config("tiny")
    for flag in (False, True):
        train(config, TrainArgs(data=str(manifest), out=str(tmp_path / f"run{flag}"), steps=1, batch_size=4,
                                workers=0, compile=flag, progress=False))
    assert len(compiled) == 1


def test_without_a_working_compiler_the_model_runs_eager_after_one_warning(tiny, monkeypatch, capsys):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("Compiler: g++ is not found\nmore detail")

    compile_module.compiler_problem.cache_clear()
    monkeypatch.setattr(torch, "compile", no_compiler)
    try:
        model = compile_model(tiny)
    finally:
        compile_module.compiler_problem.cache_clear()
    err = capsys.readouterr().err
    assert err == ("medmoe: warning: torch.compile is not available here (RuntimeError: Compiler: g++ is not "
                   "found); running eager\n")
    assert model is tiny and not hasattr(model.image.backbone, "_compiled_call_impl") or \
        model.image.backbone._compiled_call_impl is None
    with torch.no_grad():
        assert model.encode_image(torch.randn(2, 3, 64, 64)).local_map.shape == (2, 32, 16, 16)
