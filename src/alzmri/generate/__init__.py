"""Disease-progression images: stage-to-stage generators (one per transition, chained) and their training.

Beside :mod:`alzmri.training` in the layering: it uses data and models, and evaluation scores it.
"""
