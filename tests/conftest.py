import pytest
import torch


@pytest.fixture(scope="session")
def tiny():
    """A tiny MedMoE in eval mode (built once; tests that train build their own)."""
    import medmoe

    torch.manual_seed(0)
    return medmoe.create_model("tiny").eval()
