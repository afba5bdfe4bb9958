"""Who is calling, and which key goes upstream.

Two modes (README, "Authentication modes"):

* passthrough (default): the client's credentials go upstream unchanged; the
  principal is the policy principal whose ``key_sha256`` matches the key's
  SHA-256 fingerprint, else ``anonymous``.
* sidecar keys (``--upstream-api-key-env NAME``): the client authenticates to
  celgate with its own key, which must belong to a declared principal (else
  401); every client credential header is removed and celgate sends the
  upstream key from that environment variable.

One identity per request: the key is read from every header an upstream may
honour (``Authorization: Bearer``, Azure's ``api-key``, ``x-api-key``), and two
different credentials in one request are refused (400), so the principal
policy sees is the one the upstream bills. Keys never leave this module
except as the upstream's credential; nothing here logs.
"""

from __future__ import annotations

from multidict import CIMultiDict, MultiMapping

from celgate.policy import ANONYMOUS, PolicySet, Principal

from .errors import BadRequest, Unauthorized
from .settings import Secret

__all__ = ["CREDENTIAL_HEADERS", "Authenticator", "client_key"]

CREDENTIAL_HEADERS = ("Authorization", "api-key", "x-api-key")


def client_key(headers: MultiMapping[str]) -> str | None:
    """The one key the client presents, from any credential header; two different ones are a 400."""
    keys: set[str] = set()
    for name in CREDENTIAL_HEADERS:
        for value in headers.getall(name, ()):
            key = _key(name, value)
            if key:
                keys.add(key)
    if len(keys) > 1:
        raise BadRequest(
            "celgate: the request carries two different credentials (Authorization, api-key, x-api-key); send one",
            code="conflicting_credentials",
        )
    return next(iter(keys), None)


def _key(name: str, value: str | None) -> str | None:
    if not value:
        return None
    if name != "Authorization":
        return value.strip() or None
    parts = value.split(None, 1)  # any whitespace after the scheme: an upstream splitting so reads this key
    if parts and parts[0].lower() == "bearer":
        return parts[1].strip() if len(parts) == 2 else None
    return value.strip() or None


class Authenticator:
    def __init__(self, upstream_key: Secret | None) -> None:
        self._upstream_authorization = f"Bearer {upstream_key.value}" if upstream_key else None

    def principal(self, headers: MultiMapping[str], policy: PolicySet) -> Principal:
        """Resolve the caller; in sidecar-key mode an unknown key is refused."""
        principal = policy.resolve_principal(client_key(headers))
        if self._upstream_authorization is not None and principal is ANONYMOUS:
            raise Unauthorized(
                "celgate: missing or unknown API key (this gateway issues its own keys; see its policy principals)"
            )
        return principal

    def apply_upstream_key(self, headers: CIMultiDict[str]) -> None:
        """In sidecar-key mode, replace every client credential with the upstream key."""
        if self._upstream_authorization is not None:
            for name in CREDENTIAL_HEADERS:
                headers.popall(name, None)
            headers["Authorization"] = self._upstream_authorization
