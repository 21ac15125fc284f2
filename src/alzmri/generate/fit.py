"""``alzmri train-progression``: one GAN per stage transition, resumable epoch by epoch.

Per transition ``k`` (stage ``k`` → ``k + 1``) a :class:`~alzmri.models.progression.StageGenerator`
``G`` and a :class:`~alzmri.models.progression.StageDiscriminator` ``D`` (BCE on patch logits,
Adam 2e-4, betas 0.5/0.999: the seed's recipe):

* paired: ``D`` learns true next-stage images (real) against ``G(x)`` (generated); ``G`` learns to
  fool ``D`` plus ``l1_weight · |G(x) − y|`` (pix2pix);
* unpaired: CycleGAN: a backward generator ``F`` and a discriminator of stage ``k``, cycle terms
  ``cycle_weight · (|F(G(x)) − x| + |G(F(y)) − y|)``;
* both: ``identity_weight · |G(x) − x|`` (default 30 paired, 0 unpaired: :meth:`ProgressionConfig.identity_for`); with ``roi`` every discriminator loss is weighted by the
  brain share of each patch.

After each epoch the whole state (weights, optimisers, history) is written atomically to
``RUN/checkpoints/last.pt``; a re-run of the same command continues from there and gives the same
weights as an uninterrupted run (batch order and sampling are seeded by ``(seed, epoch, k)``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from alzmri.data.audit import check_split
from alzmri.data.dataset import select_scans
from alzmri.data.inputs import read_inputs, spatial_dims
from alzmri.data.splits import read_split_dir
from alzmri.generate.config import ProgressionConfig
from alzmri.generate.data import StageImages, chain_starts, choose_pairing, load_stage_images, mean_changes, resolve_stages, stage_members, transition_pairs
from alzmri.generate.losses import masked_l1, patch_bce, patch_weights
from alzmri.generate.run import BEST, CHECKPOINT, FORMAT, build_generator
from alzmri.generate.samples import chain_figure
from alzmri.generate.tracking import ProgressionTracker
from alzmri.models.progression import StageDiscriminator, check_edges
from alzmri.utils.atomic import atomic_path, atomic_write_text
from alzmri.utils.errors import AlzmriError
from alzmri.utils.hashing import text_digest
from alzmri.utils.run_folder import claim_run_dir


class Transition:
    """The networks and optimisers of one transition."""

    def __init__(self, spec: dict[str, Any], config: ProgressionConfig, unpaired: bool) -> None:
        dims, channels = spec["spatial_dims"], spec["channels"]
        self.G = build_generator(spec)
        self.D = StageDiscriminator(dims, channels, config.width)
        self.F = build_generator(spec) if unpaired else None  # next stage → this stage
        self.E = StageDiscriminator(dims, channels, config.width) if unpaired else None  # judges this stage
        generators = [p for m in (self.G, self.F) if m is not None for p in m.parameters()]
        discriminators = [p for m in (self.D, self.E) if m is not None for p in m.parameters()]
        self.opt_g = torch.optim.Adam(generators, lr=config.lr, betas=config.betas)
        self.opt_d = torch.optim.Adam(discriminators, lr=config.lr, betas=config.betas)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {k: m for k, m in (("G", self.G), ("D", self.D), ("F", self.F), ("E", self.E)) if m is not None}

    def state(self) -> dict[str, Any]:
        out = {k: m.state_dict() for k, m in self.modules().items()}
        out.update(opt_g=self.opt_g.state_dict(), opt_d=self.opt_d.state_dict())
        return out

    def load(self, state: dict[str, Any]) -> None:
        for key, module in self.modules().items():
            module.load_state_dict(state[key])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])

    def train(self, mode: bool = True) -> None:
        for module in self.modules().values():
            module.train(mode)


def _d_loss(D: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, m_real: torch.Tensor, m_fake: torch.Tensor, roi: bool) -> torch.Tensor:
    logits_real, logits_fake = D(real), D(fake.detach())
    w_real = patch_weights(m_real, tuple(logits_real.shape[2:])) if roi else None
    w_fake = patch_weights(m_fake, tuple(logits_fake.shape[2:])) if roi else None
    return 0.5 * (patch_bce(logits_real, True, w_real) + patch_bce(logits_fake, False, w_fake))


def _g_adv(D: torch.nn.Module, fake: torch.Tensor, m_fake: torch.Tensor, roi: bool) -> torch.Tensor:
    logits = D(fake)
    return patch_bce(logits, True, patch_weights(m_fake, tuple(logits.shape[2:])) if roi else None)


def train_step(t: Transition, x: torch.Tensor, y: torch.Tensor, mx: torch.Tensor, my: torch.Tensor, config: ProgressionConfig, paired: bool) -> dict[str, float]:
    """One optimisation step of a transition's discriminator(s), then generator(s); returns the losses."""
    fake_y = t.G(x)
    fake_x = t.F(y) if t.F is not None else None
    t.opt_d.zero_grad(set_to_none=True)
    loss_d = _d_loss(t.D, y, fake_y, my, mx, config.roi)
    if t.E is not None:
        loss_d = loss_d + _d_loss(t.E, x, fake_x, mx, my, config.roi)
    loss_d.backward()
    t.opt_d.step()

    t.opt_g.zero_grad(set_to_none=True)
    adv = _g_adv(t.D, fake_y, mx, config.roi)
    loss_g = config.adversarial_weight * adv
    parts = {"g_adv": _value(adv)}
    if paired and config.l1_weight:
        l1 = masked_l1(fake_y, y)
        loss_g = loss_g + config.l1_weight * l1
        parts["g_l1"] = _value(l1)
    if t.F is not None:
        loss_g = loss_g + config.adversarial_weight * _g_adv(t.E, fake_x, my, config.roi)
        cycle = masked_l1(t.F(fake_y), x) + masked_l1(t.G(fake_x), y)
        loss_g = loss_g + config.cycle_weight * cycle
        parts["g_cycle"] = _value(cycle)
    weight = config.identity_for(paired)
    if weight:
        identity = masked_l1(fake_y, x) + (masked_l1(fake_x, y) if fake_x is not None else 0.0)
        loss_g = loss_g + weight * identity
        parts["g_identity"] = _value(identity)
    loss_g.backward()
    t.opt_g.step()
    return {"d": _value(loss_d), "g": _value(loss_g), **parts}


