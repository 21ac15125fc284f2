"""Transfer learning: freezing, differential learning rates, pretrained video weights in a real fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alzmri.models import create_model
from alzmri.training.transfer import freeze, keep_frozen_norms_in_eval, parameter_groups
from alzmri.utils.errors import AlzmriError

from conftest import train_config
from test_video_resnet import fake_kinetics


def test_freeze_until_a_stage_and_by_pattern() -> None:
    model = create_model("r3d_18")
    frozen = freeze(model, until="layer3", patterns=["layer4.0.conv1.*"])
    assert frozen[0].startswith("stem.") and any(n.startswith("layer3.") for n in frozen)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("layer4.", "fc.")) for n in trainable)
    assert "layer4.0.conv1.0.weight" not in trainable and "layer4.0.conv2.0.weight" in trainable
    with pytest.raises(AlzmriError, match="choose one of stem, layer1"):
        freeze(create_model("r3d_18"), until="layer9")
    with pytest.raises(AlzmriError, match="matches no parameter"):
        freeze(create_model("r3d_18"), patterns=["nothing.*"])


def test_head_gets_its_own_learning_rate_and_frozen_norms_stay_put() -> None:
    model = create_model("r3d_18")
    freeze(model, until="layer2")
    groups = {g["name"]: g for g in parameter_groups(model, "fc", 1e-4, 10.0, 0.0)}
    assert groups["head"]["lr"] == pytest.approx(1e-3) and groups["backbone"]["lr"] == pytest.approx(1e-4)
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.train()
    keep_frozen_norms_in_eval(model)
    assert not model.stem[1].training and not model.layer2[0].conv1[1].training and model.layer3[0].conv1[1].training
    freeze(model, until="fc")
    with pytest.raises(AlzmriError, match="nothing to train"):
        parameter_groups(model, "fc", 1e-4, 10.0, 0.0)


@pytest.mark.slow
def test_fit_from_kinetics_weights_with_a_frozen_backbone(prepared: dict[str, Path], tmp_path: Path) -> None:
    from alzmri.io.checkpoint import read_checkpoint
    from alzmri.training.fit import fit

    weights = tmp_path / "r3d_18_kinetics.pth"
    state = fake_kinetics("r3d_18")
    torch.save(state, weights)
    run_dir = fit(train_config(prepared, model="r3d_18", pretrained=weights, freeze_until="layer3", epochs=2, dropout=0.0, run_name="r3d-frozen"))
    trained = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    # Frozen weights and batch-norm statistics are exactly the pretrained ones; the rest moved.
    torch.testing.assert_close(trained["stem.0.weight"], state["stem.0.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(trained["layer3.1.conv2.1.running_mean"], state["layer3.1.conv2.1.running_mean"])
    assert not torch.equal(trained["layer4.1.conv2.0.weight"], state["layer4.1.conv2.0.weight"])
    assert trained["fc.weight"].shape == (2, 512)


@pytest.mark.slow
def test_nan_batch_stops_training_and_keeps_the_last_good_checkpoint(prepared: dict[str, Path], monkeypatch) -> None:
    import numpy as np

    import alzmri.training.trainer as trainer_module
    from alzmri.io.checkpoint import read_checkpoint
    from alzmri.training.fit import fit

    class PoisonedAfterTwoEpochs(trainer_module.CachedVolumeDataset):
        calls = 0

        def __getitem__(self, index):
            x, y = super().__getitem__(index)
            if self.transform is not None:  # the training set only
                type(self).calls += 1
                if type(self).calls > 2 * len(self):
                    x = torch.full_like(x, float("nan"))
            return x, y

    monkeypatch.setattr(trainer_module, "CachedVolumeDataset", PoisonedAfterTwoEpochs)
    with pytest.raises(AlzmriError) as err:
        fit(train_config(prepared, epochs=5, run_name="nan-guard", augment=True))
    message = str(err.value)
    # 6 training scans, batch 4, drop_last: one batch of 4 per epoch, so epoch 3 is the first poisoned one.
    assert "training loss is nan at epoch 3" in message and "last good checkpoint" in message and "end of epoch 2" in message
    assert "\n" not in message
    last = prepared["root"] / "runs" / "nan-guard" / "checkpoints" / "last.ckpt"
    weights = read_checkpoint(last)["state_dict"]
    assert all(bool(np.isfinite(v.float().numpy()).all()) for v in weights.values())
