"""Sample -> Request: the prompt of protocol ``mmr-ad-v1`` with its images referenced.

Images are *not* decoded here: each becomes a :class:`FileImagePart` whose size is read from the
file's header (PIL's lazy open), so a remote provider can send the file's own bytes untouched, and
a local one decodes it (``part.image``) only when it needs pixels. The query's header size is still
checked against the manifest's width/height, and an unreadable file is still an error naming the
file and the sample; the runner turns such an error into an ``error`` line for that sample.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Mapping, Sequence

from PIL import Image, UnidentifiedImageError

from mmrbench.adapters.base import GenerationConfig, ImagePart, Message, Request, TextPart
from mmrbench.vision.images import MAX_IMAGE_PIXELS, ImageLoadError, load_rgb
from mmrbench.data.schema import Sample
from mmrbench.prompts import VARIANTS, build_prompt


class FileImagePart(ImagePart):
    """An image that is exactly the content of ``file`` (not drawn on, not resized): remote
    providers send the file's own bytes, local ones read :attr:`image`, decoded (RGB) on first use.

    ``FileImagePart(decoded_image, path=..., file=...)`` wraps an image already decoded;
    ``FileImagePart(None, path=..., file=..., size=(w, h))`` defers decoding. ``data`` holds the
    file's bytes when the caller read them (the query: the bytes checked are the bytes sent);
    ``shared`` marks an image many requests send (the reference), which providers may cache encoded.
    """

    def __init__(self, image: Image.Image | None = None, path: str | None = None, file: str | None = None, *,
                 size: tuple[int, int] | None = None, data: bytes | None = None, shared: bool = False,
                 sample_id: str | None = None):
        if image is None and file is None:
            raise ValueError("FileImagePart needs an image or a file")
        self._image = image
        self.path = path
        self.file = file
        self.size = (int(size[0]), int(size[1])) if size is not None else (image.size if image is not None else None)
        self.data = data
        self.shared = shared
        self.sample_id = sample_id
        self.type = "image"
        self._lock = threading.Lock()

    @property  # type: ignore[override]
    def image(self) -> Image.Image:
        if self._image is None:
            with self._lock:
                if self._image is None:
                    self._image = load_rgb(self.file, sample_id=self.sample_id)  # type: ignore[arg-type]
        return self._image

    @image.setter
    def image(self, value: Image.Image) -> None:
        self._image = value

    def file_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        with open(self.file, "rb") as f:  # type: ignore[arg-type]
            return f.read()

    def __repr__(self) -> str:
        return f"FileImagePart(file={self.file!r}, size={self.size}, shared={self.shared})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, FileImagePart) and (self.file, self.size) == (other.file, other.size)
                and self.file is not None)

    __hash__ = None  # type: ignore[assignment]


def header_size(path: Path, data: bytes | None = None, sample_id: str | None = None) -> tuple[int, int]:
    """``(width, height)`` from the image header (no pixel decoded), with the harness's pixel limit
    and one-line errors naming the file and sample."""
    import io

    who = f" (sample '{sample_id}')" if sample_id else ""
    if data is None and not path.is_file():
        raise ImageLoadError(f"image not found: {path}{who}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data) if data is not None else path) as im:
                w, h = im.size
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"image {path}{who} is over the pixel limit ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"cannot read image {path}{who}: {exc}") from None
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageLoadError(f"image {path}{who} is {w}x{h}, over the {MAX_IMAGE_PIXELS}-pixel limit "
                             f"(MMRBENCH_MAX_IMAGE_PIXELS raises it)")
    return w, h


def build_request(sample: Sample, root: str | Path, *, variant: str = "default",
                  domain_labels: Mapping[tuple[str, str], Sequence[str]] | None = None,
                  config: GenerationConfig | None = None, decode: bool = False) -> Request:
    """System message, then one user message: the images in prompt order (reference first, query
    second), then the instruction text.

    ``decode=True`` (local engines, which need pixels) decodes every image here, so a truncated file
    is this sample's error rather than a failure inside the model's batch; remote providers leave
    it False and send the file bytes."""
    labels = None
    if variant == "domain_knowledge":
        labels = (domain_labels or {}).get((sample.subdataset, sample.category), [])
    prompt = build_prompt(sample, variant, domain_labels=labels)
    root = Path(root)
    parts: list = []
    for rel in prompt.images:
        path = root / rel
        is_query = rel == sample.image
        data = None
        if is_query:  # read once: the bytes whose header is checked are the bytes sent
            try:
                data = path.read_bytes()
            except OSError as exc:
                what = "not found" if not path.exists() else f"unreadable ({exc.strerror or exc})"
                raise ImageLoadError(f"image {what}: {path} (sample '{sample.id}')") from None
        w, h = header_size(path, data, sample.id)
        if is_query and (w, h) != (sample.width, sample.height):
            # the boxes are in the manifest's frame: scoring them against another would be silently wrong
            raise ImageLoadError(f"image {path} is {w}x{h} but the manifest says "
                                 f"{sample.width}x{sample.height} (sample '{sample.id}'); fix the manifest "
                                 f"('mmrbench data check' lists every mismatch)")
        part = FileImagePart(None, path=rel, file=str(path), size=(w, h), data=data, shared=not is_query,
                             sample_id=sample.id)
        if decode:
            part.image = load_rgb(path, sample_id=sample.id)
            part.data = None
        parts.append(part)
    parts.append(TextPart(prompt.user))
    return Request(sample.id, [Message("system", prompt.system), Message("user", parts)],
                   config or GenerationConfig())


def prompt_template_sha256(variant: str) -> str:
    """A hash of the prompt *templates* of a variant (category-independent), for result.json."""
    import hashlib

    if variant not in VARIANTS:
        raise ValueError(variant)
    h = hashlib.sha256()
    for label, boxes in (("normal", []), ("anomalous", None)):
        from mmrbench.data.schema import Box
        s = Sample(id="x", subdataset="{subdataset}", category="{category}", split="test", image="q.png",
                   label=label, width=1, height=1, reference="r.png",
                   boxes=boxes if boxes is not None else [Box(0, 0, 1, 1, "{label}")])
        p = build_prompt(s, variant, domain_labels=["{label}"])
        h.update(p.sha256.encode())
    return h.hexdigest()
