"""TorchServe's request bodies: JSON, raw bytes (`curl -T`, octet-stream, none) and multipart.

TorchServe hands its handlers one item per request, `{"body": ...}` for a whole body (JSON
decoded when the Content-Type says JSON) and `{"data": ...}`/`{"body": ...}` for form fields.
Here a multipart body with several `data`/`body` files is several instances (items); its other
fields are added to each item.

Example:
    >>> request_items(b'{"x": 1}', "application/json", where="POST /predictions/m")
    [{'body': {'x': 1}}]
"""

from __future__ import annotations

import json
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from inferline.serve.http import bad_request

INSTANCE_FIELDS = ("data", "body")


def is_multipart(content_type: str) -> bool:
    return content_type.lower().startswith("multipart/form-data")


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def form_parts(body: bytes, content_type: str, *, where: str) -> list[tuple[str, bytes, str]]:
    """`(field name, value, part Content-Type)` of each part of a multipart/form-data body."""
    if "boundary=" not in content_type:
        raise bad_request(f"{where}: multipart/form-data without a boundary")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise bad_request(f"{where}: unreadable multipart/form-data body")
    parts = []
    for part in message.iter_parts():
        if not isinstance(part, Message):
            continue
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            raise bad_request(
                f"{where}: a multipart part has no name (expected form fields such as data=@img.png)"
            )
        parts.append((name, payload, part.get_content_type()))
    if not parts:
        raise bad_request(f"{where}: multipart/form-data body has no parts; send -F data=@FILE")
    return parts


def request_items(body: bytes, content_type: str, *, where: str) -> list[dict[str, Any]]:
    """The handler items of one request, as TorchServe's backend builds them."""
    if is_multipart(content_type):
        parts = form_parts(body, content_type, where=where)
        shared = {name: _value(value, kind) for name, value, kind in parts if name not in INSTANCE_FIELDS}
        items = [
            {name: _value(value, kind), **shared} for name, value, kind in parts if name in INSTANCE_FIELDS
        ]
        return items or [shared]
    if is_json(content_type):
        try:
            return [{"body": json.loads(body)}]
        except ValueError as exc:
            raise bad_request(f"{where}: malformed JSON body ({exc})") from None
    return [{"body": body}]


def _value(value: bytes, kind: str) -> Any:
    if is_json(kind):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
