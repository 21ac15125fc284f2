"""Genetics + MRI fusion (issue 16): networks whose image encoders are registry models.

* :mod:`alzmri.fusion.xattn` -- bidirectional token-level cross-attention, concatenation and
  genetics-only networks.
"""
