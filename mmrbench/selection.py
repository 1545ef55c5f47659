"""Which samples a run asks: split, subdatasets, the first N, and a stable shard of them."""
from __future__ import annotations

import hashlib
import re
from typing import Sequence

from mmrbench.data.manifest import Manifest
from mmrbench.data.schema import Sample
from mmrbench.errors import ConfigError


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` with 0 <= I < N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), got '{text}'")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text}: need 0 <= I < N")
    return i, n


def shard_of(sample_id: str, n: int) -> int:
    """Stable shard of an id (same on every machine and Python version, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(sample_id.encode("utf-8")).digest()[:8], "big") % n


def select_samples(manifest: Manifest, *, split: str | None = "test", subdatasets: Sequence[str] | None = None,
                   limit: int | None = None, shard: tuple[int, int] | None = None) -> list[Sample]:
    """Manifest order; ``limit`` takes the first N of the selection, then ``shard`` splits those."""
    if subdatasets:
        unknown = sorted(set(subdatasets) - set(manifest.subdatasets))
        if unknown:
            raise ConfigError(f"unknown subdataset(s) {', '.join(unknown)} (manifest has: {', '.join(manifest.subdatasets)})")
    samples = manifest.select(split=split, subdatasets=subdatasets)
    if limit is not None:
        if limit < 1:
            raise ConfigError("--limit must be positive")
        samples = samples[:limit]
    if shard is not None:
        i, n = shard
        samples = [s for s in samples if shard_of(s.id, n) == i]
    return samples
