"""HGGT's base loss: L1 + VGG19 perceptual + vanilla GAN with a U-Net discriminator (spectral norm)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from bench.errors import StudyError

# torchvision vgg19().features indices of conv1_2, conv2_2, conv3_4, conv4_4, conv5_4 (outputs before ReLU)
VGG_LAYERS = {"conv1_2": 2, "conv2_2": 7, "conv3_4": 16, "conv4_4": 25, "conv5_4": 34}
HGGT_LAYER_WEIGHTS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
VGG19_FILE = "vgg19-dcbb9e9d.pth"


def _vgg19_features(weights: str) -> nn.Sequential:
    import torchvision

    from bench.env import cache_dirs, network_available

    if weights == "random":
        return torchvision.models.vgg19(weights=None).features
    if weights == "imagenet":
        cached = cache_dirs().torchvision / VGG19_FILE
        if not cached.is_file() and not network_available():
            raise StudyError(f"perceptual loss: ImageNet VGG19 weights '{VGG19_FILE}' missing and the network is "
                             f"unreachable; put it in {cached.parent} or set loss.perceptual_weights to a .pth path")
        if os.path.lexists(cached):  # torchvision loads a cached file with weights_only=False: prove it safe first
            from bench.metrics.verify import verify_file

            verify_file(cached, "torchvision")
        return torchvision.models.vgg19(weights=torchvision.models.VGG19_Weights.IMAGENET1K_V1).features
    from sr_training.checkpoint import read_weights

    path = Path(weights)
    if not path.is_file():
        raise StudyError(f"loss.perceptual_weights: {path} does not exist (or use 'imagenet' / 'random')")
    net = torchvision.models.vgg19(weights=None)
    state = read_weights(path, "loss.perceptual_weights")
    if not isinstance(state, dict):
        raise StudyError(f"loss.perceptual_weights {path}: expected a state dict, got {type(state).__name__}")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise StudyError(f"loss.perceptual_weights {path}: not a torchvision VGG19 state dict ({str(exc).splitlines()[0]})") from None
    return net.features


class PerceptualLoss(nn.Module):
    """sum_l w_l * L1(phi_l(x), phi_l(y)) with ImageNet-normalised inputs (BasicSR PerceptualLoss settings)."""

    def __init__(self, weights: str = "imagenet", layer_weights: dict[str, float] = HGGT_LAYER_WEIGHTS):
        super().__init__()
        last = max(VGG_LAYERS[n] for n in layer_weights)
        self.features = _vgg19_features(weights)[: last + 1].eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.taps = {VGG_LAYERS[n]: w for n, w in layer_weights.items()}
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # frozen feature extractor
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = (x - self.mean) / self.std, (y.detach() - self.mean) / self.std
        loss = x.new_zeros(())
        for i, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if i in self.taps:
                loss = loss + self.taps[i] * F.l1_loss(x, y)
        return loss


class UNetDiscriminatorSN(nn.Module):
    """Per-pixel real/fake logits: the U-Net discriminator with spectral norm that HGGT's GAN configs use
    (``network_d: type: UNetDiscriminatorSN, num_in_ch 3, num_feat 64, skip_connection true``), following
    BasicSR ``basicsr/archs/discriminator_arch.py`` ``UNetDiscriminatorSN`` (from Real-ESRGAN):

    conv0 3->nf k3 (bias, no SN); conv1..conv3 down nf->2nf->4nf->8nf k4 s2 (SN, no bias);
    conv4..conv6 up 8nf->4nf->2nf->nf k3 after a x2 bilinear upsample (SN, no bias), each + the
    same-resolution encoder feature (skip connection); conv7, conv8 nf->nf k3 (SN, no bias);
    conv9 nf->1 k3 (bias, no SN). LeakyReLU(0.2) after every conv but conv9.

    Layer names match BasicSR's so its / Real-ESRGAN's ``net_d`` state dicts load unchanged.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        sn, nf = spectral_norm, num_feat
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(num_in_ch, nf, 3, 1, 1)
        self.conv1 = sn(nn.Conv2d(nf, nf * 2, 4, 2, 1, bias=False))
        self.conv2 = sn(nn.Conv2d(nf * 2, nf * 4, 4, 2, 1, bias=False))
        self.conv3 = sn(nn.Conv2d(nf * 4, nf * 8, 4, 2, 1, bias=False))
        self.conv4 = sn(nn.Conv2d(nf * 8, nf * 4, 3, 1, 1, bias=False))
        self.conv5 = sn(nn.Conv2d(nf * 4, nf * 2, 3, 1, 1, bias=False))
        self.conv6 = sn(nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=False))
        self.conv7 = sn(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv8 = sn(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(nf, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = lambda t: F.leaky_relu(t, 0.2)
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)
        e0 = act(self.conv0(x))
        e1 = act(self.conv1(e0))
        e2 = act(self.conv2(e1))
        h = act(self.conv3(e2))
        for conv, skip in ((self.conv4, e2), (self.conv5, e1), (self.conv6, e0)):
            h = act(conv(up(h)))
            if self.skip_connection:
                h = h + skip
        h = act(self.conv8(act(self.conv7(h))))
        return self.conv9(h)


def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Vanilla GAN (BCE with logits), real label 1.0 / fake 0.0."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)
