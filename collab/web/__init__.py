"""The web editor: the browser app's sources (``src/``), built into ``dist/`` by
``npm run build`` (esbuild), served at ``/`` by :func:`install_web`."""

from __future__ import annotations

from .static import WEB_DIST, install_web

__all__ = ["WEB_DIST", "install_web"]
