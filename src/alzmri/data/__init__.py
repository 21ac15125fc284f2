"""Data: manifests to splits, leakage audits, cached datasets, synthetic cohorts."""
