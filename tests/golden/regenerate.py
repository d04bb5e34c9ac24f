"""Write the golden outputs that tests/test_golden.py compares against (tolerance 1e-5):

    .venv/bin/python tests/golden/regenerate.py

``tiny.safetensors`` holds the tiny preset's ``encode_image`` and ``encode_text`` outputs on fixed
inputs (weights from ``torch.manual_seed(SEED)``, eval mode); ``tiny.json`` says what each tensor is
and which seed, preset and library versions made them. Run this only when a change is meant to change
the model's outputs, and say so in the commit; the test never writes these files.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

SEED, INPUT_SEED, PRESET = 0, 1, "tiny"
REPORTS = [
    "Moderate left pleural effusion with adjacent atelectasis.",
    "Hypoechoic lesion in the right hepatic lobe, no internal Doppler flow.",
    "No focal lesion. The ventricles are normal in size.",
]
FOLDER = Path(__file__).resolve().parent
TENSORS = FOLDER / f"{PRESET}.safetensors"
METADATA = FOLDER / f"{PRESET}.json"
DESCRIPTIONS = {
    "image.global_emb": "encode_image(images).global_emb, v_g [B, D]",
    "image.local_map": "encode_image(images).local_map, V_local [B, D, G, G]",
    "image.expert": "encode_image(images).expert, the image router's top-1 expert [B]",
    "image.router_logits": "encode_image(images).router_logits, the image router [B, K]",
    "forced.local_map": "encode_image(images, expert=arange(B) % K).local_map: every expert runs",
    "text.global_emb": "encode_text(REPORTS).global_emb, t_g [R, D]",
    "text.words": "encode_text(REPORTS).words, merged word embeddings T [R, N, D]",
    "text.lengths": "encode_text(REPORTS).lengths, words per report [R]",
}


def golden_outputs() -> dict[str, torch.Tensor]:
    """The tensors of ``DESCRIPTIONS``, computed now: 4 images drawn from ``INPUT_SEED`` and ``REPORTS``."""
    import medmoe

    torch.manual_seed(SEED)
    model = medmoe.create_model(PRESET).eval()
    size, experts = model.config.image_size, model.config.num_experts
    images = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(INPUT_SEED))
    with torch.no_grad():
        image = model.encode_image(images)
        forced = model.encode_image(images, expert=torch.arange(len(images)) % experts)
        text = model.encode_text(REPORTS)
    return {
        "image.global_emb": image.global_emb, "image.local_map": image.local_map,
        "image.expert": image.expert, "image.router_logits": image.router_logits,
        "forced.local_map": forced.local_map,
        "text.global_emb": text.global_emb, "text.words": text.words, "text.lengths": text.lengths,
    }


def main() -> None:
    import transformers
    from safetensors.torch import save_file

    from medmoe.files import atomic_write, atomic_write_text

    outputs = {name: tensor.contiguous() for name, tensor in golden_outputs().items()}
    atomic_write(TENSORS, lambda tmp: save_file(outputs, tmp))
    metadata = {
        "seed": SEED, "input_seed": INPUT_SEED, "preset": PRESET, "reports": REPORTS,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "tensors": {name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                           "what": DESCRIPTIONS[name]} for name, t in outputs.items()},
    }
    atomic_write_text(METADATA, json.dumps(metadata, indent=2) + "\n")
    print(f"wrote {TENSORS} and {METADATA}")


if __name__ == "__main__":
    main()
