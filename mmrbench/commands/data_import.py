"""``mmrbench data import FORMAT ROOT --out DIR``: a real dataset layout -> MMR-AD manifest."""
from __future__ import annotations

import argparse

FORMATS = ("mvtec", "mpdd", "visa", "mvtec3d", "mmrad", "loco", "goodsad", "realiad", "realiad-d3", "manta", "miad",
           "cableinspect", "wfdd", "texturead", "3cad", "mmad")


def add_parser(sub) -> None:
    p = sub.add_parser("import", help="import one of the 14 MMR-AD sources (or an MMR-AD release) into a manifest",
                       description="Write DIR/manifest.jsonl for a source tree. Boxes are the connected components "
                                   "of the ground-truth masks; each test image gets a normal reference.")
    p.add_argument("format", choices=FORMATS, help="source layout")
    p.add_argument("root", help="dataset root (for mmrad: a .json/.jsonl file or a folder of them)")
    p.add_argument("--out", required=True, help="output folder for manifest.jsonl")
    p.add_argument("--subdataset", default=None, help="subdataset name (default: the source's Table 1 name, e.g. MVTecLOCO, RealIAD)")
    files = p.add_mutually_exclusive_group()
    files.add_argument("--copy", dest="files", action="store_const", const="copy",
                       help="copy images and masks under DIR/files/ (default: reference them by relative path)")
    files.add_argument("--symlink", dest="files", action="store_const", const="symlink",
                       help="symlink images and masks under DIR/files/")
    p.set_defaults(files="relative")
    p.add_argument("--reference", choices=("retrieval", "random", "first", "none"), default="retrieval",
                   help="how each test image's normal reference is chosen (default: retrieval, DESIGN App. B)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-csv", default=None, help="visa: split file relative to ROOT (default split_csv/1cls.csv)")
    p.add_argument("--images-root", default=None,
                   help="mmrad, mmad: folder the record (or mmad.json) image paths are relative to")
    p.add_argument("--split", default=None, choices=("train", "test"), help="mmrad: split of records without one")
    p.add_argument("--coords", default=None, help="mmrad: box convention of the answers (pixel, norm1000, gemini, norm1)")
    p.add_argument("--resolution", default=None, help="realiad: image folder (1024, 512, 256, raw; default the first present)")
    p.add_argument("--json-dir", default=None, help="realiad: JSON folder relative to ROOT (default realiad_jsons)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.format == "mmad":  # another protocol's release: indexed questions, not an MMR-AD manifest
        from mmrbench.errors import ConfigError
        from mmrbench.mmad.commands import run_import
        used = [f for f, v in (("--subdataset", args.subdataset), ("--copy/--symlink", args.files != "relative"),
                               ("--split-csv", args.split_csv), ("--split", args.split), ("--coords", args.coords),
                               ("--resolution", args.resolution), ("--json-dir", args.json_dir)) if v]
        if used:
            raise ConfigError(f"data import mmad takes ROOT, --out and --images-root only, not {', '.join(used)}")
        args.check_images = True
        return run_import(args)

    from tabulate import tabulate

    from mmrbench.data.importers import import_dataset

    report = import_dataset(args.format, args.root, args.out, subdataset=args.subdataset, files=args.files,
                            reference=args.reference, seed=args.seed, progress=True, split_csv=args.split_csv,
                            images_root=Path(args.images_root) if args.images_root else None,
                            split=args.split, coords=args.coords, resolution=args.resolution, json_dir=args.json_dir)
    rows = [[s, c, v["train"], v["test_normal"], v["test_anomalous"], v["boxes"]]
            for (s, c), v in sorted(report.per_category.items())]
    print(tabulate(rows, headers=["subdataset", "category", "train", "test normal", "test anomalous", "boxes"]))
    if report.skipped:
        print(f"skipped {len(report.skipped)} anomalous image(s) whose mask is empty (see the log)")
    print(f"manifest: {report.manifest} ({report.samples} samples)")
    print(f"sha256:   {report.sha256}")
    return 0
