"""Importers: real dataset layouts -> MMR-AD manifest.

``import_dataset(fmt, root, out)`` walks the source layout (one module per family of layouts),
turns masks into boxes (one per connected component, :mod:`mmrbench.data.masks`) or takes the
dataset's own boxes, picks a normal reference for every test image (:mod:`mmrbench.data.retrieval`
by default) and writes ``out/manifest.jsonl`` whose paths are relative to ``out``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from mmrbench.data.importers.common import (
    FILE_MODES, REFERENCE_METHODS, ImportFormatError, ImportOptions, ImportReport, RawItem, build_manifest,
)

#: format -> default subdataset name (the source's name in Table 1)
FORMATS = {
    "mvtec": "MVTecAD", "mpdd": "MPDD", "visa": "VisA", "mvtec3d": "MVTec3D", "mmrad": None,
    "loco": "MVTecLOCO", "goodsad": "GoodsAD", "realiad": "RealIAD", "realiad-d3": "RealIAD-D3",
    "manta": "MANTA", "miad": "MIAD", "cableinspect": "CableInspect", "wfdd": "WFDD", "texturead": "TextureAD",
    "3cad": "3CAD",
}
#: format options a walker accepts (CLI flags / SOURCES.toml keys)
WALK_OPTIONS = {"visa": ("split_csv",), "mmrad": ("images_root", "split", "coords"),
                "realiad": ("resolution", "json_dir")}


def walk(fmt: str, root: Path, *, subdataset: str | None = None, **kw) -> Iterable[RawItem]:
    """The raw items of a source tree in format ``fmt``, one category after another."""
    root = Path(root)
    if fmt not in FORMATS:
        raise ImportFormatError(f"unknown format '{fmt}' (expected one of {', '.join(FORMATS)})")
    sub = subdataset or FORMATS[fmt]
    opts = {k: v for k, v in kw.items() if k in WALK_OPTIONS.get(fmt, ()) and v}
    if fmt == "mmrad":  # the only format without a fixed subdataset name
        from mmrbench.data.importers.mmrad import walk_mmrad
        return walk_mmrad(root, subdataset=sub, **opts)
    assert sub is not None  # every other format has a default name in FORMATS
    if fmt in ("mvtec", "mpdd"):
        from mmrbench.data.importers.folders import walk_mvtec
        return walk_mvtec(root, sub, fmt=fmt)
    if fmt == "mvtec3d":
        from mmrbench.data.importers.folders import walk_mvtec3d
        return walk_mvtec3d(root, sub)
    if fmt == "visa":
        from mmrbench.data.importers.visa import walk_visa
        return walk_visa(root, sub, **opts)
    if fmt == "loco":
        from mmrbench.data.importers.loco import walk_loco
        return walk_loco(root, sub)
    if fmt in ("goodsad", "miad", "wfdd", "texturead", "3cad"):
        from dataclasses import replace

        from mmrbench.data.importers.mvteclike import SPECS, walk_tree
        return walk_tree(root, replace(SPECS[fmt], subdataset=sub))
    if fmt == "realiad":
        from mmrbench.data.importers.realiad import walk_realiad
        return walk_realiad(root, sub, **opts)
    if fmt == "realiad-d3":
        from mmrbench.data.importers.realiad import walk_realiad_d3
        return walk_realiad_d3(root, sub)
    if fmt == "manta":
        from mmrbench.data.importers.manta import walk_manta
        return walk_manta(root, sub)
    if fmt == "cableinspect":
        from mmrbench.data.importers.cableinspect import walk_cableinspect
        return walk_cableinspect(root, sub)
    raise AssertionError(f"format '{fmt}' is in FORMATS but has no walker")


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


__all__ = ["FORMATS", "WALK_OPTIONS", "walk", "import_dataset", "ImportFormatError", "ImportReport", "RawItem"]
