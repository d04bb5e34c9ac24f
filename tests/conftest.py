import pytest
import torch


@pytest.fixture(scope="session")
def tiny():
    """A tiny MedMoE in eval mode (built once; tests that train build their own)."""
    import medmoe

    torch.manual_seed(0)
    return medmoe.create_model("tiny").eval()


@pytest.fixture(scope="session")
def tiny_folder(tiny, tmp_path_factory):
    """``tiny`` written by ``save_pretrained`` (config.json, model.safetensors, tokenizer/)."""
    return tiny.save_pretrained(tmp_path_factory.mktemp("tiny") / "model")
