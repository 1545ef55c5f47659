"""An MMR-AD release in conversation form (the format MLLM training data is shipped in).

One record per sample, in a JSON array (``.json``) or one object per line (``.jsonl``)::

    {
      "id": "MVTecAD/bottle/test/broken_large/000",          # optional (default: derived from the query path)
      "subdataset": "MVTecAD",                               # or "dataset" / "source"
      "category": "bottle",                                  # or "class" / "object"
      "split": "test",                                       # optional, default --split (test)
      "images": ["bottle/train/good/012.png",                # reference first, query last;
                 "bottle/test/broken_large/000.png"],        #   paths relative to the JSON file (or --images-root)
      "conversations": [                                     # ShareGPT style ...
        {"from": "system", "value": "..."},
        {"from": "human", "value": "<image><image>Is there any anomaly ...?"},
        {"from": "gpt", "value": "<think>...</think><answer>Yes. {'bbox_2d': [x1, y1, x2, y2], 'label': 'broken'}</answer>"}
      ],
      "coords": "pixel"                                      # optional box convention, default --coords
    }

``messages`` (OpenAI style: ``role`` / ``content``, content a string or a list of parts) is read as
well; image parts (``{"type": "image", "image": path}``, ``{"type": "image_url", "image_url":
{"url": path}}``) are used when the record has no ``images`` list. The answer is the last
assistant (``gpt``) turn: its Yes/No gives the label and its boxes (read with
:func:`mmrbench.parsing.parse_answer`, never evaluated) become the ground truth, mapped from
``coords`` to original pixels. A ``label`` field, if present, must agree with the answer. When the
answer contains a ``<think>`` block the whole text is kept as the sample's ``reasoning``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmrbench.coords import CONVENTIONS, to_original
from mmrbench.data.importers.common import ImportFormatError, RawItem, image_size
from mmrbench.data.schema import Box
from mmrbench.parsing import parse_answer

ASSISTANT = {"gpt", "assistant", "model"}


def _records(path: Path) -> list[tuple[str, Any]]:
    """(where, record) pairs; ``where`` names the file and line/index for error messages."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFormatError(f"cannot read {path}: {exc}") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(f"{path}: not valid JSON ({exc})") from None
        return [(f"{path}[{i}]", r) for i, r in enumerate(data)]
    if stripped.startswith("{") and path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(f"{path}: not valid JSON ({exc})") from None
        for key in ("data", "samples", "records"):
            if isinstance(data.get(key), list):
                return [(f"{path}:{key}[{i}]", r) for i, r in enumerate(data[key])]
        return [(str(path), data)]
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"{path}:{n}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ImportFormatError(f"{path}:{n}: not valid JSON ({exc})") from None
    return out


def _turns(rec: dict, where: str) -> list[tuple[str, Any]]:
    if isinstance(rec.get("conversations"), list):
        return [(str(t.get("from", "")).lower(), t.get("value")) for t in rec["conversations"] if isinstance(t, dict)]
    if isinstance(rec.get("messages"), list):
        return [(str(t.get("role", "")).lower(), t.get("content")) for t in rec["messages"] if isinstance(t, dict)]
    raise ImportFormatError(f"{where}: record has neither 'conversations' nor 'messages'")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") in (None, "text"))
    return ""


def _image_parts(turns: list[tuple[str, Any]]) -> list[str]:
    out = []
    for _, content in turns:
        if not isinstance(content, list):
            continue
        for p in content:
            if not isinstance(p, dict):
                continue
            if p.get("type") == "image":
                v = p.get("image") or p.get("path") or p.get("url")
            elif p.get("type") == "image_url":
                iu = p.get("image_url")
                v = iu.get("url") if isinstance(iu, dict) else iu
            else:
                continue
            if isinstance(v, str):
                out.append(v[7:] if v.startswith("file://") else v)
    return out


def _first(rec: dict, *keys: str) -> Any:
    for k in keys:
        if rec.get(k) not in (None, ""):
            return rec[k]
    return None


