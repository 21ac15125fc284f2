"""MONAI classifiers: DenseNet-121, MedicalNet-layout ResNets and ViT in the registry (CPU, tiny inputs)."""

from __future__ import annotations

import pytest
import torch

from alzmri.models import create_model, model_info
from alzmri.models.profile import profile_model
from alzmri.utils.errors import AlzmriError

MONAI_MODELS = ["densenet121_3d", "resnet10_3d", "resnet18_3d", "resnet34_3d", "resnet50_3d", "vit3d"]


def _build(name: str, size: int) -> torch.nn.Module:
    kwargs = {"input_size": size} if "input_size" in model_info(name).defaults else {}
    return create_model(name, in_channels=1, num_classes=3, **kwargs)


@pytest.mark.parametrize("name", MONAI_MODELS)
def test_builds_forwards_names_its_layers_and_profiles_on_meta(name: str) -> None:
    info = model_info(name)
    size = max(32, info.min_input_size) if name != "vit3d" else info.min_input_size
    model = _build(name, size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size, size))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    modules = dict(model.named_modules())
    assert info.gradcam_layer in modules and info.head in modules
    assert info.description and info.default_input_size == 128

    profile = profile_model(name, 128, 2, num_classes=3)  # built and run on the meta device
    if name == "vit3d":  # the position embeddings grow with the input
        model = _build(name, 128)
    assert profile.parameters == sum(p.numel() for p in model.parameters())
    assert profile.forward_gflops > 0 and profile.train_gb > 0


def test_resnets_have_medicalnet_layout() -> None:
    for name, shortcut_convs in (("resnet10_3d", True), ("resnet18_3d", False), ("resnet34_3d", False), ("resnet50_3d", True)):
        with torch.device("meta"):
            model = create_model(name)
        assert model.conv1.kernel_size == (7, 7, 7) and model.conv1.stride == (2, 2, 2) and model.conv1.bias is None
        keys = model.state_dict()
        downsample = [k for k in keys if ".downsample." in k]
        assert bool(downsample) == shortcut_convs, name
        assert not any(k.startswith("layer") and ".downsample.0.bias" in k for k in keys), name  # bias-free like MedicalNet


def _medicalnet_checkpoint(path, name: str = "resnet18_3d") -> dict[str, torch.Tensor]:
    """A file shaped like MedicalNet's: ``module.`` keys, a ``conv_seg`` head, no ``fc``."""
    torch.manual_seed(1)
    state = {f"module.{k}": v.clone() for k, v in create_model(name).state_dict().items() if not k.startswith("fc.")}
    state |= {
        "module.conv_seg.0.weight": torch.randn(512, 32, 2, 2, 2),
        "module.conv_seg.0.bias": torch.randn(32),
        "module.conv_seg.1.weight": torch.randn(32),
        "module.conv_seg.1.bias": torch.randn(32),
        "module.conv_seg.3.weight": torch.randn(32, 32, 3, 3, 3),
        "module.conv_seg.4.weight": torch.randn(32),
    }
    torch.save({"state_dict": state}, path)
    return state


def test_medicalnet_checkpoint_loads_and_keeps_a_fresh_classifier(tmp_path) -> None:
    from alzmri.models.weights import load_weights

    path = tmp_path / "resnet_18_23dataset.pth"
    saved = _medicalnet_checkpoint(path)
    model = create_model("resnet18_3d", pretrained=path, num_classes=3)
    loaded = model.state_dict()
    backbone = [k for k in loaded if not k.startswith("fc.")]
    assert backbone and all(torch.equal(loaded[k], saved[f"module.{k}"]) for k in backbone)
    assert loaded["fc.weight"].shape == (3, 512)

    notes = load_weights(create_model("resnet18_3d"), path, adapt=model_info("resnet18_3d").adapt_weights)
    assert any("conv_seg" in n and "6 segmentation-head tensors" in n and "fc starts fresh" in n for n in notes), notes


def test_medicalnet_checkpoint_of_another_depth_is_refused(tmp_path) -> None:
    path = tmp_path / "resnet_10.pth"
    _medicalnet_checkpoint(path, "resnet10_3d")
    with pytest.raises(AlzmriError, match="do not fit"):
        create_model("resnet18_3d", pretrained=path)
    with pytest.raises(AlzmriError, match="do not fit"):  # the first conv's input channels differ
        create_model("resnet10_3d", pretrained=path, in_channels=2)


def test_a_classifier_of_another_shape_is_replaced(tmp_path) -> None:
    source = create_model("resnet10_3d", num_classes=5)
    torch.save(source.state_dict(), tmp_path / "own.pt")
    model = create_model("resnet10_3d", num_classes=2, pretrained=tmp_path / "own.pt")
    assert torch.equal(model.conv1.weight, source.conv1.weight) and model.fc.weight.shape == (2, 512)


def test_head_dropout_acts_only_in_training() -> None:
    fc = create_model("resnet10_3d", dropout=0.5).fc
    x = torch.ones(4, 512)
    with torch.no_grad():
        assert torch.equal(fc.eval()(x), fc(x))
        assert not torch.equal(fc.train()(x), fc.eval()(x))


def test_vit_checks_its_input_size() -> None:
    with pytest.raises(AlzmriError, match="multiple of patch_size"):
        create_model("vit3d", input_size=100)
    with pytest.raises(AlzmriError, match="multiple of patch_size"):
        create_model("vit3d", input_size=24, patch_size=16)
    model = create_model("vit3d", input_size=16, hidden_size=48, mlp_dim=96, num_layers=2, num_heads=4).eval()
    with pytest.raises(ValueError, match="built for 16³"):
        model(torch.randn(1, 1, 32, 32, 32))
    with torch.no_grad():
        assert model(torch.randn(2, 1, 16, 16, 16)).shape == (2, 2)
    assert not any(isinstance(m, torch.nn.Tanh) for m in model.modules())  # MONAI's default Tanh would bound the logits
