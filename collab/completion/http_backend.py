"""A backend that asks an OpenAI-compatible ``/v1/completions`` server (vLLM, llama.cpp, TGI)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp

from .backend import Cancelled, Generated, Prompt
from .prompts import Family, approx_tokens, cut_single_line, detect_family

__all__ = ["HttpBackend", "HttpBackendError"]


class HttpBackendError(Exception):
    """The completion server failed or answered something unusable."""


class HttpBackend:
    """Sends each prompt to ``{endpoint}/v1/completions``; the server batches concurrent
    requests itself. A cancelled job closes its request, which such servers notice and abort.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        model: str | None = None,
        family: Family | None = None,
        api_key: str | None = None,
        capacity: int = 16,
        timeout: float = 30.0,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        if self.endpoint.endswith("/v1"):
            self.endpoint = self.endpoint[: -len("/v1")]
        self.model = model
        self._family = family or detect_family(name=model)
        self.api_key = api_key
        self._capacity = capacity
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def name(self) -> str:
        return self.model or "http"

    @property
    def family(self) -> Family:
        return self._family

    @property
    def capacity(self) -> int:
        return self._capacity

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
        )
        if self.model is None:
            await self._discover_model()

    async def _discover_model(self) -> None:
        """Ask ``/v1/models`` which model is served, to choose the prompt family."""
        assert self._session is not None
        try:
            async with self._session.get(f"{self.endpoint}/v1/models") as response:
                body: Any = await response.json(content_type=None)
            self.model = str(body["data"][0]["id"])
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError, TypeError):
            return
        if self._family is Family.PLAIN:
            self._family = detect_family(name=self.model)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(self, prompt: Prompt, cancel: threading.Event) -> Generated:
        if self._session is None:
            raise HttpBackendError("backend not started")
        if cancel.is_set():
            raise Cancelled()
        stop = list(prompt.rendered.stop)[:4]  # OpenAI's API allows four stop strings
        body: dict[str, Any] = {
            "prompt": prompt.text,
            "max_tokens": prompt.max_tokens,
            "temperature": 0.0,
            "stream": False,
        }
        if self.model:
            body["model"] = self.model
        if stop:
            body["stop"] = stop
        request = asyncio.ensure_future(self._post(body))
        watcher = asyncio.ensure_future(_wait_flag(cancel))
        try:
            await asyncio.wait({request, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not request.done():
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
            raise Cancelled()
        generated = request.result()
        if prompt.single_line:  # servers stop at stop strings; the line end is ours to find
            generated = Generated(cut_single_line(generated.text)[0], generated.tokens)
        return generated

    async def _post(self, body: dict[str, Any]) -> Generated:
        assert self._session is not None
        url = f"{self.endpoint}/v1/completions"
        try:
            async with self._session.post(url, json=body) as response:
                if response.status != 200:
                    detail = (await response.text())[:200]
                    raise HttpBackendError(f"{url} answered {response.status}: {detail}")
                data: Any = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HttpBackendError(f"{url}: {exc!r}") from exc
        try:
            text = str(data["choices"][0]["text"])
            tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise HttpBackendError(f"{url}: unexpected answer {str(data)[:200]}") from exc
        return Generated(text, tokens or approx_tokens(text))


async def _wait_flag(flag: threading.Event, interval: float = 0.01) -> None:
    while not flag.is_set():
        await asyncio.sleep(interval)
