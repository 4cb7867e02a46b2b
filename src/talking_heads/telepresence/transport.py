"""Transport: landmark packets over a WebSocket (TCP, TLS when given a certificate), with the browser page on
the same port. Independent of the codec: it moves opaque byte strings (a WebRTC data channel could carry the
same packets later).

Endpoints of the receiver (`PacketServer`; the websockets library does the HTTP and WebSocket protocol):
- `GET /send` + `Authorization: Bearer TOKEN`: the sender's WebSocket. The token is compared in constant time
  (`hmac.compare_digest`) during the HTTP handshake, so a wrong or missing token gets HTTP 401 and never a
  WebSocket; the handler (and with it the decoder and the renderer) only ever sees authenticated senders.
  One sender at a time by default (`max_senders`; others get 409).
- `GET /?key=VIEW_KEY`: the page; `GET /view?key=VIEW_KEY`: its WebSocket (JPEG frames as binary messages,
  statistics as JSON text). The view key is random per run and printed by the receiver: the sender's token
  never goes into a URL, and nobody without the key can watch.
Limits (`TelepresenceConfig`): a connection must finish its (TLS and) HTTP handshake within `open_timeout`
(2 s: slow or silent clients are closed); messages over `max_packet` bytes close the connection (1009); a token
bucket allows `max_packet_rate` packets/s with bursts of `rate_burst`, and `rate_violations` packets over it
close the connection (1008); `bad_packets` undecodable packets close it too; a sender silent for
`idle_timeout` is closed; at most `max_connections` connections are open past the handshake. Every buffer is
bounded: websockets' own queue (`max_queue` messages of at most `max_packet` bytes), one pending frame per
viewer. Compression is off (no decompression bombs, nothing to gain on 20-byte messages).

Tokens, TLS contexts and addresses: `access.py` (re-exported here).
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import secrets
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, PayloadTooBig
from websockets.http11 import Response

from .access import (TransportError, client_ssl, generate_token, parse_address, read_token_file, server_ssl,
                     token_matches, write_token_file)
from .settings import TelepresenceConfig

__all__ = ["CLOSE_POLICY", "SEND_PATH", "VIEW_PATH", "VOICE_PATH", "ConnectionCounts", "PacketServer", "PacketSink", "TokenBucket",
           "TransportError", "client_ssl", "connect_sender", "generate_token", "parse_address", "read_token_file",
           "server_ssl", "token_matches", "write_token_file", "ws_header_bytes"]

log = logging.getLogger(__name__)

SEND_PATH = "/send"
VOICE_PATH = "/voice"
VIEW_PATH = "/view"
AUDIO_QUEUE = 50  # voice chunks waiting for one viewer (1 s): a slower page skips the oldest
CLOSE_POLICY = 1008  # WebSocket close code: policy violation (rate limit, bad packets, idle)


# --- server --------------------------------------------------------------------------------------------

class TokenBucket:
    """`allow()` is False when more than `rate` events/s on average (bursts of `burst`) arrive."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self.tokens, self.last = float(burst), clock()

    def allow(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class ConnectionCounts:
    """What the server refused, by reason (shown on the page and in the receiver's summary)."""

    senders: int = 0  # sender connections accepted (authenticated)
    bad_token: int = 0  # HTTP 401
    busy: int = 0  # HTTP 409 (a sender is already streaming) / 503 (too many connections or viewers)
    bad_view_key: int = 0  # HTTP 403
    not_found: int = 0  # HTTP 404
    too_large: int = 0  # messages over max_packet (connection closed, 1009)
    rate_limited: int = 0  # packets dropped by the token bucket
    closed_policy: int = 0  # connections closed for rate, bad packets or idleness (1008)
    extra: dict = field(default_factory=dict)


class PacketSink:
    """What the server hands authenticated packets to (the receiver)."""

    def open_stream(self, peer: str) -> None:  # a sender connected
        pass

    def packet(self, data: bytes) -> bool:  # True: decoded; False: undecodable (counted towards bad_packets)
        return True

    def close_stream(self, reason: str) -> None:  # the sender's connection ended
        pass

    def open_voice(self, peer: str) -> None:  # a sender's voice connection opened
        pass

    def voice(self, data: bytes) -> bool:  # a voice packet; False: undecodable (counted towards bad_packets)
        return False


class PacketServer:
    """The receiver's network side (module docstring). Start with `await start(host, port)`; `publish_frame`
    and `publish_stats` may be called from any thread."""

    def __init__(self, sink: PacketSink, token: str, settings: TelepresenceConfig, *, page: Callable[[str], str],
                 ssl_context: ssl.SSLContext | None = None):
        self.sink, self.token, self.settings, self.page, self.ssl = sink, token, settings, page, ssl_context
        self.view_key = secrets.token_urlsafe(16)
        self.counts = ConnectionCounts()
        self.open_connections = 0
        self.senders = 0
        self.voices = 0
        self.viewers: set = set()
        self._audio: dict = {}  # viewer -> deque of voice chunks not sent yet
        self._latest_frame: bytes | None = None
        self._latest_stats: str | None = None
        self._wake: dict = {}  # viewer -> asyncio.Event
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server = None

    # --- lifecycle ---
    async def start(self, host: str, port: int) -> int:
        self.loop = asyncio.get_running_loop()
        s = self.settings
        self.server = await serve(self._handler, host, port, process_request=self._process_request,
                                  ssl=self.ssl, compression=None, open_timeout=s.open_timeout,
                                  max_size=s.max_packet, max_queue=16, ping_interval=5, ping_timeout=5,
                                  close_timeout=2, server_header=None)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    # --- HTTP routing and authentication (before any WebSocket exists) ---
    def _process_request(self, connection, request):
        url = urlsplit(request.path)
        s = self.settings
        if url.path in (SEND_PATH, VOICE_PATH):
            auth = request.headers.get_all("Authorization")  # two headers: refused like a wrong one, not a 500
            given = auth[0][7:].strip() if len(auth) == 1 and auth[0].startswith("Bearer ") else None
            if not token_matches(given, self.token):
                self.counts.bad_token += 1
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "bad or missing token\n")
            if (self.senders if url.path == SEND_PATH else self.voices) >= s.max_senders:
                self.counts.busy += 1
                return connection.respond(http.HTTPStatus.CONFLICT, "another sender is streaming\n")
        elif url.path in ("/", VIEW_PATH):
            key = parse_qs(url.query).get("key", [None])[0]
            if not token_matches(key, self.view_key):
                self.counts.bad_view_key += 1
                return connection.respond(http.HTTPStatus.FORBIDDEN, "this page needs the receiver's view key\n")
            if url.path == "/":
                return _html(connection, self.page(self.view_key))
            if len(self.viewers) >= s.max_viewers:
                self.counts.busy += 1
                return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many viewers\n")
        else:
            self.counts.not_found += 1
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        if self.open_connections >= s.max_connections:
            self.counts.busy += 1
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        connection.role = {SEND_PATH: "sender", VOICE_PATH: "voice"}.get(url.path, "viewer")
        return None  # counted in _handler: a handshake that fails after this point reserves nothing

    async def _handler(self, connection) -> None:
        s = self.settings
        role = getattr(connection, "role", None)
        if role == "sender" and self.senders >= s.max_senders:  # two handshakes raced past _process_request
            self.counts.busy += 1
            await connection.close(1013, "another sender is streaming")
            return
        self.open_connections += 1
        try:
            if role == "sender":
                self.senders += 1
                try:
                    await self._sender(connection)
                finally:
                    self.senders -= 1
            elif role == "voice":
                self.voices += 1
                try:
                    self.sink.open_voice(_peer(connection))
                    await self._receive(connection, self.sink.voice, s.max_voice_rate)
                finally:
                    self.voices -= 1
            elif role == "viewer":
                await self._viewer(connection)
        finally:
            self.open_connections -= 1

    # --- the sender ---
    async def _sender(self, connection) -> None:
        self.counts.senders += 1
        self.sink.open_stream(_peer(connection))
        reason = "closed by the sender"
        try:
            reason = await self._receive(connection, self.sink.packet, self.settings.max_packet_rate)
        finally:
            self.sink.close_stream(reason)

    async def _receive(self, connection, handle: Callable[[bytes], bool], rate: float) -> str:
        """Hand an authenticated connection's packets to `handle` (False: undecodable) under the limits (rate,
        bad packets, idleness, size) until it ends; returns why it ended."""
        s = self.settings
        bucket = TokenBucket(rate, s.rate_burst)
        over, bad = 0, 0
        reason = "closed by the sender"
        try:
            while True:
                try:
                    data = await asyncio.wait_for(connection.recv(), s.idle_timeout)
                except asyncio.TimeoutError:
                    self.counts.closed_policy += 1
                    await connection.close(CLOSE_POLICY, "idle")
                    return f"idle for {s.idle_timeout:g} s"
                if isinstance(data, str):
                    data = data.encode()[: s.max_packet]  # text is not the protocol: counted as a bad packet
                    ok = False
                elif not bucket.allow():
                    self.counts.rate_limited += 1
                    over += 1
                    if over >= s.rate_violations:
                        self.counts.closed_policy += 1
                        await connection.close(CLOSE_POLICY, "rate limit")
                        return "over the packet rate limit"
                    continue
                else:
                    ok = handle(data)
                if not ok:
                    bad += 1
                    if bad >= s.bad_packets:
                        self.counts.closed_policy += 1
                        await connection.close(CLOSE_POLICY, "bad packets")
                        return f"{bad} undecodable packets"
        except PayloadTooBig:
            self.counts.too_large += 1
            return f"message over {s.max_packet} bytes"
        except ConnectionClosed as err:
            if err.sent is not None and err.sent.code == 1009:
                self.counts.too_large += 1
                return f"message over {s.max_packet} bytes"
            if err.rcvd is None or err.rcvd.code not in (1000, 1001):
                return f"connection lost ({err})"
        return reason

    # --- viewers ---
    async def _viewer(self, connection) -> None:
        wake = asyncio.Event()
        self.viewers.add(connection)
        self._wake[connection] = wake
        audio = self._audio[connection] = deque(maxlen=AUDIO_QUEUE)
        sent_frame = sent_stats = None
        closed = asyncio.ensure_future(connection.wait_closed())
        try:
            wake.set()
            while True:
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed.done():  # the page went away, or the server is closing
                    waiter.cancel()
                    break
                wake.clear()
                frame, stats = self._latest_frame, self._latest_stats
                if stats is not None and stats is not sent_stats:
                    await connection.send(stats)
                    sent_stats = stats
                if frame is not None and frame is not sent_frame:
                    await connection.send(frame)  # a slow viewer skips the frames published meanwhile
                    sent_frame = frame
                while audio:  # the voice is not skipped (only the oldest second when the page falls behind)
                    await connection.send(audio.popleft())
        except ConnectionClosed:
            pass
        finally:
            closed.cancel()
            self.viewers.discard(connection)
            self._wake.pop(connection, None)
            self._audio.pop(connection, None)

    def _wake_all(self) -> None:
        for event in self._wake.values():
            event.set()

    def publish_frame(self, jpeg: bytes) -> None:
        """The newest picture for the page (thread-safe; the older one is dropped if not sent yet)."""
        self._latest_frame = jpeg
        if self.loop is not None and self._wake:
            self.loop.call_soon_threadsafe(self._wake_all)

    def publish_audio(self, chunk: bytes) -> None:
        """A voice chunk for every page (thread-safe; each page keeps the last AUDIO_QUEUE)."""
        if self.loop is not None and self._audio:
            self.loop.call_soon_threadsafe(self._queue_audio, chunk)

    def _queue_audio(self, chunk: bytes) -> None:
        for queue in self._audio.values():
            queue.append(chunk)
        self._wake_all()

    def publish_stats(self, stats: dict) -> None:
        self._latest_stats = json.dumps(stats)
        if self.loop is not None and self._wake:
            self.loop.call_soon_threadsafe(self._wake_all)


