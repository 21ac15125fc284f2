"""Attribution methods and their sanity checks on tiny models whose evidence is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from alzmri.explain.attribution import METHODS, attribute, integrated_gradients_completeness, resolve_layer
from alzmri.explain.sanity import cascading_randomization, map_similarity, summarize
from alzmri.models import create_model
from alzmri.utils.errors import AlzmriError

EDGE = 24
CUBE = (slice(4, 12), slice(12, 20), slice(6, 14))
FAST = {"occlusion": {"mask_size": 6}, "smoothgrad": {"n_samples": 8}}  # occlusion: 7³ windows, not 15³


class CubeNet(nn.Module):
    """conv → ReLU → strided conv → ReLU → global average pool → linear, weights set by hand.

    ``conv1`` averages 3³ neighbourhoods minus 0.5, so after the ReLU only voxels in a bright
    (≈1) region are active; ``conv2`` averages again on a 12³ grid; class 1's logit is 20 × the
    mean activation (class 0's is its negative). On a volume that is dark noise except for a
    bright cube the decision therefore rests on the cube alone.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 2, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(2, 4, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv1.weight.zero_()
            self.conv1.weight[0] = 1 / 27
            self.conv1.bias.copy_(torch.tensor([-0.5, -1.0]))
            self.conv2.weight.zero_()
            self.conv2.weight[:, 0] = 1 / 27
            self.conv2.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[-20.0] * 4, [20.0] * 4]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x))))).flatten(1))


def cube_volume(seed: int = 0) -> np.ndarray:
    volume = np.random.default_rng(seed).normal(0.0, 0.05, (EDGE,) * 3).astype(np.float32)
    volume[CUBE] += 1.0
    return volume


def cube_mask(margin: int = 0) -> np.ndarray:
    mask = np.zeros((EDGE,) * 3, dtype=bool)
    mask[tuple(slice(s.start - margin, s.stop + margin) for s in CUBE)] = True
    return mask


@pytest.fixture(scope="module")
def cube() -> tuple[CubeNet, np.ndarray]:
    return CubeNet(), cube_volume()


def test_cube_model_predicts_class_one_from_the_cube(cube):
    model, volume = cube
    with torch.no_grad():
        assert model(torch.from_numpy(volume)[None, None]).argmax(1).item() == 1
        assert model(torch.zeros(1, 1, EDGE, EDGE, EDGE)).abs().max().item() == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_every_method_finds_the_cube(cube, method):
    model, volume = cube
    layer = {"layer": "conv2"} if method.startswith("gradcam") else {}
    heat = attribute(model, volume, method, **layer, **FAST.get(method, {}))
    assert heat.shape == (EDGE,) * 3 and heat.dtype == np.float32 and np.isfinite(heat).all()
    # Grad-CAM on conv2 (stride 2) may be off by one feature-map cell = 2 voxels.
    margin = 2 if method.startswith("gradcam") else 0
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert cube_mask(margin)[peak], f"{method} peaks at {peak}, outside the cube"
    inside = np.abs(heat[cube_mask()]).mean()
    outside = np.abs(heat[~cube_mask()]).mean()
    assert inside > 10 * outside, f"{method}: mean |map| in the cube {inside:.3g} vs outside {outside:.3g}"


def test_volume_may_carry_a_channel_axis_and_be_a_tensor(cube):
    model, volume = cube
    plain = attribute(model, volume, "saliency")
    assert np.array_equal(plain, attribute(model, torch.from_numpy(volume)[None], "saliency"))
    with pytest.raises(AlzmriError, match="one scan"):
        attribute(model, volume[None, None], "saliency")


def test_target_selects_the_class(cube):
    model, volume = cube
    predicted = attribute(model, volume, "integrated_gradients", steps=8)
    assert np.allclose(predicted, attribute(model, volume, "integrated_gradients", target=1, steps=8))
    assert np.allclose(-predicted, attribute(model, volume, "integrated_gradients", target=0, steps=8), atol=1e-7)
    with pytest.raises(AlzmriError, match="target class 2 does not exist"):
        attribute(model, volume, "gradcam", target=2, layer="conv2")
    with pytest.raises(AlzmriError, match="target class 5 does not exist"):
        attribute(model, volume, "saliency", target=5)


