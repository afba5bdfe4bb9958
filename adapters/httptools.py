"""HTTP gateway tools: a YAML file in ``--tools`` that turns one HTTP endpoint into a tool.

::

    kind: http
    name: order_status
    description: The shipping status of an order.
    parameters: {type: object, properties: {order_id: {type: string}}, required: [order_id]}
    url: https://orders.internal/status
    method: POST                          # default POST; GET and DELETE send the arguments as the query
    headers: {Authorization: "Bearer ${ORDERS_TOKEN}"}   # ${NAME}: from celgate's environment, at load
    timeout: 10                           # seconds, default 10
    max_response_bytes: 65536             # default 64 KiB

The model's arguments go as the JSON body (or the query); the response body,
as text, is the tool's result. What is not a clean answer is a tool error the
model reads, never a crash of the run: a status other than 2xx (redirects are
not followed), a timeout, a connection failure, and a body over
``max_response_bytes`` (the model gets the error and the body cut at the
limit). Calls go out on one aiohttp session per catalogue.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from agents import FunctionTool

from .errors import ToolFailure
from .yamlspec import SpecError, SpecFile, mapping_field, name_field, positive_field, text_field

__all__ = ["HttpTool", "http_function_tool", "read_http_tool"]

_KEYS = {"kind", "name", "description", "parameters", "url", "method", "headers", "timeout", "max_response_bytes"}
_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
_QUERY_METHODS = {"GET", "DELETE"}
_DEFAULT_TIMEOUT = 10.0
_DEFAULT_MAX_BYTES = 64 * 1024
_ERROR_BODY_CHARS = 512  # how much of an error response the model sees


@dataclass(frozen=True, slots=True)
class HttpTool:
    """A validated HTTP tool file; header values are already expanded from the environment."""

    name: str
    description: str
    parameters: dict[str, Any]
    url: str
    method: str
    headers: dict[str, str]
    timeout: float
    max_response_bytes: int


def read_http_tool(spec: SpecFile) -> HttpTool:
    """Validate an HTTP tool file; raises ``SpecError`` naming the field."""
    data = spec.data
    spec.check_keys(data, _KEYS)
    name = name_field(data, "name")
    url = data.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise SpecError("url", "url must be an http(s) URL")
    method = str(data.get("method", "POST")).upper()
    if method not in _METHODS:
        raise SpecError("method", f"method must be one of {', '.join(sorted(_METHODS))}")
    return HttpTool(
        name=name,
        description=text_field(data, "description", ""),
        parameters=parameters_field(data),
        url=url,
        method=method,
        headers=mapping_field(data, "headers"),
        timeout=positive_field(data, "timeout", _DEFAULT_TIMEOUT),
        max_response_bytes=int(positive_field(data, "max_response_bytes", _DEFAULT_MAX_BYTES, integer=True)),
    )


def http_function_tool(tool: HttpTool, session: Callable[[], aiohttp.ClientSession]) -> FunctionTool:
    """The SDK tool that calls the endpoint; ``session`` gives the catalogue's shared session."""

    async def invoke(ctx: Any, arguments: str) -> str:
        return await _call(tool, session(), _arguments(arguments))

    return FunctionTool(
        name=tool.name,
        description=tool.description,
        params_json_schema=tool.parameters,
        on_invoke_tool=invoke,
        strict_json_schema=False,
    )


async def _call(tool: HttpTool, session: aiohttp.ClientSession, arguments: dict[str, Any]) -> str:
    where = f"celgate: HTTP tool {tool.name}"
    if tool.method in _QUERY_METHODS:
        query = {key: value if isinstance(value, str) else json.dumps(value) for key, value in arguments.items()}
        request: dict[str, Any] = {"params": query}
    else:
        request = {"json": arguments}
    try:
        async with asyncio.timeout(tool.timeout):
            async with session.request(
                tool.method, tool.url, headers=tool.headers, allow_redirects=False, **request
            ) as response:
                body = await _read_at_most(response, tool.max_response_bytes + 1)
                status = response.status
    except TimeoutError:
        raise ToolFailure(f"{where}: {tool.url} did not answer within {tool.timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise ToolFailure(f"{where}: {tool.url} could not be reached ({type(exc).__name__})") from None
    text = body[: tool.max_response_bytes].decode("utf-8", errors="replace")
    if not 200 <= status < 300:
        raise ToolFailure(f"{where}: {tool.url} answered HTTP {status}: {text[:_ERROR_BODY_CHARS]}")
    if len(body) > tool.max_response_bytes:
        raise ToolFailure(
            f"{where}: the response is larger than max_response_bytes ({tool.max_response_bytes}); its start:\n{text}"
        )
    return text


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body up to ``limit`` bytes (one read may return less than asked); the rest is never read."""
    body = bytearray()
    while len(body) < limit:
        chunk = await response.content.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        raise ToolFailure("celgate: the tool arguments are not valid JSON") from None
    if not isinstance(value, dict):
        raise ToolFailure("celgate: the tool arguments must be a JSON object")
    return value


def parameters_field(data: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema of an object; the default takes no arguments."""
    value = data.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(value, dict) or value.get("type") != "object":
        raise SpecError("parameters", "parameters must be a JSON schema with type: object")
    return {"properties": {}, **value}
