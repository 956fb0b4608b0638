"""Authenticated encryption of small secrets at rest (AES-256-GCM, keys by HKDF).

Two uses: the private signing keys, under a key derived from ROTOR_SECRET (a
dump of the database cannot mint tokens); and the successor refresh token kept
for the grace window, under a key derived from the parent token itself (which
the store never has).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12


class BoxOpenError(Exception):
    """The ciphertext was not made with this key and associated data."""


def derive_key(material: bytes, purpose: bytes) -> bytes:
    """A 256-bit key for one purpose from high-entropy material (RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"rotor/" + purpose).derive(
        material
    )


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def for_purpose(cls, material: bytes, purpose: bytes) -> SecretBox:
        return cls(derive_key(material, purpose))

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def open(self, box: bytes, associated: bytes) -> bytes:
        if len(box) <= NONCE_BYTES:
            raise BoxOpenError("ciphertext too short")
        try:
            return self._aead.decrypt(box[:NONCE_BYTES], box[NONCE_BYTES:], associated)
        except InvalidTag as exc:
            raise BoxOpenError("ciphertext does not authenticate") from exc
