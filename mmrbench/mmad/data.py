"""MMAD as released: ``mmad.json`` plus the image folders, read into typed questions.

MMAD (Jiang et al., ICLR 2025, arXiv 2410.09453, github.com/jam-cc/MMAD) ships one JSON object keyed
by the query image's path relative to the data root (``DS-MVTec/bottle/image/broken_large/000.png``).
Each value carries a ``conversation`` list of multiple-choice questions ({``Question``, ``Options``
letter -> text, ``Answer`` letter, ``type`` subtask}), ``similar_templates`` and ``random_templates``
(paths of normal images, same root) and a ``mask_path`` (relative to the first three components of
the image path). The source dataset is the first path component and the category the second; an
image is normal when ``good`` occurs in its path. Those are the rules of MMAD's own loaders and
summary script, kept here so that per-dataset tables mean the same thing.

Every malformed field is reported as one line naming the file, the image key and the field.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrbench.errors import MMRBenchError

#: subtask names of the released file -> the seven subtasks of the paper's tables
SUBTASK_ALIASES = {"Object Structure": "Object Analysis", "Object Details": "Object Analysis"}
SUBTASKS = ("Anomaly Detection", "Defect Classification", "Defect Localization", "Defect Description",
            "Defect Analysis", "Object Classification", "Object Analysis")
AD_SUBTASK = "Anomaly Detection"
LETTERS = ("A", "B", "C", "D", "E")
NORMAL_FLAG = "good"


class MMADFormatError(MMRBenchError):
    """``mmad.json`` (or a file in its format) is malformed; the message names file, image and field."""


def subtask_of(qtype: str) -> str:
    return SUBTASK_ALIASES.get(qtype, qtype)


@dataclass(frozen=True)
class MMADQuestion:
    """One multiple-choice question about one image; ``id`` is ``"<image key>#<index>"``."""

    id: str
    image: str
    index: int
    question: str
    options: tuple[tuple[str, str], ...]
    answer: str
    type: str
    dataset: str
    category: str
    is_normal: bool

    @property
    def subtask(self) -> str:
        return subtask_of(self.type)

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.options)


@dataclass(frozen=True)
class MMADImage:
    key: str
    questions: tuple[MMADQuestion, ...]
    similar_templates: tuple[str, ...] = ()
    random_templates: tuple[str, ...] = ()
    mask: str | None = None

    @property
    def dataset(self) -> str:
        return self.questions[0].dataset if self.questions else self.key.split("/")[0]

    @property
    def category(self) -> str:
        return self.questions[0].category if self.questions else ""

    @property
    def is_normal(self) -> bool:
        return NORMAL_FLAG in self.key


@dataclass
class MMADData:
    json_path: Path
    root: Path
    sha256: str
    images: list[MMADImage] = field(default_factory=list)

    @property
    def questions(self) -> list[MMADQuestion]:
        return [q for im in self.images for q in im.questions]

    def image(self, key: str) -> MMADImage:
        for im in self.images:
            if im.key == key:
                return im
        raise KeyError(key)


def _fail(path: Path, key: str | None, fld: str, what: str) -> MMADFormatError:
    where = f"{path}: image '{key}': " if key is not None else f"{path}: "
    return MMADFormatError(f"{where}field '{fld}': {what}")


def _str_list(v: Any, path: Path, key: str, fld: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise _fail(path, key, fld, "must be a list of image paths")
    return tuple(v)


def _question(q: Any, k: int, key: str, dataset: str, category: str, path: Path) -> MMADQuestion:
    fld = f"conversation[{k}]"
    if not isinstance(q, dict):
        raise _fail(path, key, fld, "must be an object with Question, Options, Answer, type")
    text = q.get("Question")
    if not isinstance(text, str) or not text.strip():
        raise _fail(path, key, f"{fld}.Question", "must be a non-empty string")
    opts = q.get("Options")
    if not isinstance(opts, dict) or len(opts) < 2:
        raise _fail(path, key, f"{fld}.Options", "must map at least two letters to option texts")
    for letter, val in opts.items():
        if letter not in LETTERS:
            raise _fail(path, key, f"{fld}.Options", f"key {letter!r} is not one of A-E")
        if not isinstance(val, str):
            raise _fail(path, key, f"{fld}.Options.{letter}", "must be a string")
    ans = q.get("Answer")
    if not isinstance(ans, str) or ans not in opts:
        raise _fail(path, key, f"{fld}.Answer", f"must be one of the option letters {', '.join(opts)}, got {ans!r}")
    qtype = q.get("type")
    if not isinstance(qtype, str) or not qtype.strip():
        raise _fail(path, key, f"{fld}.type", "must be a non-empty subtask name")
    return MMADQuestion(id=f"{key}#{k}", image=key, index=k, question=text, options=tuple(opts.items()),
                        answer=ans, type=qtype, dataset=dataset, category=category,
                        is_normal=NORMAL_FLAG in key)


def parse_mmad(obj: Any, path: Path) -> list[MMADImage]:
    """Validate the decoded JSON of an ``mmad.json`` file (``path`` is only used in messages)."""
    if not isinstance(obj, dict) or not obj:
        raise _fail(path, None, "<top level>", "must be a non-empty object keyed by image path")
    images: list[MMADImage] = []
    for key, val in obj.items():
        parts = key.split("/")
        if len(parts) < 3 or any(p in ("", "..") for p in parts) or key.startswith("/"):
            raise _fail(path, key, "<key>", "must be a relative path <dataset>/<category>/.../<file>")
        if not isinstance(val, dict):
            raise _fail(path, key, "<value>", "must be an object")
        conv = val.get("conversation")
        if not isinstance(conv, list) or not conv:
            raise _fail(path, key, "conversation", "must be a non-empty list of questions")
        qs = tuple(_question(q, k, key, parts[0], parts[1], path) for k, q in enumerate(conv))
        mask = val.get("mask_path")
        if mask is not None and not isinstance(mask, str):
            raise _fail(path, key, "mask_path", "must be a string or null")
        if mask:
            mask = "/".join(parts[:3]) + "/" + mask
        images.append(MMADImage(key=key, questions=qs,
                                similar_templates=_str_list(val.get("similar_templates"), path, key, "similar_templates"),
                                random_templates=_str_list(val.get("random_templates"), path, key, "random_templates"),
                                mask=mask or None))
    return images


def find_json(root: str | os.PathLike) -> Path:
    p = Path(root)
    if p.is_dir():
        p = p / "mmad.json"
    if not p.is_file():
        raise MMRBenchError(f"MMAD file not found: {p} (pass the folder holding mmad.json or the file itself)")
    return p


def load_mmad(root: str | os.PathLike, *, images_root: str | os.PathLike | None = None,
              check_images: bool = False) -> MMADData:
    """Read ``ROOT/mmad.json`` (or ROOT itself when it is a file); image paths are relative to
    ``images_root`` (default: the folder of the JSON file, as in MMAD's release)."""
    jp = find_json(root)
    raw = jp.read_bytes()
    from mmrbench.errors import InputError
    from mmrbench.validation import loads_json
    try:
        obj = loads_json(raw, str(jp))  # bad UTF-8, NaN, deep nesting: one line
    except InputError as exc:
        raise MMADFormatError(str(exc)) from None
    images = parse_mmad(obj, jp)
    base = Path(images_root) if images_root is not None else jp.parent
    data = MMADData(json_path=jp, root=base, sha256=hashlib.sha256(raw).hexdigest(), images=images)
    if check_images:
        for im in images:
            for rel, fld in [(im.key, "<key>")] + [(t, "similar_templates") for t in im.similar_templates] \
                    + [(t, "random_templates") for t in im.random_templates]:
                if not (base / rel).is_file():
                    raise _fail(jp, im.key, fld, f"image not found under {base}: {rel}")
    return data


def question_json(q: MMADQuestion) -> dict[str, Any]:
    return {"id": q.id, "image": q.image, "index": q.index, "dataset": q.dataset, "category": q.category,
            "normal": q.is_normal, "type": q.type, "subtask": q.subtask, "question": q.question,
            "options": dict(q.options), "answer": q.answer}


def import_mmad(root: str | os.PathLike, out: str | os.PathLike, *,
                images_root: str | os.PathLike | None = None, check_images: bool = True) -> dict[str, Any]:
    """Check a release (format and, by default, that every image exists) and write ``OUT/questions.jsonl``
    (one typed question a line) and ``OUT/info.json`` (where the release is, its sha256, counts)."""
    data = load_mmad(root, images_root=images_root, check_images=check_images)
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    with open(o / "questions.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for q in data.questions:
            f.write(json.dumps(question_json(q), ensure_ascii=False) + "\n")
            c = counts.setdefault(q.dataset, {})
            c[q.subtask] = c.get(q.subtask, 0) + 1
    info = {"format": "mmad", "mmad_json": str(data.json_path.resolve()), "images_root": str(data.root.resolve()),
            "sha256": data.sha256, "images": len(data.images), "questions": len(data.questions),
            "per_dataset": counts}
    (o / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
