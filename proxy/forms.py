"""Reading form bodies for policy: the ``model`` field of ``multipart/form-data`` and urlencoded uploads.

Why: audio transcriptions, image edits and file uploads carry ``model`` as a
form field. If celgate did not read it, a rule on ``request.model`` would
see ``""`` and the upstream would run the model the rule forbids. celgate
reads the field and forwards the original bytes unchanged.

A form is read strictly, because policy and the upstream must not disagree
about what it holds. The multipart structure comes from the standard
library's ``email`` parser, which is lenient. So celgate also checks
everything a stricter or looser upstream parser might read differently,
and refuses the body with a 400 when anything is off:

- the ``Content-Type`` names more than one boundary;
- the parser reports a defect (missing boundary, missing close delimiter,
  a part without a header/body separator, ...);
- the boundary appears in the raw bytes more often than the parts explain,
  or a part is itself multipart;
- anything follows the close delimiter;
- a part's ``Content-Disposition`` is repeated, folded over lines, has no
  ``name``, names it twice, or uses RFC 2231 (``name*=``) or backslash escapes;
- a name that reads as ``model`` once trimmed or case-folded but is not
  exactly ``model``;
- ``model`` given twice, as a file, with a ``Content-Transfer-Encoding``,
  in a charset other than UTF-8, or as text that is not UTF-8.

Urlencoded bodies are parsed with ``urllib.parse`` in strict mode, and the
same rules apply to the names.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl

from .errors import BadRequest

__all__ = ["form_fields"]

_FIELD = "model"
_PLAIN_CODINGS = frozenset({"7bit", "8bit", "binary"})
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii"})


def form_fields(mimetype: str, content_type: str, raw: bytes) -> dict[str, Any] | None:
    """``{"model": ...}`` (or ``{}``) from a form body; None when ``mimetype`` is not a form type."""
    if mimetype.startswith("multipart/"):
        return _multipart(content_type, raw)
    if mimetype == "application/x-www-form-urlencoded" and raw.lstrip()[:1] != b"{":
        return _urlencoded(raw)
    return None


def _refused(why: str) -> BadRequest:
    return BadRequest(
        f"celgate cannot read this form body unambiguously ({why}): send one well-formed "
        "multipart/form-data (or urlencoded) body with at most one 'model' field",
        code="ambiguous_form",
    )


def _multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\nMIME-Version: 1.0\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head + raw)
    boundary = message.get_boundary()
    if not boundary or not message.is_multipart():
        raise _refused("no boundary, or the body is not multipart")
    if [key.lower() for key, _ in message.get_params([])].count("boundary") != 1:
        raise _refused("more than one boundary")  # parsers differ in which one they take
    payload = message.get_payload()
    parts = [part for part in payload if isinstance(part, Message)] if isinstance(payload, list) else []
    if not parts or len(parts) != len(payload):
        raise _refused("no parts")
    if message.defects or any(part.defects for part in parts):
        raise _refused("malformed multipart structure")
    if raw.count(b"--" + boundary.encode("latin-1", "replace")) != len(parts) + 1:
        raise _refused("the boundary appears where no part begins or ends")
    if (message.epilogue or "").strip():
        raise _refused("data after the closing boundary")
    fields: dict[str, Any] = {}
    for part in parts:
        if part.is_multipart():
            raise _refused("a nested multipart part")
        if _part_name(part) == _FIELD:
            if _FIELD in fields:
                raise _refused("'model' given twice")
            fields[_FIELD] = _model_value(part)
    return fields


def _part_name(part: Message) -> str:
    dispositions = part.get_all("Content-Disposition") or []
    if len(dispositions) != 1:
        raise _refused("a part without exactly one Content-Disposition")
    raw_value = str(dispositions[0])
    if "\n" in raw_value or "\r" in raw_value or "\\" in raw_value or "*=" in raw_value.replace(" ", ""):
        raise _refused("a folded, escaped or RFC 2231 Content-Disposition")
    names = [value for key, value in part.get_params([], header="content-disposition") if key.lower() == "name"]
    if len(names) != 1 or not isinstance(names[0], str):
        raise _refused("a part without exactly one name")
    return _checked_name(email.utils.unquote(names[0]))


def _checked_name(name: str) -> str:
    if name != _FIELD and name.strip().casefold() == _FIELD:
        raise _refused(f"a field named {name!r}")
    return name


def _model_value(part: Message) -> str:
    if part.get_filename() is not None:
        raise _refused("'model' sent as a file")
    if str(part.get("Content-Transfer-Encoding", "binary")).strip().lower() not in _PLAIN_CODINGS:
        raise _refused("'model' with a Content-Transfer-Encoding")
    charset = part.get_content_charset()
    if charset is not None and charset.lower() not in _UTF8:
        raise _refused(f"'model' in charset {charset!r}")
    payload = part.get_payload(decode=False)
    if not isinstance(payload, str):
        raise _refused("'model' is not text")
    try:
        return payload.encode("ascii", "surrogateescape").decode("utf-8")
    except UnicodeError as exc:
        raise _refused("'model' is not UTF-8") from exc


def _urlencoded(raw: bytes) -> dict[str, Any]:
    if raw.find(b";") >= 0:
        raise _refused("';' in a urlencoded form (some parsers split on it)")
    try:
        text = raw.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text.strip()), errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refused("not a urlencoded form") from exc
    values = [value for name, value in pairs if _checked_name(name) == _FIELD]
    if len(values) > 1:
        raise _refused("'model' given twice")
    return {_FIELD: values[0]} if values else {}
