"""Fill-in-the-middle prompts: one template per model family, chosen from the model's config."""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .excerpt import Starts

__all__ = [
    "ContextFile",
    "Family",
    "LineEnd",
    "PromptParts",
    "Rendered",
    "StopScan",
    "approx_tokens",
    "cut_single_line",
    "detect_family",
    "render",
    "stop_strings",
]

TokenCounter = Callable[[str], int]


class Family(StrEnum):
    """A prompt format: the special tokens a model family was trained with."""

    STARCODER = "starcoder"  # StarCoder / SantaCoder (gpt_bigcode)
    STARCODER2 = "starcoder2"
    QWEN_CODER = "qwen2.5-coder"
    DEEPSEEK_CODER = "deepseek-coder"
    CODELLAMA = "codellama"
    REPLIT = "replit"
    PLAIN = "plain"  # no infilling: context and prefix only (the local model, unknown models)


@dataclass(frozen=True, slots=True)
class ContextFile:
    """Another file of the same branch, given to the model as context."""

    path: str
    text: str


@dataclass(frozen=True, slots=True)
class PromptParts:
    """What the server reads from the live document, before any template is applied."""

    repo: str
    path: str
    prefix: str
    suffix: str
    context: tuple[ContextFile, ...] = field(default_factory=tuple)
    start: int = 0  # where ``prefix`` starts in the document (code points)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A prompt ready for a model: its text, and the strings that end a completion."""

    text: str
    stop: tuple[str, ...]
    prefix: str  # the (possibly trimmed) prefix and suffix that went into ``text``
    suffix: str
    context: tuple[ContextFile, ...]
    segments: tuple[tuple[str, bool], ...] = ()
    """``text`` in pieces, each with whether it is one of the template's special tokens:
    a tokenizer must parse those and nothing else (a document may contain their text)."""


# DeepSeek-Coder's tokens use FULLWIDTH VERTICAL LINE and LOWER ONE EIGHTH BLOCK characters
_DS_BEGIN = "<\uff5cfim\u2581begin\uff5c>"
_DS_HOLE = "<\uff5cfim\u2581hole\uff5c>"
_DS_END = "<\uff5cfim\u2581end\uff5c>"
_DS_EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"

