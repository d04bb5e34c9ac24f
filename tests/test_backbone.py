import torch

from medmoe.config import load_config
from medmoe.model.backbone import SwinPyramid


def test_pyramid_shapes_follow_strides_4_8_16_32():
    cfg = load_config("tiny")
    backbone = SwinPyramid(cfg.image_size, cfg.swin).eval()
    e, s = cfg.swin["embed_dim"], cfg.image_size
    maps = backbone(torch.randn(2, 3, s, s))
    assert [tuple(m.shape) for m in maps] == [(2, e * 2**i, s // 2 ** (i + 2), s // 2 ** (i + 2)) for i in range(4)]
    assert backbone.channels == [e, 2 * e, 4 * e, 8 * e]


def test_pyramid_levels_are_stage_outputs_before_patch_merging():
    """F_l must be the last block of stage l (normed), not the patch embedding or a post-merge map."""
    cfg = load_config("tiny")
    backbone = SwinPyramid(cfg.image_size, cfg.swin).eval()
    swin = backbone.swin
    captured = []

    def grab(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    hooks = [layer.blocks[-1].register_forward_hook(grab) for layer in swin.swin.encoder.layers]
    x = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        maps = backbone(x)
    for h in hooks:
        h.remove()
    for level, (tokens, fmap) in enumerate(zip(captured, maps)):
        b, c, hh, ww = fmap.shape
        stage = f"stage{level + 1}"
        expected = swin.hidden_states_norms[stage](tokens).view(b, hh, ww, c).permute(0, 3, 1, 2)
        torch.testing.assert_close(fmap, expected)


def test_backbone_loads_pretrained_weights_from_a_local_folder(tmp_path):
    from transformers import SwinBackbone, SwinConfig

    import medmoe

    cfg = load_config("tiny")
    torch.manual_seed(123)
    saved = SwinBackbone(SwinConfig(image_size=cfg.image_size, out_features=["stage1", "stage2", "stage3", "stage4"],
                                    **cfg.swin))
    saved.save_pretrained(tmp_path / "swin")
    model = medmoe.create_model("tiny", backbone=str(tmp_path / "swin"))
    loaded = model.image.backbone.swin.state_dict()
    for name, value in saved.state_dict().items():
        assert torch.equal(loaded[name], value), name
