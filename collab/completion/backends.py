"""Choosing a backend by name: ``local``, ``http``, ``transformers``, or ``module:factory``."""

from __future__ import annotations

import importlib
import os
from typing import Any

from .backend import CompletionBackend
from .prompts import Family

__all__ = ["BACKENDS", "create_backend"]

BACKENDS = ("local", "http", "transformers")


def create_backend(
    kind: str,
    *,
    model: str | None = None,
    endpoint: str | None = None,
    capacity: int | None = None,
    device: str | None = None,
    family: str | None = None,
    api_key: str | None = None,
) -> CompletionBackend:
    """A backend; ``module:factory`` calls ``factory()`` from an importable module."""
    chosen = Family(family) if family else None
    if kind == "local":
        from .local_backend import LocalBackend

        return LocalBackend(capacity=capacity or 4)
    if kind == "http":
        from .http_backend import HttpBackend

        if not endpoint:
            raise ValueError(
                "the http backend needs an endpoint, an OpenAI-compatible server's address "
                "(--endpoint for collab worker, --completion-endpoint for collab serve)"
            )
        return HttpBackend(
            endpoint, model=model, family=chosen, api_key=api_key, capacity=capacity or 16
        )
    if kind == "transformers":
        from .transformers_backend import TransformersBackend

        if not model:
            raise ValueError("the transformers backend needs a model directory (--model)")
        if _names_a_path(model) and not os.path.isdir(os.path.expanduser(model)):
            raise ValueError(f"the transformers backend's model directory {model} does not exist")
        return TransformersBackend(model, device=device, max_batch=capacity or 8, family=chosen)
    module, colon, attr = kind.partition(":")
    if not colon or not module or not attr:
        raise ValueError(
            f"unknown completion backend {kind!r}: {', '.join(BACKENDS)}, or module:factory"
        )
    try:
        factory: Any = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise ValueError(f"completion backend {kind!r}: cannot import {module}: {exc}") from None
    except AttributeError:
        raise ValueError(f"completion backend {kind!r}: {module} has no {attr}") from None
    try:
        backend = factory()
    except Exception as exc:
        raise ValueError(f"completion backend {kind!r}: {attr}() failed: {exc!r}") from None
    if not isinstance(backend, CompletionBackend):
        raise ValueError(f"{kind} did not make a CompletionBackend")
    return backend


def _names_a_path(model: str) -> bool:
    """Whether ``model`` is written as a path (else it may be a model hub's name)."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1