def _peer(connection) -> str:
    return f"{connection.remote_address[0]}:{connection.remote_address[1]}"


def ws_header_bytes(length: int, *, masked: bool) -> int:
    """Bytes of the WebSocket frame header (RFC 6455) around a message of `length` bytes sent in one frame
    (`masked`: client to server)."""
    return 2 + (2 if 126 <= length < 65536 else 8 if length >= 65536 else 0) + (4 if masked else 0)


def _html(connection, body: str, *, media: bool = False):
    """A page, with a Content-Security-Policy that allows only its own inline code and this server (media:
    also the camera and microphone's streams and the audio worklet it makes from a blob)."""
    data = body.encode()
    csp = ("default-src 'self'; img-src 'self' blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
           + (" blob:; media-src 'self' blob: mediastream:; worker-src blob:" if media else "")
           + "; connect-src 'self' ws: wss:")
    headers = Headers([("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data))),
                       ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                       ("Content-Security-Policy", csp), ("Connection", "close")])
    return Response(200, "OK", headers, data)


# --- client --------------------------------------------------------------------------------------------

async def connect_sender(host: str, port: int, token: str, *, ssl_context: ssl.SSLContext | None = None,
                         open_timeout: float = 5.0, path: str = SEND_PATH):
    """The sender's WebSocket to a receiver, for the landmarks (`SEND_PATH`) or the voice (`VOICE_PATH`); raises
    TransportError with the receiver's reason when refused."""
    scheme = "wss" if ssl_context is not None else "ws"
    uri = f"{scheme}://{_host_in_uri(host)}:{port}{path}"
    try:
        return await connect(uri, additional_headers={"Authorization": f"Bearer {token}"}, ssl=ssl_context,
                             compression=None, open_timeout=open_timeout, max_size=2 ** 16, proxy=None,
                             ping_interval=5, ping_timeout=5, close_timeout=2)
    except InvalidStatus as err:
        code = err.response.status_code
        why = {401: "the receiver refused the token", 409: "another sender is already streaming to it",
               404: "the receiver takes no voice (an earlier release)"}
        raise TransportError(f"{uri}: {why.get(code, f'HTTP {code}')}") from None
    except (OSError, InvalidHandshake, asyncio.TimeoutError, ssl.SSLError) as err:
        raise TransportError(f"{uri}: cannot connect ({err or type(err).__name__})") from None


def _host_in_uri(host: str) -> str:
    return f"[{host}]" if ":" in host else host
