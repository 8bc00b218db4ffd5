"""The results store: one SQLite database per study."""

from whichlora.store.db import Store

__all__ = ["Store"]
