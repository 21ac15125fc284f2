"""Evaluation: predictions tables from checkpoints, and metrics computed from those tables only."""