def _value(loss: torch.Tensor | float) -> float:
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


def _batches(k: int, epoch: int, config: ProgressionConfig, paired: bool, pairs: list[np.ndarray], members: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Index batches (input rows, target rows) of transition ``k`` in ``epoch``; seeded, so a resumed run draws the same."""
    rng = np.random.default_rng([config.seed, epoch, k])
    if paired:
        order = rng.permutation(len(pairs[k]))
        src, dst = pairs[k][order, 0], pairs[k][order, 1]
    else:
        a, b = members[k], members[k + 1]
        n = max(len(a), len(b)) if config.oversample else min(len(a), len(b))
        src = rng.choice(a, n, replace=len(a) < n) if len(a) != n else rng.permutation(a)
        dst = rng.choice(b, n, replace=len(b) < n) if len(b) != n else rng.permutation(b)
    size = config.batch_size
    batches = [(src[i : i + size], dst[i : i + size]) for i in range(0, len(src), size) if len(src[i : i + size]) > 1]  # BN needs 2
    return batches[: config.steps_per_epoch] if config.steps_per_epoch else batches


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


@torch.no_grad()
def _validate(transitions: list[Transition], val: StageImages, val_pairs: list[np.ndarray], members: list[np.ndarray], paired: bool) -> dict[str, float]:
    """Per transition: generated vs true next stage and no-change vs true (paired), or how much G changes its input."""
    out: dict[str, float] = {}
    for k, t in enumerate(transitions):
        t.train(False)
        if paired and len(val_pairs[k]):
            x, y = val.images[val_pairs[k][:, 0]], val.images[val_pairs[k][:, 1]]
            mask = val.masks[val_pairs[k][:, 1]]
            fake = np.concatenate([t.G(_tensor(x[i : i + 32])).numpy() for i in range(0, len(x), 32)])
            weight = np.broadcast_to(mask, fake.shape)
            out[f"val_t{k + 1}_mse_brain"] = float((((fake - y) ** 2) * weight).sum() / max(weight.sum(), 1))
            out[f"val_t{k + 1}_mse_brain_no_change"] = float((((x - y) ** 2) * weight).sum() / max(weight.sum(), 1))
        elif len(members[k]):
            x = val.images[members[k][:64]]
            fake = np.concatenate([t.G(_tensor(x[i : i + 8])).numpy() for i in range(0, len(x), 8)])
            out[f"val_t{k + 1}_change_l1"] = float(np.abs(fake - x).mean())
        t.train(True)
    return out


def _sample_rows(val: StageImages, stages: list[str], count: int, paired: bool) -> list[dict]:
    """Up to ``count`` validation chains (where evaluation starts them), with their true later images when paired."""
    starts, truths = chain_starts(val.rows, stages)
    rows = []
    for i, truth in zip(starts[: max(count, 0)], truths, strict=False):
        r = val.rows.iloc[i]
        rows.append({"name": f"{r['participant_id']} {r['slice_id']}".strip(), "index": int(i),
                     "truth_index": [int(j) if j >= 0 else None for j in truth] if paired else None})  # fmt: skip
    return rows


def _draw_samples(transitions: list[Transition], val: StageImages, samples: list[dict], stages: list[str], path: Path, epoch: int) -> Path | None:
    if not samples:
        return None
    rows = []
    with torch.no_grad():
        for s in samples:
            current = val.images[s["index"]][None]
            images = [current[0]]
            for t in transitions:
                t.G.eval()
                current = t.G(_tensor(current)).numpy()
                t.G.train()
                images.append(current[0])
            truth = [val.images[j] if j is not None else None for j in s["truth_index"]] if s["truth_index"] else None
            rows.append({"name": s["name"], "start": 0, "images": images, "truth": truth if truth and any(v is not None for v in truth[1:]) else None})
    return chain_figure(rows, stages, path, title=f"validation subjects after epoch {epoch + 1}")


def _data_digest(images: StageImages) -> str:
    """What the run learns from: its training images (ids and array files) and their intensity scale."""
    keys = images.rows[["participant_id", "session_id", "slice_id", "diagnosis"]].astype(str).agg("/".join, axis=1)
    files = images.rows["array"].map(lambda a: Path(a).name)
    return text_digest("\n".join(sorted(k + ":" + f for k, f in zip(keys, files, strict=True))))


def _run_dir(config: ProgressionConfig) -> Path:
    name = config.run_name or "progression-" + text_digest(json.dumps(config.hashed(), sort_keys=True))[:8]
    return Path(config.out) / name


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def prepare(config: ProgressionConfig) -> dict[str, Any]:
    """Read and check everything before training: images, stages, pairing."""
    cache, inputs = read_inputs(config.cache)
    splits = read_split_dir(config.split)
    check_split(splits, config.split)
    train_rows = select_scans(cache, splits["train"], "train")
    val_rows = select_scans(cache, splits["val"], "val")
    classes = list(getattr(inputs, "classes", None) or sorted(set(cache["diagnosis"])))
    stages = resolve_stages(config.stages, [c for c in classes if c in set(cache["diagnosis"])] or classes)
    train_rows = train_rows[train_rows["diagnosis"].isin(stages)]
    val_rows = val_rows[val_rows["diagnosis"].isin(stages)]
    dims = spatial_dims(inputs)
    train, scale = load_stage_images(train_rows, dims)
    if not len(train):
        raise AlzmriError(f"the training split has no images of the stages {', '.join(stages)}")
    check_edges(tuple(train.images.shape[2:]))
    val, _ = load_stage_images(val_rows, dims, scale)
    if len(val) and tuple(val.images.shape[1:]) != tuple(train.images.shape[1:]):
        raise AlzmriError(f"the validation images are {'x'.join(map(str, val.images.shape[1:]))}, the training images {'x'.join(map(str, train.images.shape[1:]))}: "
                          "the cache mixes image sizes; re-make it with one --size")  # fmt: skip
    pairs = transition_pairs(train.rows, stages)
    pairing = choose_pairing(config.pairing, pairs, stages)
    if pairing == "unpaired" and config.adversarial_weight == 0:
        raise AlzmriError("--adversarial-weight 0 needs paired data (the same subject at adjacent stages); the training split has none for some transition")
    members = stage_members(train.rows, stages)
    empty = [f"{stages[k]} → {stages[k + 1]}" for k in range(len(stages) - 1) if pairing == "unpaired" and (len(members[k]) < 2 or len(members[k + 1]) < 2)]
    if empty:
        raise AlzmriError(f"the training split has fewer than two images on a side of {', '.join(empty)}")
    spec = {"spatial_dims": train.images.ndim - 2, "channels": int(train.images.shape[1]), "width": config.width, "residual": config.residual}
    return {"inputs": inputs, "stages": stages, "train": train, "val": val, "scale": scale, "pairs": pairs, "pairing": pairing,
            "members": members, "val_pairs": transition_pairs(val.rows, stages), "val_members": stage_members(val.rows, stages), "spec": spec}  # fmt: skip


def train_progression(config: ProgressionConfig) -> Path:
    """Train (or resume) a progression run; returns its folder."""
    data = prepare(config)
    stages, train, val, pairing = data["stages"], data["train"], data["val"], data["pairing"]
    paired = pairing == "paired"
    run_dir = _run_dir(config)
    identity = {**config.hashed(), "resolved_stages": stages, "resolved_pairing": pairing, "training_data": _data_digest(train)}
    claim_run_dir(run_dir, {"hash_fields": identity, "config": config.model_dump(mode="json"), "stages": stages, "pairing": pairing})
    torch.manual_seed(config.seed)
    transitions = [Transition(data["spec"], config, unpaired=not paired) for _ in range(len(stages) - 1)]
    history: list[dict[str, float]] = []
    start = 0
    checkpoint = run_dir / CHECKPOINT
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        for t, s in zip(transitions, state["training"], strict=True):
            t.load(s)
        history, start = list(state["history"]), int(state["epoch"])
        print(f"resuming {run_dir} after epoch {start}")
    mean_change = torch.from_numpy(mean_changes(train, stages, data["pairs"] if paired else None))
    tracker = ProgressionTracker(config.mlflow, config.out, run_dir, config.tracking_uri)
    tracker.params({**config.hashed(), "identity_weight": config.identity_for(paired), "pairing": pairing, "stages": ",".join(stages), "train_images": len(train)})
    counts = [len(p) for p in data["pairs"]] if paired else [f"{len(data['members'][k])}/{len(data['members'][k + 1])}" for k in range(len(stages) - 1)]
    print(f"{run_dir.name}: {pairing} ({'same-subject pairs' if paired else 'images per side'} per transition: {', '.join(map(str, counts))}); "
          f"{' → '.join(stages)}; ROI {'on' if config.roi else 'off'}; residual {'on' if config.residual else 'off'}; identity weight {config.identity_for(paired):g}")  # fmt: skip
    samples = _sample_rows(val, stages, config.samples, paired)
    for epoch in range(start, config.epochs):
        began = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch)
        sums: dict[str, list[float]] = {}
        plan = [(k, b) for k in range(len(transitions)) for b in _batches(k, epoch, config, paired, data["pairs"], data["members"])]
        untrained = sorted({k for k in range(len(transitions))} - {k for k, _ in plan})
        if untrained:
            raise AlzmriError(f"transition {stages[untrained[0]]} → {stages[untrained[0] + 1]} has no batch of two images (lower --batch-size, or add data)")
        for k, (src, dst) in tqdm(plan, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not config.progress, leave=False):
            t = transitions[k]
            t.train(True)
            losses = train_step(t, _tensor(train.images[src]), _tensor(train.images[dst]), _tensor(train.masks[src]), _tensor(train.masks[dst]), config, paired)
            for name, value in losses.items():
                sums.setdefault(f"t{k + 1}_{name}", []).append(value)
        record = {name: float(np.mean(values)) for name, values in sums.items()}
        record.update(_validate(transitions, val, data["val_pairs"], data["val_members"], paired))
        record["epoch"] = epoch + 1
        record["seconds"] = round(time.perf_counter() - began, 2)
        history.append(record)
        # The epoch's record (sample grid, MLflow metrics, best.pt) before last.pt: a kill between them repeats this epoch, never skips its record.
        figure = _draw_samples(transitions, val, samples, stages, run_dir / "samples" / f"epoch-{epoch + 1:03d}.png", epoch) if samples else None
        tracker.metrics({k: v for k, v in record.items() if k != "epoch"}, epoch + 1)
        if figure is not None:
            tracker.artifact(figure, "samples")
        state = _state(config, data, transitions, mean_change, history, epoch + 1)
        if _is_best(history):
            _save(run_dir / BEST, {**{k: v for k, v in state.items() if k != "training"}, "chosen_on": state["val_subjects"] if paired else []})
        _save(checkpoint, state)
        print(_epoch_line(record, len(transitions), config.epochs), flush=True)
    atomic_write_text(run_dir / "history.csv", pd.DataFrame(history).to_csv(index=False))
    best = torch.load(run_dir / BEST, map_location="cpu", weights_only=True)["epoch"] if (run_dir / BEST).is_file() else None
    atomic_write_text(run_dir / "result.json", json.dumps({"run": str(run_dir), "checkpoint": str(checkpoint), "best": str(run_dir / BEST), "best_epoch": best,
                                                           "epochs": len(history), "pairing": pairing, "identity_weight": config.identity_for(paired), "stages": stages, "mlflow_run_id": tracker.run_id}, indent=2) + "\n")  # fmt: skip
    tracker.artifact(run_dir / "history.csv")
    tracker.finish()
    return run_dir


def _state(config: ProgressionConfig, data: dict[str, Any], transitions: list[Transition], mean_change: torch.Tensor, history: list, epoch: int) -> dict[str, Any]:
    inputs = data["inputs"]
    return {
        "kind": "progression", "format": FORMAT, "epoch": epoch, "settings": config.model_dump(mode="json"), "stages": data["stages"],
        "pairing": data["pairing"], "scale": data["scale"], "inputs": inputs.model_dump(mode="json"), "spec": data["spec"],
        "shape": list(data["train"].images.shape[1:]), "mean_change": mean_change, "history": history,
        "train_subjects": sorted(set(data["train"].rows["participant_id"].astype(str))),
        "val_subjects": sorted(set(data["val"].rows["participant_id"].astype(str))),
        "generators": [t.G.state_dict() for t in transitions], "training": [t.state() for t in transitions],
    }  # fmt: skip


def val_score(record: dict[str, float]) -> float | None:
    """Mean validation MSE (brain) against the true follow-up over the transitions; None when unpaired."""
    values = [v for k, v in record.items() if k.startswith("val_t") and k.endswith("_mse_brain")]
    return float(np.mean(values)) if values else None


def _is_best(history: list[dict[str, float]]) -> bool:
    """Whether the last epoch has the lowest validation score so far (unpaired runs: always, so best = last)."""
    scores = [val_score(h) for h in history]
    if scores[-1] is None:
        return True
    finite = [s for s in scores if s is not None and np.isfinite(s)]  # a diverged epoch (NaN) is never the best, nor blocks a later one
    return bool(np.isfinite(scores[-1])) and scores[-1] <= min(finite)


def _epoch_line(record: dict[str, float], transitions: int, epochs: int) -> str:
    parts = [f"epoch {int(record['epoch'])}/{epochs}"]
    for k in range(1, transitions + 1):
        text = f"t{k}: D {record.get(f't{k}_d', float('nan')):.3f} G {record.get(f't{k}_g', float('nan')):.3f}"
        if f"val_t{k}_mse_brain" in record:
            text += f" val MSE {record[f'val_t{k}_mse_brain']:.4f} (no change {record[f'val_t{k}_mse_brain_no_change']:.4f})"
        parts.append(text)
    return " | ".join(parts) + f" [{record['seconds']:.0f}s]"
