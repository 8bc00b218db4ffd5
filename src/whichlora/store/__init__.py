"""The results store: one SQLite database per study, and the names every layer shares."""

from whichlora.store.db import Store
from whichlora.store.names import BASE, DATABASE, LOCK, RESOLVED, selected

__all__ = ["BASE", "DATABASE", "LOCK", "RESOLVED", "Store", "selected"]
