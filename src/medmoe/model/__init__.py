"""The MedMoE network: Swin pyramid, experts and routers, text encoder.

``import medmoe`` stays light (it loads this package on first use of ``medmoe.MedMoE``);
importing ``medmoe.model`` itself loads torch.
"""
from .medmoe import ImageOutput, MedMoE, TextOutput, create_model

__all__ = ["MedMoE", "create_model", "ImageOutput", "TextOutput"]
