"""API keys: a keys file of hashes, a FastAPI dependency that checks ``Authorization: Bearer KEY``.

Keys file: one ``sha256:<64 hex>`` per line; ``#`` starts a comment, blank lines are ignored.
`add_key` appends the hash of a new random key and returns the key, which is shown once and never
stored. Keys are 256-bit random tokens, so one unsalted SHA-256 is enough (a slow, salted hash such
as scrypt protects low-entropy passwords from guessing; it would add tens of milliseconds to every
request here and gain nothing). A presented key is hashed and compared with every stored hash in
constant time (`hmac.compare_digest`, no early exit).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from medmllm.errors import MedMLLMError

KEY_PREFIX = "mk-"
HASH_PREFIX = "sha256:"


def generate_key() -> str:
    """A new API key: ``mk-`` + 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """``sha256:<hex>`` of the key's UTF-8 bytes: the form stored in the keys file."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def add_key(path: str | Path, label: str = "") -> str:
    """Append a new key's hash to ``path`` (created with mode 0600) and return the key itself."""
    path = Path(path)
    if path.is_dir():
        raise MedMLLMError(f"{path} is a folder; give a file for the API keys")
    key = generate_key()
    line = hash_key(key) + (f"  # {label.strip()}" if label.strip() else "") + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(line)
    return key


def load_key_hashes(path: str | Path) -> list[bytes]:
    """The SHA-256 digests in a keys file; a malformed line or an empty file is a `MedMLLMError`."""
    path = Path(path)
    if not path.is_file():
        raise MedMLLMError(f"{path}: no such API keys file; create one with `medmllm serve keys add {path}`")
    digests = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        hex_part = line.removeprefix(HASH_PREFIX)
        if not line.startswith(HASH_PREFIX) or len(hex_part) != 64 or any(c not in "0123456789abcdef" for c in hex_part):
            raise MedMLLMError(f"{path}, line {number}: expected 'sha256:<64 hex digits>' (keys are stored hashed; add one with `medmllm serve keys add`)")
        digests.append(bytes.fromhex(hex_part))
    if not digests:
        raise MedMLLMError(f"{path} holds no key; add one with `medmllm serve keys add {path}`")
    return digests


class APIKeyAuth:
    """Checks a presented key against stored digests in constant time. ``digests=None``: no auth."""

    def __init__(self, digests: list[bytes] | None):
        self.digests = digests

    @property
    def enabled(self) -> bool:
        return self.digests is not None

    def verify(self, key: str) -> bool:
        if self.digests is None:
            return True
        presented = hashlib.sha256(key.encode("utf-8")).digest()
        match = False
        for digest in self.digests:  # no early exit: the time does not tell which key matched
            match |= hmac.compare_digest(presented, digest)
        return match

    def key_from_header(self, authorization: str | None) -> str | None:
        """The key in ``Bearer KEY``, or None."""
        if not authorization:
            return None
        scheme, _, key = authorization.partition(" ")
        return key.strip() if scheme.lower() == "bearer" and key.strip() else None
