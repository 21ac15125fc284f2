"""Data in: NIfTI volumes, BIDS folders, manifests, packaged templates and atlases."""
