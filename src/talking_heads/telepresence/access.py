"""Who may connect, and where: the receiver's token, TLS contexts and addresses, each checked with a readable
error (`TransportError`). No network code (`transport.py` has it), so the command line can check these
before anything slow is loaded.

Tokens: `generate_token` (32 random bytes, URL-safe base64), `write_token_file` (mode 0600, created
exclusively), `read_token_file` (refuses files that others can read, like ssh does with keys),
`token_matches` (constant time).
"""

from __future__ import annotations

import hmac
import os
import secrets
import ssl
import stat
from pathlib import Path

from ..errors import InputError
from ..paths import input_file

TOKEN_FILE_MAX_BYTES = 4096  # a token file is one line (write_token_file writes 43 characters)


class TransportError(InputError):
    """A problem with the user's transport settings (token file, certificate, address); one readable line."""


# --- tokens ------------------------------------------------------------------------------------------

def generate_token() -> str:
    return secrets.token_urlsafe(32)


def write_token_file(path: str | os.PathLike, *, force: bool = False) -> Path:
    """A new token in a file only its owner can read (0600), created atomically; refuses to overwrite
    unless `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise TransportError(f"{path} exists: not overwriting a token file (use --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(generate_token() + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_token_file(path: str | os.PathLike) -> str:
    path = Path(path)
    if not path.exists():
        raise TransportError(f"{path}: no such token file (make one with `talking-heads token {path}`)")
    input_file(path, "token file", max_bytes=TOKEN_FILE_MAX_BYTES)  # a FIFO would block, a huge file fill memory
    try:
        info = path.stat()
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise TransportError(f"{path}: cannot read the token file ({err})") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TransportError(f"{path}: permissions {stat.S_IMODE(info.st_mode):04o} let others read the token; "
                             f"run `chmod 600 {path}`")
    if len(text) < 16 or any(c.isspace() for c in text):
        raise TransportError(f"{path}: not a token file (expected one line of at least 16 characters)")
    return text


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison (the time taken does not depend on where the strings differ)."""
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


# --- TLS and addresses ---------------------------------------------------------------------------------

def server_ssl(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not cert or not key:
        raise TransportError("TLS needs both --tls-cert and --tls-key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise TransportError(f"cannot load the TLS certificate/key ({cert}, {key}): {err}") from None
    return ctx


def client_ssl(ca: str | None) -> ssl.SSLContext:
    """Verify the receiver's certificate: against `ca` (e.g. a self-signed certificate) or the system's CAs."""
    try:
        return ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    except (OSError, ssl.SSLError) as err:
        raise TransportError(f"cannot load the certificate to trust ({ca}): {err}") from None


def parse_address(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """"HOST:PORT", ":PORT" or "PORT" -> (host, port); IPv6 as [::1]:PORT."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError:
        raise TransportError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:8765") from None
    if not 0 <= number <= 65535:
        raise TransportError(f"{text!r}: port {number} outside 0..65535")
    return host, number

