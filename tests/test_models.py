"""The registry: every registered model builds and forwards a tiny input."""

import pytest
import torch

import alzmri.fusion  # noqa: F401  (the fusion models are in the registry too)
from alzmri.models import create_model, list_models, model_info
from alzmri.utils.errors import AlzmriError


@pytest.mark.parametrize("name", list_models())
def test_every_model_forwards_a_tiny_input(name: str) -> None:
    info = model_info(name)
    size = max(16, info.min_input_size)
    kwargs = {k: v for k, v in {"num_classes": 3, "width": 1, "input_size": size, "groups": [1, 2]}.items() if k in info.defaults}
    model = create_model(name, **kwargs).eval()
    genetics = [torch.randn(2, 3), torch.tensor([True, False])] if info.uses_genetics else []  # fusion: volumes as their default 3D encoder reads
    with torch.no_grad():
        out = model(torch.randn(2, 1, *(size,) * (info.spatial_dims or 3)), *genetics)
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()


def test_liu_cnn_paper_widths() -> None:
    model = create_model("liu2022", width=8, input_size=96)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [c.out_channels for c in convs] == [32, 256, 512, 512]
    assert [c.kernel_size[0] for c in convs] == [1, 3, 5, 3]
    assert [c.dilation[0] for c in convs] == [1, 2, 2, 2]
    assert any(isinstance(m, torch.nn.InstanceNorm3d) for m in model.modules())
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [lin.out_features for lin in linears] == [1024, 512, 2]


def test_list_models_pattern_and_unknown_model() -> None:
    assert list_models("liu*") == ["liu2022", "liu_cnn_compact"]
    assert list_models("nothing*") == []
    with pytest.raises(AlzmriError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(AlzmriError, match="does not take"):
        create_model("liu_cnn_compact", colour="red")


def test_pretrained_weights_load_from_a_local_file(tmp_path) -> None:
    from safetensors.torch import save_file

    source = create_model("liu_cnn_compact", input_size=16)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(source.state_dict(), tmp_path / "w.pt")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pt"):
        loaded = create_model("liu_cnn_compact", input_size=16, pretrained=path)
        for a, b in zip(source.state_dict().values(), loaded.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    with pytest.raises(AlzmriError, match="do not fit"):
        create_model("liu_cnn_compact", input_size=32, pretrained=tmp_path / "w.pt")


def test_profile_counts_parameters_flops_and_memory_without_allocating() -> None:
    from alzmri.models.profile import count_parameters_of, profile_model

    small, big = profile_model("r3d_18", 64, batch_size=2), profile_model("r3d_18", 128, batch_size=2)
    assert small.parameters == big.parameters == count_parameters_of("r3d_18") == 33_148_482
    assert 7.5 < big.forward_gflops / small.forward_gflops < 8.5  # 8x the voxels
    assert 7.5 < big.activation_gb / small.activation_gb < 8.5
    assert big.train_gb > big.activation_gb + 4 * 4 * big.parameters / 1e9 - 1e-6
    assert count_parameters_of("mc3_18") == 11_472_450  # torchvision's 11.7 M minus the 400-class head
    with pytest.raises(AlzmriError, match="at least 88"):
        profile_model("liu2022", 64)


def test_models_cli_lists_and_sizes(capsys) -> None:
    from typer.testing import CliRunner

    from alzmri.cli.main import app

    listing = CliRunner().invoke(app, ["models", "list", "r*"])
    assert listing.exit_code == 0 and "r3d_18" in listing.stdout and "33.15M" in listing.stdout and "liu2022" not in listing.stdout
    info = CliRunner().invoke(app, ["models", "info", "r3d_18", "--input-size", "64"])
    assert info.exit_code == 0 and "GFLOPs" in info.stdout and "training step peak" in info.stdout


def test_liu2022_age_encoding_changes_the_output_and_is_required() -> None:
    model = create_model("liu2022", width=1, input_size=88, age_encoding=True, num_classes=3).eval()
    assert model.uses_age and not create_model("liu2022", width=1, input_size=88).uses_age
    x = torch.randn(2, 1, 88, 88, 88)
    with torch.no_grad():
        young, old = model(x, torch.tensor([60.0, 60.0])), model(x, torch.tensor([80.0, 80.0]))
        one_year = model(x, torch.tensor([61.0, 61.0]))
    assert young.shape == (2, 3)
    assert not torch.allclose(young, old) and not torch.allclose(young, one_year)
    with pytest.raises(ValueError, match="age"):
        model(x)
    # The encoding is bounded and distinct for ages a year apart.
    codes = model.age_encoder(torch.tensor([50.0, 51.0, 90.0]))
    assert codes.shape == (3, 512) and torch.isfinite(codes).all()


@pytest.mark.parametrize("age_encoding", [False, True])
def test_pool_head_is_small_keeps_the_features_and_takes_age(age_encoding: bool) -> None:
    mlp = create_model("liu_cnn_compact", input_size=32, age_encoding=age_encoding)
    pool = create_model("liu_cnn_compact", input_size=32, age_encoding=age_encoding, head="pool")
    head_weights = [sum(p.numel() for p in m.head.parameters()) for m in (mlp, pool)]
    assert head_weights[1] * 10 < head_weights[0]
    assert [k for k in pool.state_dict() if k.startswith("features.")] == [k for k in mlp.state_dict() if k.startswith("features.")]
    x = torch.randn(2, 1, 32, 32, 32)
    age = [torch.tensor([60.0, 80.0])] if age_encoding else []
    assert pool.eval()(x, *age).shape == (2, 2)
    # the MLP head keeps the module indices of earlier versions, so their checkpoints still load
    assert {"head.2.weight", "head.5.weight", "head.7.weight"} <= set(mlp.state_dict())
    with pytest.raises(ValueError, match="unknown head"):
        create_model("liu_cnn_compact", input_size=32, head="attention")
