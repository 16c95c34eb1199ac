"""Reference checks of the training losses against the architectures they follow (no training)."""

from __future__ import annotations

import torch
import torchvision

from sr_training.losses import HGGT_LAYER_WEIGHTS, VGG_LAYERS, UNetDiscriminatorSN

# BasicSR basicsr/archs/discriminator_arch.py UNetDiscriminatorSN(num_in_ch=3, num_feat=64), written down
# layer by layer: (name, in, out, kernel, bias, spectral_norm).
NF = 64
BASICSR_UNET_D = [("conv0", 3, NF, 3, True, False),
                  ("conv1", NF, 2 * NF, 4, False, True), ("conv2", 2 * NF, 4 * NF, 4, False, True),
                  ("conv3", 4 * NF, 8 * NF, 4, False, True),
                  ("conv4", 8 * NF, 4 * NF, 3, False, True), ("conv5", 4 * NF, 2 * NF, 3, False, True),
                  ("conv6", 2 * NF, NF, 3, False, True),
                  ("conv7", NF, NF, 3, False, True), ("conv8", NF, NF, 3, False, True),
                  ("conv9", NF, 1, 3, True, False)]


def test_unet_discriminator_matches_basicsr_layer_list():
    expected_params = sum(cin * cout * k * k + (cout if bias else 0) for _, cin, cout, k, bias, _ in BASICSR_UNET_D)
    assert expected_params == 4_376_897  # the Real-ESRGAN discriminator's well-known size, 4.38 M
    d = UNetDiscriminatorSN()
    assert sum(p.numel() for p in d.parameters()) == expected_params
    keys = set(d.state_dict())
    for name, cin, cout, k, bias, sn in BASICSR_UNET_D:
        w = f"{name}.weight_orig" if sn else f"{name}.weight"
        assert tuple(d.state_dict()[w].shape) == (cout, cin, k, k), name
        assert (f"{name}.bias" in keys) == bias, name
        assert ({f"{name}.weight_u", f"{name}.weight_v"} <= keys) == sn, name
    x = torch.rand(2, 3, 64, 96)
    out = d(x)
    assert out.shape == (2, 1, 64, 96)  # per-pixel logits at input resolution
    d.skip_connection = False
    assert not torch.allclose(d(x), out)  # the skip connections are really used


def test_vgg19_taps_are_the_named_convs_before_their_relu():
    features = torchvision.models.vgg19(weights=None).features
    names, block, conv = {}, 1, 0
    for i, layer in enumerate(features):
        if isinstance(layer, torch.nn.MaxPool2d):
            block, conv = block + 1, 0
        elif isinstance(layer, torch.nn.Conv2d):
            conv += 1
            names[f"conv{block}_{conv}"] = i
    assert {n: names[n] for n in VGG_LAYERS} == VGG_LAYERS
    for i in VGG_LAYERS.values():
        assert isinstance(features[i], torch.nn.Conv2d) and isinstance(features[i + 1], torch.nn.ReLU)  # pre-ReLU
    assert set(HGGT_LAYER_WEIGHTS) == {"conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4"}
