"""What a local model folder holds, as one digest: part of a run's fingerprint.

Why: a run is resumed when its fingerprint matches, and for an API model the fingerprint's model id
names the weights. For a local folder it does not: retrain or re-export into the same folder, run
``mmrbench eval`` into the same run folder again, and the old model's answers would be kept and
credited to the new one. The digest covers every file of the folder (weights, configs, tokenizer,
processor, chat template: all change answers), by name and content. Hashing a 15 GB 7B checkpoint takes
tens of seconds, so each file's hash is cached under mmrbench's cache folder, one entry per file path,
valid while the file's size and modification time are unchanged (a rewritten file is hashed again).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mmrbench.hashing import file_sha256

#: the keys a local engine's ``describe()`` adds, and a run's fingerprint takes from it
KEYS = ("weights_sha256", "lora_sha256")
#: files that never change an answer (editors, OS, git)
_IGNORED = {".DS_Store", ".gitattributes", "README.md"}


def cache_root() -> Path:
    """mmrbench's cache folder: ``$MMRBENCH_CACHE`` or ``~/.cache/mmrbench``."""
    return Path(os.environ.get("MMRBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mmrbench"))


def _load_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(path: Path, cache: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a read-only home: the digest is still right, only recomputed next time
        pass


def folder_digest(folder: str | os.PathLike) -> str | None:
    """sha256 over (relative path, sha256 of content) of every file under ``folder``; None when
    ``folder`` is not a local directory (a hub id: its name is the identity)."""
    root = Path(folder)
    if not root.is_dir():
        return None
    cache_file = cache_root() / "file-sha256.json"
    cache = _load_cache(cache_file)
    changed = False
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.name in _IGNORED or ".git" in p.parts or not p.is_file():
            continue
        st = p.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        key = str(p.resolve())
        entry = cache.get(key)
        if isinstance(entry, list) and entry[:2] == stamp and len(entry) == 3:
            digest = entry[2]
        else:
            digest = file_sha256(p)
            cache[key] = [*stamp, digest]
            changed = True
        h.update(f"{p.relative_to(root).as_posix()}\0{digest}\n".encode("utf-8"))
    if changed:
        _save_cache(cache_file, cache)
    return h.hexdigest()


def local_weights(model: str | os.PathLike, lora: str | os.PathLike | None = None) -> dict[str, str]:
    """``weights_sha256`` when ``model`` is a local folder, ``lora_sha256`` when ``lora`` is one."""
    digests = (folder_digest(model), folder_digest(lora) if lora else None)
    return {k: d for k, d in zip(KEYS, digests) if d}


def reported(described: dict[str, Any]) -> dict[str, str]:
    """The digests a provider's ``describe()`` reported (none for API models), for a fingerprint."""
    return {k: described[k] for k in KEYS if described.get(k)}