def test_registered_model_uses_the_registry_gradcam_layer():
    torch.manual_seed(0)
    model = create_model("liu_cnn_compact", input_size=EDGE, width=1)
    volume = torch.randn(EDGE, EDGE, EDGE)
    assert resolve_layer(model, volume, model_name="liu_cnn_compact") == "features.12"
    by_registry = attribute(model, volume, "gradcam", model_name="liu_cnn_compact")
    assert np.array_equal(by_registry, attribute(model, volume, "gradcam", layer="features.12"))
    assert not np.allclose(by_registry, attribute(model, volume, "gradcam", layer="features.4"))


def test_default_layer_without_a_registry_name_is_the_last_feature_map(cube):
    model, volume = cube
    # pool's (N, 4, 1, 1, 1) output has no location, so the last usable map is relu2's.
    assert resolve_layer(model, volume) == "relu2"


def test_unknown_layer_names_the_feature_map_layers(cube):
    model, volume = cube
    with pytest.raises(AlzmriError, match="no layer 'head.conv'") as caught:
        attribute(model, volume, "gradcam", layer="head.conv")
    message = str(caught.value)
    assert "conv1, relu1, conv2, relu2" in message and "fc" not in message and "pool" not in message
    assert "\n" not in message


def test_bad_requests_are_user_errors(cube):
    model, volume = cube
    with pytest.raises(AlzmriError, match="unknown attribution method 'lime'"):
        attribute(model, volume, "lime")
    with pytest.raises(AlzmriError, match="does not take steps"):
        attribute(model, volume, "saliency", steps=3)
    with pytest.raises(AlzmriError, match="layer= applies to gradcam"):
        attribute(model, volume, "occlusion", layer="conv2")
    with pytest.raises(AlzmriError, match="takes no age"):
        attribute(model, volume, "saliency", age=70.0)


@pytest.mark.parametrize("name", ["cube", "liu_cnn_compact"])
def test_integrated_gradients_are_complete(cube, name):
    if name == "cube":
        model, volume = cube
    else:
        torch.manual_seed(1)
        model, volume = create_model("liu_cnn_compact", input_size=EDGE), cube_volume(1)
    check = integrated_gradients_completeness(model, volume, steps=64)
    assert abs(check["logit_difference"]) > 1e-4
    assert check["relative_error"] < 0.05, check
    if name == "cube":  # attribute() returns the same attributions (summed over channels)
        summed = attribute(model, volume, "integrated_gradients", steps=64).sum()
        assert summed == pytest.approx(check["attribution_sum"], rel=1e-4)


def test_model_state_is_restored_after_every_method():
    model, volume = CubeNet(), cube_volume()
    model.train()
    model.pool.eval()  # a mixed state must survive, not just the top-level flag
    model.conv1.bias.requires_grad_(False)
    model.fc.weight.grad = grad = torch.ones_like(model.fc.weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for method in METHODS:
        layer = {"layer": "conv2"} if method.startswith("gradcam") else {}
        attribute(model, volume, method, **layer, **FAST.get(method, {}))
    assert [m.training for m in model.modules()] == [True, True, True, True, True, False, True]
    assert [p.requires_grad for p in model.parameters()] == [True, False, True, True, True, True]
    assert model.fc.weight.grad is grad and [p.grad is None for p in model.parameters()].count(False) == 1
    assert model.relu1.inplace is True and model.relu2.inplace is False
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_gradcam_leaves_nothing_alive(cube):
    """MONAI's hooks object and the activation's autograd graph hold each other through C++ (invisible to gc): the feature maps leaked per call."""
    import gc

    model, volume = cube
    for method in ("gradcam", "gradcam++"):
        for _ in range(3):
            attribute(model, volume, method, layer="conv2")
    gc.collect()
    alive = [o for o in gc.get_objects() if type(type(o)) is type and type(o).__qualname__.endswith("_cam.<locals>.Hooks")]
    assert not alive, f"{len(alive)} Grad-CAM hook objects (with their feature maps) still alive"


def test_cascading_randomization_changes_a_faithful_map(cube):
    model, volume = cube
    weights = [p.clone() for p in model.parameters()]
    results = cascading_randomization(model, volume, "saliency")
    assert [r["layer"] for r in results] == ["fc", "conv2", "conv1"]
    assert results[-1]["spearman"] < 0.5 and results[-1]["ssim"] < 0.5
    verdict = summarize(results)
    assert verdict["passed"] and verdict["final_spearman"] == results[-1]["spearman"]
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))  # a copy was randomised

    cam = cascading_randomization(model, volume, "gradcam", layer="conv2", layers=["conv2", "conv1"], ssim=False)
    assert [r["layer"] for r in cam] == ["conv2", "conv1"] and cam[-1]["ssim"] is None
    assert cam[-1]["spearman"] < 0.9


