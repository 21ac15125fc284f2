"""Fusion networks: token shapes, attention in both directions, the missing-genetics token, the ablation networks."""

from __future__ import annotations

import torch

from alzmri.fusion.xattn import FusionConcat, FusionXAttn, GeneticsOnly, GeneticTokens

GROUPS = [1, 1, 1, 3]  # APOE, two SNPs, a categorical column of three categories: four genetic tokens


def test_cross_attention_runs_both_ways_over_many_tokens() -> None:
    torch.manual_seed(0)
    model = FusionXAttn(GROUPS, encoder="small_cnn_2d", in_channels=1, num_classes=3, input_size=32, width=16, heads=2).eval()
    images, genetics, present = torch.randn(5, 1, 32, 32), torch.randn(5, 6), torch.ones(5, dtype=torch.bool)
    logits = model(images, genetics, present)
    cells = model.image.cells
    assert logits.shape == (5, 3) and cells > 1
    g, i = model.last_attention["genetic_to_image"], model.last_attention["image_to_genetic"]
    assert g.shape == (5, 2, 4, cells) and i.shape == (5, 2, cells, 4)  # (N, heads, queries, keys)
    assert torch.allclose(g.sum(-1), torch.ones(5, 2, 4), atol=1e-5) and torch.allclose(i.sum(-1), torch.ones(5, 2, cells), atol=1e-5)
    assert g.std() > 0 and i.std() > 0  # several keys: the weights are not all 1
    logits.sum().backward()
    assert model.genetic.embed[0].weight.grad.abs().sum() > 0 and model.image.project.weight.grad.abs().sum() > 0
    # 3D encoders work the same way
    volume = FusionXAttn(GROUPS, encoder="liu_cnn_compact", input_size=24, width=16, heads=2).eval()
    assert volume(torch.randn(2, 1, 24, 24, 24), torch.randn(2, 6), torch.ones(2, dtype=torch.bool)).shape == (2, 2)


def test_value_contributions_add_up_to_the_attention_output() -> None:
    from alzmri.fusion.attention import value_contributions, weighted_value_norms

    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    queries, keys = torch.randn(3, 5, 8), torch.randn(3, 7, 8)
    keys[:, 2] *= 10  # one key with a large value vector: it passes more on than its weight says
    output, weights = attention(queries, keys, keys, need_weights=True, average_attn_weights=False)
    parts = value_contributions(attention, keys, weights)
    assert parts.shape == (3, 5, 7, 8)
    assert torch.allclose(parts.sum(dim=2) + attention.out_proj.bias, output, atol=1e-5)
    norms = weighted_value_norms(attention, keys, weights)
    assert norms.shape == (3, 5, 7) and (norms >= 0).all()
    share, weight = norms / norms.sum(-1, keepdim=True), weights.mean(dim=1)
    assert (share[:, :, 2] > weight[:, :, 2]).float().mean() > 0.9


def test_missing_genetics_become_the_learned_token() -> None:
    torch.manual_seed(0)
    tokens = GeneticTokens(GROUPS, 8)
    features = torch.randn(3, 6)
    present = torch.tensor([True, False, False])
    out = tokens(features, present)
    assert out.shape == (3, 4, 8)
    assert torch.equal(out[1], tokens.missing) and torch.equal(out[2], tokens.missing)  # whatever the (absent) features say
    assert not torch.equal(out[0], tokens.missing)
    other = tokens(torch.randn(3, 6), present)
    assert torch.equal(other[1:], out[1:]) and not torch.equal(other[0], out[0])


def test_ablation_networks_shapes() -> None:
    images, genetics, present = torch.randn(4, 1, 32, 32), torch.randn(4, 6), torch.tensor([True, True, False, True])
    assert FusionConcat(GROUPS, encoder="small_cnn_2d", input_size=32, width=16).eval()(images, genetics, present).shape == (4, 2)
    only = GeneticsOnly(GROUPS, num_classes=3).eval()
    assert only(images, genetics, present).shape == (4, 3)
    assert torch.allclose(only(torch.zeros_like(images), genetics, present), only(images, genetics, present))  # the image is ignored
