"""MMR-AD data: schema, manifest IO, the bundled synthetic benchmark, importers, splits."""
from mmrbench.data.schema import Box, Sample, LABELS, SPLITS
from mmrbench.data.manifest import Manifest, read_manifest, write_manifest, file_sha256

__all__ = ["Box", "Sample", "LABELS", "SPLITS", "Manifest", "read_manifest", "write_manifest", "file_sha256"]
