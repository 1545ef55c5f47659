"""What a local model folder holds, as one digest: part of a run's fingerprint.

Why: a run is resumed when its fingerprint matches, and for an API model the fingerprint's model id
names the weights. For a local folder it does not: retrain or re-export into the same folder, run
``mmrbench eval`` into the same run folder again, and the old model's answers would be kept and
credited to the new one. The digest covers every file of the folder (weights, configs, tokenizer,
processor, chat template: all change answers), by name and content. Hashing a 15 GB 7B checkpoint takes
tens of seconds, so each file's hash is cached, keyed by its absolute path, size and modification time
(a rewritten file gets a new time, so it is hashed again).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mmrbench.hashing import file_sha256

#: files that never change an answer (editors, OS, git)
_IGNORED = {".DS_Store", ".gitattributes", "README.md"}


def _cache_path() -> Path:
    root = os.environ.get("MMRBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mmrbench")
    return Path(root) / "file-sha256.json"


def _load_cache(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(path: Path, cache: dict[str, str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a read-only home: the digest is still right, only recomputed next time
        pass


def folder_digest(folder: str | os.PathLike) -> str | None:
    """sha256 over (relative path, sha256 of content) of every file under ``folder``; None when
    ``folder`` is not a local directory (a hub id: its revision is in the card instead)."""
    root = Path(folder)
    if not root.is_dir():
        return None
    cache_file = _cache_path()
    cache = _load_cache(cache_file)
    changed = False
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and q.name not in _IGNORED and ".git" not in q.parts):
        st = p.stat()
        key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        digest = cache.get(key)
        if digest is None:
            digest = cache[key] = file_sha256(p)
            changed = True
        h.update(f"{p.relative_to(root).as_posix()}\0{digest}\n".encode("utf-8"))
    if changed:
        _save_cache(cache_file, cache)
    return h.hexdigest()


def local_weights(model: str | os.PathLike, lora: str | os.PathLike | None = None) -> dict[str, str]:
    """The ``describe()`` keys of a local engine: ``weights_sha256`` when ``model`` is a local folder,
    ``lora_sha256`` when ``lora`` is one (hub ids add nothing: their name is the identity)."""
    out: dict[str, str] = {}
    weights = folder_digest(model)
    if weights:
        out["weights_sha256"] = weights
    adapter = folder_digest(lora) if lora else None
    if adapter:
        out["lora_sha256"] = adapter
    return out
