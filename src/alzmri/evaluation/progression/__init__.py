"""Judging progression generators against each subject's true future (``alzmri evaluate-progression``) and using them (``alzmri progress``)."""
