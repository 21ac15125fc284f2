"""Probe, not product code: does voxel-wise standardisation over the training scans make the CNN fit?

Usage: ``.venv/bin/python benchmarks/probe_voxel_standardisation.py`` after ``benchmarks/recipe_study.py``
has built its cohort in ``/tmp/alzmri-recipe-study``. Patches ``CachedVolumeDataset`` so every input
becomes ``(x - mean) / (sd + 0.1)`` with the voxel-wise mean and sd of the training scans (what the
linear baseline's StandardScaler does), then runs two recipes of the study on seeds 0-4 with
``liu_cnn_compact``. ``--keep-background`` (the README's first run) uses the cache made as before
``zero_background``, where the background is ``-mean/sd`` of each brain; without it, the default cache.
"""
import sys
import numpy as np, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import recipe_study as rs
from alzmri.data import dataset as ds
from alzmri.preprocessing.cache import read_cache, load_array
from alzmri.data.splits import read_split_dir

KEEP = "--keep-background" in sys.argv
cache, _ = read_cache("/tmp/alzmri-recipe-study/" + ("cache-zero_background-False" if KEEP else "cache"))
train = ds.select_scans(cache, read_split_dir("/tmp/alzmri-recipe-study/split")["train"], "train")
stack = np.stack([np.asarray(load_array(p), dtype=np.float32) for p in train["array"]])
mean, sd = stack.mean(0), stack.std(0) + 0.1
orig = ds.CachedVolumeDataset.__getitem__

def patched(self, i):
    item = orig(self, i)
    x = (item[0] - torch.from_numpy(mean)[None]) / torch.from_numpy(sd)[None]
    return (x, *item[1:])

ds.CachedVolumeDataset.__getitem__ = patched
rs.RECIPES = {f"voxelstd-{k}": {"model": "liu_cnn_compact"} | v for k, v in {"default": {}, "no-regularisation": {"augment": False, "dropout": 0.0}}.items()}
sys.argv = ["x", "--recipes", ",".join(rs.RECIPES), "--seeds", "0,1,2,3,4", "--epochs", "8", "--results", "/tmp/recipe-voxelstd"] + (["--keep-background"] if KEEP else [])
rs.main()
