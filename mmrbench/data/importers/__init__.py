"""Importers: real dataset layouts -> MMR-AD manifest.

``import_dataset(fmt, root, out)`` walks the source layout (one module per family of layouts),
turns masks into boxes (one per connected component, :mod:`mmrbench.data.masks`), picks a normal
reference for every test image (:mod:`mmrbench.data.retrieval` by default) and writes
``out/manifest.jsonl`` whose paths are relative to ``out``.
"""
from __future__ import annotations

from pathlib import Path

from mmrbench.data.importers.common import (
    FILE_MODES, REFERENCE_METHODS, ImportFormatError, ImportOptions, ImportReport, RawItem, build_manifest,
)

#: format -> default subdataset name
FORMATS = {"mvtec": "MVTecAD", "mpdd": "MPDD", "visa": "VisA", "mvtec3d": "MVTec3D", "mmrad": None}


def walk(fmt: str, root: Path, *, subdataset: str | None = None, **kw) -> list[RawItem]:
    """The raw items of a source tree in format ``fmt``."""
    root = Path(root)
    if fmt not in FORMATS:
        raise ImportFormatError(f"unknown format '{fmt}' (expected one of {', '.join(FORMATS)})")
    sub = subdataset or FORMATS[fmt]
    if fmt in ("mvtec", "mpdd"):
        from mmrbench.data.importers.folders import walk_mvtec
        return walk_mvtec(root, sub, fmt=fmt)
    if fmt == "mvtec3d":
        from mmrbench.data.importers.folders import walk_mvtec3d
        return walk_mvtec3d(root, sub)
    if fmt == "visa":
        from mmrbench.data.importers.visa import walk_visa
        return walk_visa(root, sub, **{k: v for k, v in kw.items() if k == "split_csv" and v})
    from mmrbench.data.importers.mmrad import walk_mmrad
    return walk_mmrad(root, subdataset=sub, **{k: v for k, v in kw.items() if k in ("images_root", "split", "coords") and v})


def import_dataset(fmt: str, root, out, *, subdataset: str | None = None, files: str = "relative",
                   reference: str = "retrieval", seed: int = 0, progress: bool = False, **kw) -> ImportReport:
    if files not in FILE_MODES:
        raise ImportFormatError(f"unknown file mode '{files}' (expected one of {', '.join(FILE_MODES)})")
    if reference not in REFERENCE_METHODS:
        raise ImportFormatError(f"unknown reference method '{reference}' (expected one of {', '.join(REFERENCE_METHODS)})")
    root = Path(root)
    items = walk(fmt, root, subdataset=subdataset, **kw)
    base = root if root.is_dir() else root.parent
    return build_manifest(items, base, Path(out), ImportOptions(files=files, reference=reference, seed=seed, progress=progress))


__all__ = ["FORMATS", "walk", "import_dataset", "ImportFormatError", "ImportReport", "RawItem"]
