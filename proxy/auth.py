"""Who is calling, and which key goes upstream.

Two modes (see docs/auth.md):

* passthrough (default): the client's ``Authorization`` goes upstream
  unchanged; the principal is the policy principal whose ``key_sha256``
  matches the bearer key's SHA-256 fingerprint, else ``anonymous``.
* sidecar keys (``--upstream-api-key-env NAME``): the client authenticates to
  celgate with its own key, which must belong to a declared principal (else
  401); celgate sends the upstream key from that environment variable.

Keys never leave this module except as the upstream ``Authorization`` value;
nothing here logs.
"""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict

from celgate.policy import ANONYMOUS, PolicySet, Principal

from .errors import Unauthorized
from .settings import Secret

__all__ = ["Authenticator", "bearer_key"]


def bearer_key(headers: Mapping[str, str]) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, if any."""
    value = headers.get("Authorization")
    if not value:
        return None
    scheme, _, key = value.partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


class Authenticator:
    def __init__(self, upstream_key: Secret | None) -> None:
        self._upstream_authorization = f"Bearer {upstream_key.value}" if upstream_key else None

    @property
    def sidecar_keys(self) -> bool:
        return self._upstream_authorization is not None

    def principal(self, headers: Mapping[str, str], policy: PolicySet) -> Principal:
        """Resolve the caller; in sidecar-key mode an unknown key is refused."""
        principal = policy.resolve_principal(bearer_key(headers))
        if self._upstream_authorization is not None and principal is ANONYMOUS:
            raise Unauthorized(
                "celgate: missing or unknown API key (this gateway issues its own keys; see its policy principals)"
            )
        return principal

    def apply_upstream_key(self, headers: CIMultiDict[str]) -> None:
        """In sidecar-key mode, replace the client's key with the upstream one."""
        if self._upstream_authorization is not None:
            headers["Authorization"] = self._upstream_authorization