def test_summary_flags_a_map_that_ignores_the_weights(cube):
    model, volume = cube

    def edge_detector(_model: nn.Module, vol: np.ndarray, **_: object) -> np.ndarray:
        return np.asarray(vol)  # "explains" with the input itself

    results = cascading_randomization(model, volume, edge_detector)
    assert len(results) == 3 and all(r["spearman"] == pytest.approx(1.0) for r in results)
    verdict = summarize(results)
    assert not verdict["passed"] and "failed" in verdict["message"]
    with pytest.raises(AlzmriError, match="no layer 'fc2'"):
        cascading_randomization(model, volume, "saliency", layers=["fc2"])


def test_map_similarity():
    rng = np.random.default_rng(0)
    a = rng.random((8, 8, 8))
    same = map_similarity(a, a)
    assert same == {"spearman": pytest.approx(1.0), "pearson": pytest.approx(1.0), "top_k_overlap": 1.0}
    flipped = map_similarity(a, -a)
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["top_k_overlap"] == 0.0
    assert map_similarity(a, -a, absolute=True)["spearman"] == pytest.approx(1.0)
    assert map_similarity(a, np.zeros_like(a))["spearman"] == 0.0


def test_age_input_model_gets_its_age():
    torch.manual_seed(0)
    model = create_model("liu_cnn_compact", input_size=EDGE, age_encoding=True)
    volume = cube_volume()
    for method in ("gradcam", "integrated_gradients", "occlusion"):
        options = {"mask_size": 12, "overlap": 0.0} if method == "occlusion" else {"steps": 4} if method == "integrated_gradients" else {}
        heat = attribute(model, volume, method, age=70.0, model_name="liu_cnn_compact", **options)
        assert heat.shape == (EDGE,) * 3 and np.isfinite(heat).all()
    young = attribute(model, volume, "saliency", age=20.0)
    old = attribute(model, volume, "saliency", age=90.0)
    assert not np.allclose(young, old)  # the age reaches the model
    with pytest.raises(AlzmriError, match="pass the scan's age"):
        attribute(model, volume, "saliency")


def test_vit_tokens_are_laid_out_on_the_patch_grid():
    torch.manual_seed(0)
    vit = create_model("vit3d", input_size=16, patch_size=8, hidden_size=24, mlp_dim=48, num_layers=1, num_heads=2)
    volume = torch.randn(16, 16, 16)
    heat = attribute(vit, volume, "gradcam", layer="vit.blocks.0.norm1")
    assert heat.shape == (16, 16, 16) and (heat >= 0).all()
    with pytest.raises(AlzmriError, match="not a \\(N, C, D, H, W\\) feature map"):
        attribute(vit, volume, "gradcam", layer="vit.classification_head")


def test_layer_that_never_runs_is_refused(cube):
    model, volume = cube
    model.spare = nn.Conv3d(1, 1, 1)  # registered but not used by forward
    try:
        with pytest.raises(AlzmriError, match="does not run"):
            attribute(model, volume, "gradcam", layer="spare")
    finally:
        del model.spare
