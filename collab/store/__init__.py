"""Durable document history: the ``Store`` seam, its SQLite and in-memory implementations."""