_STOP: dict[Family, tuple[str, ...]] = {
    Family.STARCODER: (
        "<|endoftext|>",
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        "<file_sep>",
    ),
    Family.STARCODER2: (
        "<|endoftext|>",
        "<file_sep>",
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        "<repo_name>",
    ),
    Family.QWEN_CODER: (
        "<|endoftext|>",
        "<|file_sep|>",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|im_start|>",
        "<|im_end|>",
    ),
    Family.DEEPSEEK_CODER: (
        _DS_EOS,
        "<|EOT|>",
        _DS_BEGIN,
        _DS_HOLE,
        _DS_END,
    ),
    Family.CODELLAMA: ("<EOT>", "</s>", "<PRE>", "<SUF>", "<MID>"),
    Family.REPLIT: ("<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    Family.PLAIN: (),
}


def stop_strings(family: Family) -> tuple[str, ...]:
    return _STOP[family]


# -- choosing a family ---------------------------------------------------------------------------

_BY_MODEL_TYPE = {
    "starcoder2": Family.STARCODER2,
    "gpt_bigcode": Family.STARCODER,
    "qwen2": Family.QWEN_CODER,
    "mpt": Family.REPLIT,
    "replit_lm": Family.REPLIT,
}
_BY_NAME = (  # substrings of a lower-cased model name or path, most specific first
    ("starcoder2", Family.STARCODER2),
    ("starcoder", Family.STARCODER),
    ("santacoder", Family.STARCODER),
    ("qwen2.5-coder", Family.QWEN_CODER),
    ("qwen2-coder", Family.QWEN_CODER),
    ("qwen-coder", Family.QWEN_CODER),
    ("deepseek-coder", Family.DEEPSEEK_CODER),
    ("deepseek_coder", Family.DEEPSEEK_CODER),
    ("codellama", Family.CODELLAMA),
    ("code-llama", Family.CODELLAMA),
    ("code_llama", Family.CODELLAMA),
    ("replit", Family.REPLIT),
)
_BY_TOKEN = (  # a special token of the tokenizer's vocabulary
    ("<|fim_prefix|>", Family.QWEN_CODER),
    (_DS_BEGIN, Family.DEEPSEEK_CODER),
    ("\u2581<PRE>", Family.CODELLAMA),
    ("<PRE>", Family.CODELLAMA),
    ("<file_sep>", Family.STARCODER2),
    ("<fim_prefix>", Family.STARCODER),
)


def detect_family(
    model_type: str | None = None,
    name: str | None = None,
    vocabulary: Collection[str] = (),
) -> Family:
    """The prompt family of a model, from its config's ``model_type``, its name or path, and
    the special tokens of its tokenizer, in that order; ``PLAIN`` when none matches."""
    kind = (model_type or "").lower()
    lowered = (name or "").lower()
    if kind == "llama":  # CodeLlama and DeepSeek-Coder are both Llama architectures
        for needle, family in _BY_NAME:
            if needle in lowered and family in (Family.CODELLAMA, Family.DEEPSEEK_CODER):
                return family
    elif kind in _BY_MODEL_TYPE:
        return _BY_MODEL_TYPE[kind]
    for needle, family in _BY_NAME:
        if needle in lowered:
            return family
    for token, family in _BY_TOKEN:
        if token in vocabulary:
            if family is Family.STARCODER and ("replit" in kind or "replit" in lowered):
                return Family.REPLIT
            return family
    return Family.PLAIN


# -- token budget --------------------------------------------------------------------------------


def approx_tokens(text: str) -> int:
    """A quick estimate (code runs at about three to four characters per token)."""
    return (len(text) + 2) // 3


def _keep_end(
    text: str,
    budget: int,
    count: TokenCounter,
    offset: int = 0,
    starts: Starts | None = None,
    key: Hashable | None = None,
) -> str:
    """A tail of ``text`` (which starts at ``offset`` of the document) within ``budget``,
    starting where ``key``'s last one in this part of the file did while that fits, else
    at a line start on a grid of the document of about an eighth of the budget (see
    :mod:`.excerpt`): while ``text`` grows at its end, or the cursor moves within a part of
    the file, the cut stays where it was, so that a prompt cache keeps matching."""
    if budget <= 0 or not text:
        return ""
    at = (starts if starts is not None else Starts()).choose(
        key,
        text,
        len(text),
        lambda at: count(text[at:]) <= budget,
        grain=max(16, budget * 3 // 8),  # characters: about budget / 8 tokens
        least=budget * 3 // 8,  # characters: about an eighth of the budget
        offset=offset,
    )
    return text[at:]


def _keep_start(text: str, budget: int, count: TokenCounter) -> str:
    """The longest head of ``text`` (cut at a line end when possible) within ``budget``."""
    if budget <= 0 or not text:
        return ""
    size = count(text)
    while size > budget:
        cut = max(1, len(text) * budget // max(size, 1) - 8)
        line = text.rfind("\n", 0, cut)
        text = text[: line + 1] if line > cut - 200 and line >= 0 else text[:cut]
        size = count(text)
    return text


PREFIX_SHARE = 60  # percent of the budget the prefix may take
SUFFIX_SHARE = {False: 10, True: 2}  # percent for the suffix: block, single-line requests
"""A single-line completion needs the rest of its line and the next few, not a page of
them; and in the prefix-suffix-middle layout every suffix token is prefilled again after
each keystroke (2% of a 2,048-token budget is about 40 tokens)."""
CONTEXT_SHARE = 30  # percent for other files, whatever the prefix and suffix leave unused


def fit(
    parts: PromptParts,
    budget: int,
    count: TokenCounter = approx_tokens,
    *,
    single_line: bool = False,
    starts: Starts | None = None,
    key: Hashable | None = None,
) -> tuple[str, str, tuple[ContextFile, ...]]:
    """Trim ``parts`` to ``budget`` tokens: the prefix may take 60%, the suffix 10% (5% for
    a single line), and other files 30%, in their order (more relevant first).

    What comes first in a prompt stays put from one keystroke to the next, so that a cache
    of the last prompt keeps matching: the prefix is cut where the requester's (``key``'s)
    last one in this part of the file was, as ``starts`` remembers it, else at fixed points
    of the document (``_keep_end``); and the other files' share never depends on the size
    of the prefix or suffix (a short file leaves part of the budget unused rather than move
    what precedes it)."""
    prefix = _keep_end(parts.prefix, budget * PREFIX_SHARE // 100, count, parts.start, starts, key)
    suffix = _keep_start(parts.suffix, budget * SUFFIX_SHARE[single_line] // 100, count)
    left = budget * CONTEXT_SHARE // 100 - 16
    context: list[ContextFile] = []
    for item in parts.context:
        if left < 32:
            break
        header = count(item.path) + 4
        text = _keep_start(item.text, left - header, count)
        if not text:
            continue
        context.append(ContextFile(item.path, text))
        left -= header + count(text)
    return prefix, suffix, tuple(context)


# -- templates -----------------------------------------------------------------------------------

_HASH_COMMENT = {".py", ".sh", ".rb", ".pl", ".r", ".yaml", ".yml", ".toml", ".cfg", ".ini"}
_DASH_COMMENT = {".sql", ".lua", ".hs", ".elm"}


def _comment(path: str, text: str) -> str:
    """``text`` as a line comment in the language of ``path``."""
    ext = posixpath.splitext(path)[1].lower()
    if ext in _HASH_COMMENT or not ext:
        mark = "#"
    elif ext in _DASH_COMMENT:
        mark = "--"
    elif ext in {".md", ".html", ".xml", ".txt", ".rst"}:
        return f"<!-- {text} -->"
    else:
        mark = "//"
    return f"{mark} {text}"


def _commented_context(path: str, context: Sequence[ContextFile]) -> str:
    """Other files as a block a model without repository tokens reads as ordinary code."""
    out = [f"{_comment(path, 'Path: ' + item.path)}\n{item.text.rstrip()}\n\n" for item in context]
    if context:
        out.append(f"{_comment(path, 'Path: ' + path)}\n")
    return "".join(out)


class _Marker(str):
    """A template's special token (as opposed to text from the documents)."""

    __slots__ = ()


def _template(
    family: Family, repo: str, path: str, prefix: str, suffix: str, ctx: Sequence[ContextFile]
) -> list[str]:
    """The prompt's pieces in order: the family's special tokens as :class:`_Marker`s, and
    text (names and document text) as plain strings."""
    M = _Marker
    if family is Family.STARCODER2:
        files = [p for c in ctx for p in (M("<file_sep>"), f"{c.path}\n{c.text}")]
        return [
            M("<repo_name>"),
            repo,
            *files,
            M("<file_sep>"),
            M("<fim_prefix>"),
            f"{path}\n{prefix}",
            M("<fim_suffix>"),
            suffix,
            M("<fim_middle>"),
        ]
    if family is Family.QWEN_CODER:
        files = [p for c in ctx for p in (M("<|file_sep|>"), f"{c.path}\n{c.text}\n")]
        return [
            M("<|repo_name|>"),
            f"{repo}\n",
            *files,
            M("<|file_sep|>"),
            f"{path}\n",
            M("<|fim_prefix|>"),
            prefix,
            M("<|fim_suffix|>"),
            suffix,
            M("<|fim_middle|>"),
        ]
    head = _commented_context(path, ctx)
    if family is Family.DEEPSEEK_CODER:
        return [M(_DS_BEGIN), head + prefix, M(_DS_HOLE), suffix, M(_DS_END)]
    if family is Family.CODELLAMA:
        return [M("<PRE>"), f" {head}{prefix} ", M("<SUF>"), f"{suffix} ", M("<MID>")]
    if family in (Family.STARCODER, Family.REPLIT):
        return [M("<fim_prefix>"), head + prefix, M("<fim_suffix>"), suffix, M("<fim_middle>")]
    return [head + prefix]


def render(
    family: Family,
    parts: PromptParts,
    budget: int = 2048,
    count: TokenCounter = approx_tokens,
    *,
    single_line: bool = False,
    starts: Starts | None = None,
    key: Hashable | None = None,
) -> Rendered:
    """The prompt for ``family``, within ``budget`` tokens as ``count`` measures them.

    Every template puts what changes least first: other files of the branch, then the file's
    path and prefix, then the suffix (the prefix-suffix-middle order these families use), so
    that consecutive requests of one typist share all but the end of the prompt. ``starts``
    and ``key``: see :func:`fit`."""
    prefix, suffix, ctx = fit(
        parts, budget - 32, count, single_line=single_line, starts=starts, key=key
    )
    pieces = _template(family, parts.repo, parts.path, prefix, suffix, ctx)
    segments = tuple((str(piece), isinstance(piece, _Marker)) for piece in pieces if piece)
    text = "".join(piece for piece, _ in segments)
    return Rendered(text, stop_strings(family), prefix, suffix, ctx, segments)


# -- after generation ----------------------------------------------------------------------------


def cut_single_line(text: str) -> tuple[str, bool]:
    """Cut a single-line completion at the end of its first non-blank line.

    A completion may begin with a line break (the cursor ends a line such as ``def f():``);
    it ends at the first line break after some text. Returns the text and whether it ended.
    """
    seen = False
    for index, char in enumerate(text):
        if char == "\n":
            if seen:
                return text[:index], True
        elif not char.isspace():
            seen = True
    return text, False


class LineEnd:
    """:func:`cut_single_line` for a text that grows at its end, each character looked at
    once: :meth:`scan` gives where the completion's line ends, or ``None`` while it has not."""

    __slots__ = ("end", "scanned", "seen")

    def __init__(self) -> None:
        self.seen = False
        self.scanned = 0
        self.end: int | None = None

    def scan(self, text: str) -> int | None:
        if self.end is not None:
            return self.end
        seen = self.seen
        for index in range(self.scanned, len(text)):
            char = text[index]
            if char == "\n":
                if seen:
                    self.end = index
                    break
            elif not char.isspace():
                seen = True
        self.seen = seen
        self.scanned = len(text)
        return self.end


class StopScan:
    """:func:`cut_at_stop` for a text that grows at its end: :meth:`scan` gives where the
    first stop string starts, or ``None``, looking only at what is new (and the few
    characters before it that a stop string may start in)."""

    __slots__ = ("at", "longest", "scanned", "stop")

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = tuple(marker for marker in stop if marker)
        self.longest = max((len(marker) for marker in self.stop), default=0)
        self.scanned = 0
        self.at: int | None = None

    def scan(self, text: str) -> int | None:
        if self.at is None and self.stop and len(text) > self.scanned:
            start = max(0, self.scanned - self.longest + 1)
            for marker in self.stop:
                where = text.find(marker, start)
                if where >= 0 and (self.at is None or where < self.at):
                    self.at = where
            self.scanned = len(text)
        return self.at


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; return it and whether one was found."""
    best = len(text)
    for marker in stop:
        where = text.find(marker)
        if 0 <= where < best:
            best = where
    return text[:best], best < len(text)
