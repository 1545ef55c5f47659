"""The chat-completions request body, assembled without JSON-escaping megabytes of base64.

``json.dumps`` over a body holding two 4 MB data URLs scans every byte for characters to escape,
though base64 and the ``data:`` prefix never need any: at 1,024 px that scan cost more client CPU than
everything else per request. So the provider builds the body's skeleton with a placeholder where each
image URL goes (:func:`placeholder`), dumps only the skeleton, and splices the URLs in as bytes. The
result is the JSON the SDK would have sent (a test compares them).
"""
from __future__ import annotations

import json
from typing import Any, Sequence


def placeholder(i: int) -> str:
    """The marker standing for image ``i``'s URL in the skeleton: a control character cannot come
    from a prompt's text unescaped, so the marker is unambiguous."""
    return f"\x00mmrbench-image-{i}\x00"


def body_pieces(kw: dict[str, Any], raw_images: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """The body as pieces whose concatenation is the JSON body; ``extra_body`` is merged at the top
    level, as the SDK does.

    Pieces rather than one ``bytes``: joining them would copy 8 MB per request at 1,024 px while
    holding the GIL; the HTTP client writes each piece to the socket as it is."""
    body = {k: v for k, v in kw.items() if k != "extra_body"}
    body.update(kw.get("extra_body") or {})
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if not raw_images:
        return [text]
    pieces: list[bytes] = []
    rest = text
    for i, url in enumerate(raw_images):
        mark = json.dumps(placeholder(i)).encode("ascii")
        head, sep, rest = rest.partition(mark)
        if not sep:  # pragma: no cover - the skeleton always holds every placeholder once
            raise RuntimeError("image placeholder lost while encoding the request")
        pieces += [head, b'"', *url, b'"']
    pieces.append(rest)
    return coalesce(pieces)


def coalesce(pieces: list[bytes], small: int = 1 << 16) -> list[bytes]:
    """Runs of small pieces joined into one: every piece is a write to the socket (a GIL release
    and a context switch when many requests are in flight), and copying a few KB costs less."""
    out: list[bytes] = []
    run: list[bytes] = []
    for p in pieces:
        if len(p) < small:
            run.append(p)
            continue
        if run:
            out.append(b"".join(run))
            run = []
        out.append(p)
    if run:
        out.append(b"".join(run))
    return [p for p in out if p]
