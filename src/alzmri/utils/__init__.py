"""Small helpers shared by every layer; imports no other alzmri module."""

from alzmri.utils.atomic import atomic_path, atomic_write_text
from alzmri.utils.errors import AlzmriError

__all__ = ["AlzmriError", "atomic_path", "atomic_write_text"]
