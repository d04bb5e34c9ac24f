"""Gradient accumulation with feature caching: A micro-batches give the gradient of one batch."""
import contextlib

import pytest
import torch

import medmoe
from medmoe.losses import MedMoELoss
from medmoe.train.step import forward_backward, split_batch

REPORTS = ["Normal chest radiograph.", "Small hypoechoic lesion in the left lobe of the liver, 8 mm.",
           "T2 hyperintense focus.", "No acute abnormality. Lungs are clear. Heart size is normal.",
           "Large right pleural effusion.", "Cyst.", "Contrast-enhanced CT shows a 3 cm hypodense renal mass.",
           "FLAIR signal abnormality in the periventricular white matter, likely small vessel disease."] * 2


@pytest.fixture(scope="module")
def setting():
    """The tiny model in eval mode: no batch statistics, no dropout, but autograd on."""
    torch.manual_seed(0)
    model = medmoe.create_model("tiny").eval()
    batch = {"images": torch.randn(16, 3, 64, 64), "reports": REPORTS, "modality": torch.arange(16) % 4,
             "tokens": model.text.tokenize(REPORTS)}
    return model, MedMoELoss(), batch


def gradient(model, criterion, micro):
    model.zero_grad(set_to_none=True)
    losses, _ = forward_backward(model, criterion, micro, torch.device("cpu"), contextlib.nullcontext, seed=0)
    return losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_four_micro_batches_of_four_give_the_gradient_of_one_batch_of_sixteen(setting):
    model, criterion, batch = setting
    micro = split_batch(batch, 4)
    assert [len(m["reports"]) for m in micro] == [4, 4, 4, 4]
    big_losses, big = gradient(model, criterion, [batch])
    acc_losses, acc = gradient(model, criterion, micro)
    for k in big_losses:
        assert acc_losses[k].item() == pytest.approx(big_losses[k].item(), rel=1e-5)
    assert big.keys() == acc.keys() and len(big) > 20
    for name in big:  # float32 sums in another order: compare to each gradient's scale
        assert (acc[name] - big[name]).abs().max() <= 1e-4 * big[name].abs().max() + 1e-6, name

    # what accumulation without caching computes (each micro-batch only sees its own 3 negatives) differs
    separate = {}
    for m in micro:
        _, g = gradient(model, criterion, [m])
        for name, value in g.items():
            separate[name] = separate.get(name, 0) + value / 4
    assert max((separate[n] - big[n]).abs().max() / big[n].abs().max() for n in big) > 0.05


def test_split_batch_keeps_every_sample_in_order(setting):
    model = setting[0]
    reports = [" ".join(["word"] * (1 + i)) for i in range(10)]
    batch = {"images": torch.arange(10.0)[:, None], "reports": reports, "modality": torch.arange(10),
             "tokens": model.text.tokenize(reports)}
    parts = split_batch(batch, 4)
    assert sorted(len(p["reports"]) for p in parts) == [2, 2, 3, 3]
    assert sum((p["reports"] for p in parts), []) == batch["reports"]
    assert torch.equal(torch.cat([p["images"] for p in parts]), batch["images"])
    for part in parts:  # each micro-batch's tokens as if it had been tokenised on its own
        own = model.text.tokenize(part["reports"])
        assert all(torch.equal(getattr(part["tokens"], k), getattr(own, k)) for k in ("input_ids", "attention_mask",
                                                                                    "word_ids"))