def walk_mmrad(path: Path, *, images_root: Path | None = None, subdataset: str | None = None,
               split: str = "test", coords: str = "pixel") -> list[RawItem]:
    if path.is_dir():
        files = sorted([*path.glob("*.jsonl"), *path.glob("*.json")])
        if not files:
            raise ImportFormatError(f"no .json/.jsonl files in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise ImportFormatError(f"MMR-AD release not found: {path}")
    items: list[RawItem] = []
    for f in files:
        base = images_root or f.parent
        for where, rec in _records(f):
            if not isinstance(rec, dict):
                raise ImportFormatError(f"{where}: expected a JSON object")
            items.append(_item(rec, where, base, subdataset, split, coords))
    return items


def _item(rec: dict, where: str, base: Path, subdataset: str | None, split: str, coords: str) -> RawItem:
    turns = _turns(rec, where)
    answers = [c for role, c in turns if role in ASSISTANT]
    if not answers:
        raise ImportFormatError(f"{where}: no assistant ('gpt'/'assistant') turn holding the answer")
    answer = _text_of(answers[-1])
    imgs = rec.get("images") if isinstance(rec.get("images"), list) else None
    if imgs is None and isinstance(rec.get("image"), (str, list)):
        imgs = rec["image"] if isinstance(rec["image"], list) else [rec["image"]]
    if imgs is None:
        imgs = _image_parts(turns)
    if not imgs or not all(isinstance(p, str) for p in imgs):
        raise ImportFormatError(f"{where}: no image paths ('images' list or image parts)")
    if len(imgs) > 2:
        raise ImportFormatError(f"{where}: expected the reference and the query image, got {len(imgs)} images")
    query = base / imgs[-1]
    reference = base / imgs[0] if len(imgs) == 2 else None
    for p in (query, reference):
        if p is not None and not p.is_file():
            raise ImportFormatError(f"{where}: image not found: {p}")
    sub = _first(rec, "subdataset", "dataset", "source") or subdataset
    cat = _first(rec, "category", "class", "object", "class_name")
    if not sub:
        raise ImportFormatError(f"{where}: missing 'subdataset' (or pass --subdataset)")
    if not cat:
        raise ImportFormatError(f"{where}: missing 'category'")
    sp = str(_first(rec, "split") or split).lower()
    if sp not in ("train", "test"):
        raise ImportFormatError(f"{where}: unknown split '{sp}'")
    parsed = parse_answer(answer)
    if parsed.decision is None:
        raise ImportFormatError(f"{where}: the answer has no readable Yes/No: {answer[:80]!r}")
    label = "anomalous" if parsed.decision else "normal"
    given = _first(rec, "label")
    if given is not None:
        g = str(given).lower()
        g = {"anomaly": "anomalous", "abnormal": "anomalous", "good": "normal"}.get(g, g)
        if g != label:
            raise ImportFormatError(f"{where}: field 'label' is '{given}' but the answer says {'Yes' if parsed.decision else 'No'}")
    conv = str(rec.get("coords") or coords)
    if conv not in CONVENTIONS:
        raise ImportFormatError(f"{where}: unknown coordinate convention '{conv}' (known: {', '.join(CONVENTIONS)})")
    w = rec.get("width")
    h = rec.get("height")
    size = (int(w), int(h)) if isinstance(w, int) and isinstance(h, int) else image_size(query)
    boxes = []
    for i, rb in enumerate(parsed.boxes):
        x1, y1, x2, y2 = to_original(rb.coords, conv, None, size)
        if x2 <= x1 or y2 <= y1:
            raise ImportFormatError(f"{where}: box {i} {list(rb.coords)} is empty inside the {size[0]}x{size[1]} image")
        boxes.append(Box(_n(x1), _n(y1), _n(x2), _n(y2), rb.label.strip() or "anomaly"))
    if label == "anomalous" and sp == "test" and not boxes:
        raise ImportFormatError(f"{where}: the answer says Yes but gives no box")
    sid = rec.get("id")
    return RawItem(sub, str(cat), sp, label, query, defect=None, boxes=boxes if label == "anomalous" else None,
                   reference=reference, reasoning=answer if "<think>" in answer.lower() else None,
                   id=str(sid) if sid not in (None, "") else None)


def _n(v: float) -> float:
    return float(round(v, 2))
