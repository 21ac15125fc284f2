"""The ``alzmri`` command line (Typer), generated from each command's pydantic config."""
