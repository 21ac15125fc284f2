"""Training: a LightningModule around ``create_model`` and ``fit(config)``.

Import submodules directly (``alzmri.training.fit``); this package stays import-light so the
CLI can read ``TrainConfig`` without loading torch.
"""
