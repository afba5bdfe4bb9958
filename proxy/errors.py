"""Every error celgate returns, in the OpenAI error shape, from one place.

    CelgateError                 status  type
    ├── BadRequest               400     invalid_request_error
    ├── Unauthorized             401     authentication_error
    ├── PolicyDenied             403     policy_denied
    ├── NotFound                 404     invalid_request_error
    ├── RequestTimeout           408     invalid_request_error
    ├── PayloadTooLarge          413     invalid_request_error
    ├── TooManyRequests          429     rate_limit_error (Retry-After)
    ├── ShuttingDown             503     server_error (a stream cut by a drain)
    ├── UnsupportedMediaType     415     invalid_request_error
    ├── AgentFailed              (any)   agent_error (a drop-in run failed)
    └── UpstreamError            502     upstream_error
        ├── UpstreamUnavailable  502     (refused, reset, DNS, garbage)
        ├── UpstreamTooLarge     502     (an event or a whole body past its cap)
        └── UpstreamTimeout      504     (connect, first byte, idle)

Before a response is prepared, an error becomes a JSON body with its status
(``error_response``); after, it goes in-band as an SSE ``error`` event and the
stream ends without ``[DONE]`` (``sse_error_event``), so a client can tell a
cut stream from a finished one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .sse import named_event

__all__ = [
    "AgentFailed",
    "BadRequest",
    "CelgateError",
    "NotFound",
    "PayloadTooLarge",
    "PolicyDenied",
    "RequestTimeout",
    "ShuttingDown",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "error_body",
    "error_response",
    "sse_error_event",
]


class CelgateError(Exception):
    """Base of every error celgate turns into an OpenAI-style error response."""

    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"
    headers: dict[str, str] | None = None  # sent with the error response (Retry-After)

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class BadRequest(CelgateError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class Unauthorized(CelgateError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class PolicyDenied(CelgateError):
    status, type, code = 403, "policy_denied", "policy_denied"


class NotFound(CelgateError):
    status, type, code = 404, "invalid_request_error", "not_found"


class RequestTimeout(CelgateError):
    status, type, code = 408, "invalid_request_error", "request_timeout"


class PayloadTooLarge(CelgateError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class UnsupportedMediaType(CelgateError):
    status, type, code = 415, "invalid_request_error", "unsupported_media_type"


class TooManyRequests(CelgateError):
    """Load shed by a concurrency limit; ``scope`` (global, principal) and ``kind`` (requests, streams) label it."""

    status, type, code = 429, "rate_limit_error", "concurrency_limit"

    def __init__(self, message: str, *, scope: str, kind: str, retry_after: int) -> None:
        super().__init__(message)
        self.scope, self.kind = scope, kind
        self.headers = {"Retry-After": str(retry_after)}


class ShuttingDown(CelgateError):
    status, type, code = 503, "server_error", "shutting_down"


class AgentFailed(CelgateError):
    """A drop-in agent run failed; status and code come from the adapter."""

    type = "agent_error"

    def __init__(self, message: str, *, status: int, error_type: str, code: str) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.type = error_type


class UpstreamError(CelgateError):
    status, type, code = 502, "upstream_error", "upstream_error"


class UpstreamUnavailable(UpstreamError):
    status, code = 502, "upstream_unavailable"


class UpstreamTooLarge(UpstreamError):
    status, code = 502, "upstream_too_large"


class UpstreamTimeout(UpstreamError):
    status, code = 504, "upstream_timeout"


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error object, the one shape every celgate error has."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(exc: CelgateError) -> web.Response:
    return web.json_response(
        error_body(exc.message, exc.type, exc.code, exc.param), status=exc.status, headers=exc.headers
    )


def sse_error_event(exc: CelgateError) -> bytes:
    """An SSE ``error`` event; its data is the OpenAI error object, as OpenAI sends mid-stream errors.

    The object also carries the HTTP ``status`` the error would have had before
    the stream started, so a relay (celgate's own agent runtime) keeps it.
    """
    body = error_body(exc.message, exc.type, exc.code, exc.param)
    body["error"]["status"] = exc.status
    return named_event("error", body)
