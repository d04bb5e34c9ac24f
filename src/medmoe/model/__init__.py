"""The MedMoE network: Swin pyramid, experts and routers, text encoder."""
