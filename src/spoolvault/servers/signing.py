"""Signed requests from application servers to print providers.

Each application server process makes an Ed25519 key pair at start and keeps the private
key in memory only; its public key goes in the database (``app_instances``) and reaches
every provider in heartbeat answers. A release or cancel request carries a signature over
the provider's name, the method, the path, the time, a nonce and the SHA-256 of the body.
So a provider cannot use a request it received against another provider (its name is
signed), nobody can replay one (the nonce is remembered while the time is valid), and
no secret an application server uses is stored anywhere or ever sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

MAX_SKEW = 120.0  # seconds a signed request is valid, either side of the provider's clock
H_APP, H_TIME, H_NONCE, H_SIG = (
    "x-spoolvault-app",
    "x-spoolvault-time",
    "x-spoolvault-nonce",
    "x-spoolvault-signature",
)


def _message(provider: str, method: str, path: str, at: str, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join(("spoolvault-v1", provider, method.upper(), path, at, nonce, digest)).encode()


@dataclass(frozen=True)
class AppKey:
    """This application server's signing key (memory only); repr shows the id alone."""

    id: str
    private: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> AppKey:
        return cls(secrets.token_hex(8), Ed25519PrivateKey.generate())

    @property
    def public_hex(self) -> str:
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def sign(self, provider: str, method: str, path: str, body: bytes) -> dict[str, str]:
        """The headers that authenticate this request to ``provider``."""
        at, nonce = f"{time.time():.3f}", secrets.token_hex(16)
        sig = self.private.sign(_message(provider, method, path, at, nonce, body))
        return {H_APP: self.id, H_TIME: at, H_NONCE: nonce, H_SIG: base64.b64encode(sig).decode()}


@dataclass
class Verifier:
    """A provider's check of signed requests, with the nonces it has seen lately."""

    provider: str
    keys: dict[str, str] = field(default_factory=dict)  # app instance id -> public key hex
    _seen: dict[str, float] = field(default_factory=dict)

    def check(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> str | None:
        """None if the request is signed by a known application server, else why not."""
        app, at, nonce, sig = (headers.get(h, "") for h in (H_APP, H_TIME, H_NONCE, H_SIG))
        if not (app and at and nonce and sig):
            return "a signed request from an application server is required"
        public = self.keys.get(app)
        if public is None:
            return "unknown application server (not in the last heartbeat answer)"
        try:
            skew = abs(time.time() - float(at))
        except ValueError:
            return "bad request time"
        if skew > MAX_SKEW:
            return f"request time is {skew:.0f} s off (clocks out of step?)"
        now = time.monotonic()
        for old in [n for n, until in self._seen.items() if until < now]:
            del self._seen[old]
        if nonce in self._seen:
            return "request replayed"
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
            key.verify(
                base64.b64decode(sig), _message(self.provider, method, path, at, nonce, body)
            )
        except (InvalidSignature, ValueError, binascii.Error):
            return "bad signature"
        self._seen[nonce] = now + 2 * MAX_SKEW
        return None
