"""The server: the composition root (``app.py``), its HTTP, WebSocket and git endpoints, auth."""
