"""The web editor: the browser app's sources (``src/``), built into ``dist/`` by
``npm run build`` (esbuild), served at ``/`` (:func:`web_routes`)."""

from __future__ import annotations

from .static import WEB_DIST, web_routes

__all__ = ["WEB_DIST", "web_routes"]
