"""Server settings, with the defaults the embedded engine runs on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["GROUP_WINDOW", "SYNC_WINDOW", "ServerConfig"]

GROUP_WINDOW = 0.004
"""The store's write window under load (s): while appends come at least one per window, an
append waits up to this long for others to share its write (fewer, larger writes and
broadcasts, for up to this much more latency)."""

SYNC_WINDOW = 0.025
"""The store's fsync window (s): one fsync makes the writes of about this long durable.
Broadcasts do not wait for it; acknowledgements and unloads do, so it is what an
acknowledgement may wait beyond the fsync itself. Each fsync cycle costs the server about
as much CPU as a few edits (the fsync, and waking the syncer and the event loop): with edits
a few milliseconds apart, a 4 ms window meant one cycle per edit."""


@dataclass(slots=True)
class ServerConfig:
    """What a :class:`~collab.server.app.CollabServer` needs; all sizes in bytes, times in s."""

    repos: Path
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8765
    secret: bytes | None = None  # None: dev mode (loopback only, ?user=NAME)
    grace: float = 5.0  # an idle room stays loaded this long after its last peer leaves
    heartbeat: float = 30.0  # WebSocket ping interval; a peer silent for half of it is dropped
    # an empty awareness message to each /yjs peer this often: stock y-websocket clients
    # close a connection that brought no message for 30 s (pings are no message to them)
    yjs_keepalive: float = 15.0
    max_message: int = 8 * 1024 * 1024
    max_file: int = 4 * 1024 * 1024  # larger files are not opened as live documents
    outbox_limit: int = 4096  # frames queued for one connection before it counts as a slow reader
    outbox_bytes: int = 16 * 1024 * 1024  # ... or bytes queued for it
    user_send_bytes: int = 64 * 1024 * 1024  # bytes queued for one user's connections together
    max_document: int = 8 * 1024 * 1024  # a document's text (UTF-8 bytes) may not grow past this
    # clients an update may write as that its document does not know yet (0: any)
    max_new_clients: int = 256
    # ranges an update's delete set may add, of text its document had not deleted (0: any)
    max_deleted_ranges: int = 4096
    user_update_rate: float = 500.0  # updates per second per user, all connections together
    user_update_burst: int = 2000  # ... in bursts of up to this many (0 rate: no limit)
    user_byte_rate: float = 4 * 1024 * 1024  # update bytes per second per user
    user_byte_burst: int = 32 * 1024 * 1024  # ... in bursts of up to this many
    max_user_sockets: int = 1024  # /ws and /yjs connections one user may hold open (0: any)
    max_api_body: int = 64 * 1024  # a POST /api/<op> body (operations take a few names)
    user_awareness_rate: float = 256 * 1024  # awareness bytes per second per user (0: no limit)
    user_awareness_burst: int = 4 * 1024 * 1024  # ... in bursts of up to this many
    # bytes per second per user of documents sent in answer to sync step 1 (0: no limit)
    user_answer_rate: float = 64 * 1024 * 1024
    user_answer_burst: int = 512 * 1024 * 1024  # ... in bursts of up to this many
    hello_timeout: float = 10.0
    header_timeout: float = 10.0  # a request's headers must arrive within this long
    body_timeout: float = 10.0  # a request body silent this long is cut off (408)
    min_body_rate: int = 4096  # bytes/s a request body must average after body_timeout
    max_push: int = 512 * 1024 * 1024  # largest git push body, after decompression
    max_object: int = 100 * 1024 * 1024  # largest object of a push, expanded (deltas too)
    # identity-line problems a pushed object may have (git's receive.fsck.<id>=ignore;
    # gitsync.objects.fsck.IDENT_PROBLEMS): old histories hold some (badTimezone, ...)
    fsck_accept: frozenset[str] = frozenset()
    max_open_docs: int = 256  # per /ws connection
    max_calls: int = 64  # operations running at once per /ws connection
    max_user_api_calls: int = 64  # POST /api/<op> calls of one user in flight at once (0: any)
    group_window: float = GROUP_WINDOW  # store write window under load (s); 0: none
    sync_window: float = SYNC_WINDOW  # least seconds between store fsyncs; 0: back to back
    compact_every: int = 1000  # updates at least between snapshots (see Room._compaction_due)
    store: str = "sqlite"  # "sqlite" or "memory"
    redis: str | None = None  # redis://HOST:PORT/DB: a node of the cluster sharing this Redis
    node_id: str | None = None  # this node's name in the cluster (default: host-pid-random)
    commit_idle: float = 1.0  # commit a branch's live edits after this long without typing
    commit_max_lag: float = 10.0  # ... and at the latest this long after the first edit
    ref_poll: float = 1.0  # how often refs of live branches are checked for outside moves
    web: bool = True  # serve the web editor at / (collab/web)
    # completions (collab.completion)
    completion_backend: str = "local"  # "local", "http", "transformers", "module:factory", "none"
    completion_model: str | None = None  # model directory (transformers) or name (http)
    completion_endpoint: str | None = None  # OpenAI-compatible server (http)
    completion_capacity: int | None = None  # jobs the embedded worker runs at once
    completion_timeout: float = 10.0  # a job not answered by then fails with TIMEOUT
    completion_queue: int = 256  # jobs waiting for a worker; more are refused
    completion_per_user: int = 4  # requests of one user in flight at once; more are refused
    completion_rate: float = 20.0  # requests per second per user (token bucket; 0: no limit)
    completion_burst: int = 40
    completion_max_tokens: int = 256
    completion_max_chars: int = 4096  # a completion's text is cut to this size
    completion_prompt_tokens: int = 2048  # prompt budget: prefix, suffix and other files
