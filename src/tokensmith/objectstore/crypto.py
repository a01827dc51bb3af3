"""AES-256-GCM key ring for secrets tokensmith must be able to read back (S3 secret keys).

SigV4 needs the secret key itself, so unlike token secrets it cannot be stored as a digest.
A ciphertext is ``v1.<key id>.<base64url(nonce || ciphertext+tag)>``; the key id (a short hash
of the key) picks the decrypting key, and the access key id is bound in as associated data so a
ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tokensmith.config import Settings

VERSION = "v1"
NONCE_BYTES = 12


class DecryptionError(Exception):
    """A ciphertext that no key in the ring opens (wrong keys, or tampering). Never carries key material."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"tokensmith-encryption-key:" + key).hexdigest()[:12]


class KeyRing:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        if any(len(k) != 32 for k in keys):
            raise ValueError("AES-256 keys are 32 bytes")
        self._keys = {key_id(k): AESGCM(k) for k in reversed(keys)}
        self.current_id = key_id(keys[0])

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """The ring configured for ``settings``, read now (the server builds one, in its composition root)."""
        return cls(settings.encryption_keys())

    def encrypt(self, plaintext: str, associated: str) -> str:
        """Ciphertext of ``plaintext`` under the current (first) key, bound to ``associated``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current_id].encrypt(nonce, plaintext.encode(), associated.encode())
        return f"{VERSION}.{self.current_id}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, ciphertext: str, associated: str) -> str:
        """The plaintext; DecryptionError when malformed, under an unknown key, or tampered with."""
        try:
            version, kid, body = ciphertext.split(".")
            raw = base64.urlsafe_b64decode(body)
        except (ValueError, binascii.Error):
            raise DecryptionError("malformed ciphertext") from None
        aead = self._keys.get(kid)
        if version != VERSION or aead is None:
            raise DecryptionError("ciphertext is under a key that is not in TOKENSMITH_ENCRYPTION_KEYS")
        try:
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated.encode()).decode()
        except InvalidTag:
            raise DecryptionError("ciphertext failed authentication") from None

    def is_current(self, ciphertext: str) -> bool:
        """True when ``ciphertext`` is already under the first key (nothing for reencrypt to do)."""
        return ciphertext.startswith(f"{VERSION}.{self.current_id}.")


class LazyKeyRing(KeyRing):
    """A ring whose keys are read on first use: an app that never touches S3 keys never reads the key file."""

    def __init__(self, settings: Settings) -> None:  # KeyRing.__init__ runs on first use (_load)
        self._settings = settings
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            KeyRing.__init__(self, self._settings.encryption_keys())
            self._loaded = True

    def encrypt(self, plaintext: str, associated: str) -> str:
        self._load()
        return super().encrypt(plaintext, associated)

    def decrypt(self, ciphertext: str, associated: str) -> str:
        self._load()
        return super().decrypt(ciphertext, associated)

    def is_current(self, ciphertext: str) -> bool:
        self._load()
        return super().is_current(ciphertext)
