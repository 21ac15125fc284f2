"""Genetics + MRI fusion (issue 16): networks whose image encoders are registry models.

* :mod:`alzmri.fusion.xattn` -- bidirectional token-level cross-attention, concatenation and
  genetics-only networks;
* :mod:`alzmri.fusion.registry` -- their registry entries (imported here, so importing
  ``alzmri.fusion`` registers ``fusion_xattn``, ``fusion_concat`` and ``genetics_only``).
"""

from alzmri.fusion import registry  # noqa: F401  (registers the fusion models)
