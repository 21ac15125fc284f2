"""Video ResNets load torchvision Kinetics-400 state dicts key for key (no download, no torchvision).

The expected keys and shapes are generated here from torchvision's published layout
(``torchvision/models/video/resnet.py``), independently of alzmri's implementation.
"""

from __future__ import annotations

import pytest
import torch

from alzmri.models import create_model, model_info
from alzmri.utils.errors import AlzmriError


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{n}": (channels,) for n in ("weight", "bias", "running_mean", "running_var")} | {f"{prefix}.num_batches_tracked": ()}


def torchvision_shapes(arch: str, in_channels: int = 3, num_classes: int = 400) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ``arch`` state dict."""
    shapes: dict[str, tuple[int, ...]] = {}
    if arch == "r2plus1d_18":
        shapes |= {"stem.0.weight": (45, in_channels, 1, 7, 7)} | _bn("stem.1", 45)
        shapes |= {"stem.3.weight": (64, 45, 3, 1, 1)} | _bn("stem.4", 64)
    else:
        shapes |= {"stem.0.weight": (64, in_channels, 3, 7, 7)} | _bn("stem.1", 64)
    kinds = {"r3d_18": ["3d"] * 4, "mc3_18": ["3d"] + ["2d"] * 3, "r2plus1d_18": ["2+1d"] * 4}[arch]
    inplanes = 64
    for stage, (planes, kind) in enumerate(zip((64, 128, 256, 512), kinds), start=1):
        for block in range(2):
            cin = inplanes if block == 0 else planes
            mid = (cin * planes * 27) // (cin * 9 + 3 * planes)  # per block, from its own input width
            for conv, (a, b) in (("conv1", (cin, planes)), ("conv2", (planes, planes))):
                p = f"layer{stage}.{block}.{conv}"
                if kind == "2+1d":
                    shapes |= {f"{p}.0.0.weight": (mid, a, 1, 3, 3)} | _bn(f"{p}.0.1", mid) | {f"{p}.0.3.weight": (b, mid, 3, 1, 1)}
                else:
                    shapes[f"{p}.0.weight"] = (b, a, 3, 3, 3) if kind == "3d" else (b, a, 1, 3, 3)
                shapes |= _bn(f"{p}.1", b)
            if block == 0 and (stage > 1):
                shapes |= {f"layer{stage}.0.downsample.0.weight": (planes, inplanes, 1, 1, 1)} | _bn(f"layer{stage}.0.downsample.1", planes)
        inplanes = planes
    return shapes | {"fc.weight": (num_classes, 512), "fc.bias": (num_classes,)}


def fake_kinetics(arch: str) -> dict[str, torch.Tensor]:
    """Random weights with torchvision's keys, plausible enough to train on (positive variances)."""
    gen = torch.Generator().manual_seed(0)

    def tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key.endswith("num_batches_tracked"):
            return torch.randint(0, 100, shape, generator=gen)
        if key.endswith("running_var"):
            return 0.5 + torch.rand(shape, generator=gen)
        if len(shape) == 1:  # batch-norm weights/biases/means, classifier bias
            return (1.0 if key.endswith(".weight") else 0.0) + 0.1 * torch.randn(shape, generator=gen)
        fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
        return torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5

    return {k: tensor(k, s) for k, s in torchvision_shapes(arch).items()}


@pytest.mark.parametrize("arch", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_keys_and_shapes_match_torchvision(arch: str) -> None:
    model = create_model(arch, in_channels=3, num_classes=400)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == torchvision_shapes(arch)


@pytest.mark.parametrize("arch", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_kinetics_weights_load_into_the_one_channel_model(arch: str, tmp_path) -> None:
    state = fake_kinetics(arch)
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)
    # Same head size: every key is used, none missing or unexpected (strict load).
    model = create_model(arch, num_classes=400, pretrained=path)
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    torch.testing.assert_close(loaded["stem.0.weight"], state["stem.0.weight"].sum(dim=1, keepdim=True))
    for key in state:
        if key != "stem.0.weight":
            torch.testing.assert_close(loaded[key], state[key])
    # A 2-class model keeps a fresh head and every other pretrained weight.
    fresh = create_model(arch, num_classes=2, pretrained=path)
    assert fresh.fc.weight.shape == (2, 512)
    torch.testing.assert_close(fresh.state_dict()["layer4.1.conv2.1.weight"], state["layer4.1.conv2.1.weight"])
    with torch.no_grad():
        assert fresh.eval()(torch.randn(1, 1, 24, 24, 24)).shape == (1, 2)
    assert model_info(arch).gradcam_layer == "layer4"


def test_weights_of_another_architecture_are_refused(tmp_path) -> None:
    torch.save(fake_kinetics("r3d_18"), tmp_path / "r3d.pth")
    with pytest.raises(AlzmriError, match="do not fit the model"):
        create_model("r2plus1d_18", pretrained=tmp_path / "r3d.pth")
