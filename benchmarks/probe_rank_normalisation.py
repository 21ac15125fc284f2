"""Probe, not product code: does a per-scan rank (quantile) transform of the brain remove the contrast shortcut?

Usage: ``.venv/bin/python benchmarks/probe_rank_normalisation.py`` after ``benchmarks/recipe_study.py``
has built its cohort in ``/tmp/alzmri-recipe-study``. Patches ``CachedVolumeDataset`` so each input's
brain voxels (the cache's stored mask, else the estimate of ``preprocessing.brain_mask``) become the normal scores of their ranks within the scan,
Φ⁻¹((rank + 0.5) / n), and the background the constant −3. Any monotonic intensity change (such as
a scanner's contrast gamma) then leaves the input unchanged. Trains two recipes of the study on
seeds 0–4 with ``liu_cnn_compact``, then prints eval-mode AUCs on train, val and test. The README's
numbers come from the cache made before ``zero_background`` (``recipe_study.py --keep-background``);
ranks do not depend on the background value, so both caches give the same inputs.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from scipy.special import ndtri
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe_study as rs  # noqa: E402

from alzmri.data import dataset as ds  # noqa: E402
from alzmri.data.splits import read_split_dir  # noqa: E402
from alzmri.evaluation.predict import load_classifier, predict_cached  # noqa: E402
from alzmri.preprocessing.brain_mask import estimate_brain_mask  # noqa: E402
from alzmri.preprocessing.cache import load_array, read_cache  # noqa: E402

ROOT = Path("/tmp/alzmri-recipe-study")
cache, _ = read_cache(ROOT / "cache-zero_background-False")
masks = dict(zip(cache["array"], cache["mask"], strict=True))
orig = ds.CachedVolumeDataset.__getitem__
_brains: dict[str, np.ndarray] = {}


def brain_of(path: str) -> np.ndarray:
    """The stored mask, or (a cache made without skull stripping) the estimate from the cached array."""
    if path not in _brains:
        stored = masks.get(path)
        _brains[path] = np.load(stored) > 0 if stored else estimate_brain_mask(np.asarray(load_array(path), dtype=np.float32))
    return _brains[path]


def rank_normalised(self, i):
    item = orig(self, i)
    x = item[0].numpy()[0]
    brain = brain_of(self.paths[i[0] if isinstance(i, tuple) else i])
    out = np.full(x.shape, -3.0, dtype=np.float32)
    out[brain] = ndtri((rankdata(x[brain]) - 0.5) / brain.sum())
    return (torch.from_numpy(out)[None], *item[1:])


ds.CachedVolumeDataset.__getitem__ = rank_normalised
recipes = {"rank-default": {"model": "liu_cnn_compact"}, "rank-no-regularisation": {"model": "liu_cnn_compact", "augment": False, "dropout": 0.0}}
rs.RECIPES = recipes
sys.argv = ["x", "--recipes", ",".join(recipes), "--seeds", "0,1,2,3,4", "--epochs", "8", "--results", "/tmp/recipe-rank", "--keep-background"]
rs.main()
splits = read_split_dir(ROOT / "split")
for recipe in recipes:
    rows = []
    for seed in range(5):
        model, hp = load_classifier(ROOT / "runs" / f"{recipe}-zero_background-False-s{seed}-e8" / "checkpoints" / "best-loss.ckpt")
        aucs = []
        for name in ("train", "val", "test"):
            t = predict_cached(model, hp["classes"], ds.select_scans(cache, splits[name], name))
            aucs.append(f"{roc_auc_score(t['diagnosis'] == 'AD', t['prob_AD']):.2f}")
        rows.append("/".join(aucs))
    print(recipe, "eval-mode AUC train/val/test per seed:", ", ".join(rows))
