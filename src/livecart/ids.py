"""Opaque ids: a short type prefix and 16 random base32 characters."""

import base64
import secrets


def new_id(prefix: str) -> str:
    return prefix + "_" + base64.b32encode(secrets.token_bytes(10)).decode().lower()
