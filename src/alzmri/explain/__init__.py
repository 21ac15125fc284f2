"""Explainability that can be checked: attribution maps and their model-independent analysis.

An attribution map is a float array with the shape of the model input (one value per voxel,
e.g. 48³ or 128³). The analysis modules here take such arrays and never touch a model:

* :mod:`alzmri.explain.thresholds` -- binarise a map (percentile, Otsu, mean + kσ) and
  summarise the connected components that survive.
* :mod:`alzmri.explain.depth_profile` -- where the positive evidence lies along each axis.
* :mod:`alzmri.explain.brain` -- the brain mask a map is judged against (stored by the
  preprocessing, or estimated from the background), the share of the evidence outside it,
  and empty maps.
* :mod:`alzmri.explain.regions` -- attribution per Desikan-Killiany atlas region, enrichment
  over chance, named groups of the regions where Alzheimer's atrophy is planted, and
  per-class summaries with bootstrap intervals.
"""
