"""medmoe: MedMoE, modality-specialised mixture-of-experts vision-language pretraining.

``import medmoe`` is light; torch and transformers load on first use of the names below.
"""
from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "create_model": "medmoe.model.medmoe",
    "MedMoE": "medmoe.model.medmoe",
    "ImageOutput": "medmoe.model.medmoe",
    "TextOutput": "medmoe.model.medmoe",
    "MedMoEConfig": "medmoe.config",
    "load_config": "medmoe.config",
    "list_presets": "medmoe.config",
    "load": "medmoe.model.medmoe",
    "PromptClassifier": "medmoe.classify",
    "classify": "medmoe.classify",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medmoe' has no attribute {name!r}")
