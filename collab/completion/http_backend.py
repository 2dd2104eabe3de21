"""A backend that asks an OpenAI-compatible ``/v1/completions`` server (vLLM, llama.cpp, TGI).

Such servers reuse the KV cache of a prompt's prefix when the next prompt starts the same
way (vLLM's automatic prefix caching; llama.cpp's slots). The prompts put what changes least
first, and with ``cache_hints`` each request also says what these servers can use:
``cache_prompt: true`` (llama.cpp keeps the slot's cache for the next request) and
``prompt_cache_key``, the typist's key, for routers that steer a typist to the server that
holds their cache. Servers that report cached prompt tokens (``usage.prompt_tokens_details.
cached_tokens``) have them counted as reused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import aiohttp

from .backend import Cancelled, Generated, Prompt, TextSink, valid_text
from .prompts import Family, LineEnd, approx_tokens, cut_single_line, detect_family

__all__ = ["MAX_ANSWER", "HttpBackend", "HttpBackendError"]

MAX_ANSWER = 4 * 1024 * 1024
"""The most bytes of a model server's answer read when not streaming (a completion is at
most a few thousand characters)."""

YIELD_EVERY = 32  # server-sent events read between two yields to the event loop
DISCOVER_EVERY = 10.0  # seconds between two questions of which model a server serves

log = logging.getLogger("collab.completion.http")


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
        cache_hints: bool = True,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        if self.endpoint.endswith("/v1"):
            self.endpoint = self.endpoint[: -len("/v1")]
        self.model = model
        self._family = family or detect_family(name=model)
        self.api_key = api_key
        self._capacity = capacity
        self.timeout = timeout
        self._asked_at = -DISCOVER_EVERY  # when /v1/models was last asked
        self._warned = False
        self.cache_hints = cache_hints
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
        """Ask ``/v1/models`` which model is served, to choose the prompt family. A server
        that does not answer yet (it is still loading its model) is asked again before
        requests, every ``DISCOVER_EVERY`` seconds, until it does."""
        assert self._session is not None
        self._asked_at = time.monotonic()
        url = f"{self.endpoint}/v1/models"
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                body: Any = await response.json(content_type=None)
            model = str(body["data"][0]["id"])
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError, TypeError):
            if not self._warned:
                log.warning(
                    "%s does not say which model it serves (yet): prompts are plain, "
                    "without a model's fill-in-the-middle markers, until it does "
                    "(or give the model's name)",
                    url,
                )
                self._warned = True
            return
        self.model = model
        if self._family is Family.PLAIN:
            self._family = detect_family(name=model)
        if self._warned:
            log.info("%s serves %s: its prompts are %s", url, model, self._family)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(self, prompt: Prompt, cancel: threading.Event) -> Generated:
        return await self._run(prompt, cancel, None)

    async def complete_streaming(
        self, prompt: Prompt, cancel: threading.Event, on_text: TextSink
    ) -> Generated:
        return await self._run(prompt, cancel, on_text)

    def body(self, prompt: Prompt, stream: bool) -> dict[str, Any]:
        """The JSON body of the request for ``prompt``."""
        body: dict[str, Any] = {
            "prompt": prompt.text,
            "max_tokens": prompt.max_tokens,
            "temperature": 0.0,
            "stream": stream,
        }
        if self.model:
            body["model"] = self.model
        stop = list(prompt.rendered.stop)[:4]  # OpenAI's API allows four stop strings
        if stop:
            body["stop"] = stop
        if self.cache_hints:
            body["cache_prompt"] = True
            if prompt.cache_key:
                body["prompt_cache_key"] = prompt.cache_key
        return body

    async def _run(
        self, prompt: Prompt, cancel: threading.Event, on_text: TextSink | None
    ) -> Generated:
        if self._session is None:
            raise HttpBackendError("backend not started")
        if cancel.is_set():
            raise Cancelled()
        if self.model is None and time.monotonic() - self._asked_at >= DISCOVER_EVERY:
            await self._discover_model()
        body = self.body(prompt, stream=on_text is not None)
        request = asyncio.ensure_future(
            self._post(body, prompt.single_line, prompt.max_tokens, on_text)
        )
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
            text = cut_single_line(generated.text)[0]
            generated = Generated(
                text, generated.tokens, generated.prompt_tokens, generated.reused_tokens
            )
        return generated

    async def _post(
        self, body: dict[str, Any], single_line: bool, max_tokens: int, on_text: TextSink | None
    ) -> Generated:
        assert self._session is not None
        url = f"{self.endpoint}/v1/completions"
        try:
            async with self._session.post(url, json=body) as response:
                if response.status != 200:
                    detail = (await _read(url, response))[:200].decode("utf-8", "replace")
                    raise HttpBackendError(f"{url} answered {response.status}: {detail}")
                if on_text is None:
                    answer = await _read(url, response)
                    try:
                        data: Any = json.loads(answer)
                    except ValueError:  # (invalid UTF-8 among them)
                        detail = answer[:200].decode("utf-8", "replace")
                        raise HttpBackendError(
                            f"{url}: unexpected answer, not JSON: {detail!r}"
                        ) from None
                    text = valid_text(str(_first(url, data).get("text") or ""))
                    return _generated(url, data, text)
                return await self._read_events(url, response, single_line, max_tokens, on_text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HttpBackendError(f"{url}: {exc!r}") from exc

    @staticmethod
    async def _read_events(
        url: str,
        response: aiohttp.ClientResponse,
        single_line: bool,
        max_tokens: int,
        on_text: TextSink,
    ) -> Generated:
        """Read server-sent events (``data: {...}`` lines, then ``data: [DONE]``), handing
        out the text so far as it grows. The request ends (closing the response stops the
        server's generation) at the end of a single line, once ``on_text`` needs no more
        (the completion is as long as it may be), or after ``max_tokens`` pieces of text
        (a server sends one per token; one that ignores ``max_tokens`` is stopped here).
        An answer with no event at all (an error page, a JSON answer) is an error, as it is
        when not streaming. The work per piece is about its size, and the loop yields to
        others every ``YIELD_EVERY`` events, however fast they come."""
        text, last, pieces, events = "", None, 0, 0
        half = ""  # a first half of a character sent in two events
        line_end = LineEnd()
        other = ""  # the first line that is no event
        seen = False
        async for raw in response.content:
            events += 1
            if events % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # lines already buffered are read without waiting
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                other = other or line
                continue
            seen = True
            payload = line[len("data:") :].strip()
            if payload == "[DONE]":
                break
            try:
                data = json.loads(payload)
            except ValueError as exc:
                raise HttpBackendError(f"{url}: unexpected event {payload[:200]}") from exc
            last = data
            piece = half + str(_first(url, data).get("text") or "")
            half = ""
            if piece and "\ud800" <= piece[-1] <= "\udbff":  # a character cut in two
                half, piece = piece[-1], piece[:-1]  # (its second half comes next)
            piece = valid_text(piece)
            if piece:
                text += piece
                pieces += 1
                if on_text(text):
                    break
                if single_line and line_end.scan(text) is not None:
                    break
                if pieces >= max_tokens:
                    break
        if not seen:
            raise HttpBackendError(f"{url}: unexpected answer, not events: {other[:200]!r}")
        return _generated(url, last or {}, text + valid_text(half))


async def _read(url: str, response: aiohttp.ClientResponse) -> bytes:
    """The answer's body, refused past :data:`MAX_ANSWER` bytes before more is read."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_ANSWER:
            raise HttpBackendError(f"{url}: an answer over {MAX_ANSWER} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _first(url: str, data: Any) -> dict[str, Any]:
    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise HttpBackendError(f"{url}: unexpected answer {str(data)[:200]}") from exc
    if not isinstance(choice, dict):
        raise HttpBackendError(f"{url}: unexpected answer {str(data)[:200]}")
    return choice


def _generated(url: str, data: Any, text: str) -> Generated:
    """``text`` with the token counts that the answer's ``usage`` reports, if any."""
    usage = data.get("usage") if isinstance(data, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    try:
        tokens = int(usage.get("completion_tokens") or 0)
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        cached = int(details.get("cached_tokens") or 0)
    except (TypeError, ValueError, OverflowError) as exc:  # (Infinity among them)
        raise HttpBackendError(f"{url}: unexpected usage {str(usage)[:200]}") from exc
    return Generated(text, tokens or approx_tokens(text), prompt_tokens, cached)


async def _wait_flag(flag: threading.Event, interval: float = 0.01) -> None:
    while not flag.is_set():
        await asyncio.sleep(interval)
