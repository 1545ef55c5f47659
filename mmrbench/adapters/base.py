"""The one interface every model speaks, in the spirit of inspect_ai's ``ModelAPI``.

A model gets a batch of :class:`Request` (chat messages whose content mixes text and images, plus
generation settings) and returns one :class:`Response` per request: text, a stop status read from
the provider's own enums, token usage, latency, and the size of every image as it was sent so boxes
can be mapped back. Providers raise nothing for a failed request: they return status ``error`` with
a message, and the runner decides what is retried.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence, Union

from PIL import Image

Status = Literal["ok", "refused", "truncated", "error"]
STATUSES: tuple[Status, ...] = ("ok", "refused", "truncated", "error")


def as_status(value: str) -> Status:
    """A provider's status word checked against the four the harness knows (anything else is a bug
    in the provider, reported as such rather than written to a predictions line)."""
    for s in STATUSES:
        if value == s:
            return s
    raise ValueError(f"unknown response status {value!r} (known: {', '.join(STATUSES)})")


@dataclass
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass
class ImagePart:
    """An image to send; ``image`` is loaded RGB. Adapters may resize it and must report the sent size."""

    image: Image.Image
    path: str | None = None
    type: Literal["image"] = "image"
    #: the file the image is exactly the content of (not drawn on, not resized), when there is one:
    #: remote providers may then send the file's own bytes (see requests_build.FileImagePart)
    file: str | None = None
    #: the image's (width, height) when known without decoding; None = read ``image.size``
    size: tuple[int, int] | None = None
    #: sent by many requests (a normal reference): providers may cache its encoding
    shared: bool = False


Part = Union[TextPart, ImagePart]


@dataclass
class Message:
    role: Literal["system", "user", "assistant"]
    content: list[Part] | str

    @property
    def parts(self) -> list[Part]:
        return [TextPart(self.content)] if isinstance(self.content, str) else list(self.content)

    @property
    def images(self) -> list[Image.Image]:
        return [p.image for p in self.parts if isinstance(p, ImagePart)]

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))


@dataclass
class GenerationConfig:
    """Sampling settings. ``None`` means the provider's default. ``min_p`` and ``top_k`` are
    honoured by local engines; API providers that lack them ignore them and say so in the card."""

    max_new_tokens: int = 512
    temperature: float | None = 0.0
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return not self.temperature

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class Request:
    id: str
    messages: list[Message]
    config: GenerationConfig = field(default_factory=GenerationConfig)

    @property
    def images(self) -> list[Image.Image]:
        return [im for m in self.messages for im in m.images]


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_json(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


@dataclass
class Response:
    text: str | None
    status: Status = "ok"
    error: str | None = None
    usage: Usage | None = None
    latency_s: float | None = None
    image_sizes: list[list[int]] | None = None
    #: transient failures (rate limit, 5xx, timeout) may be retried; others are final
    retryable: bool = False
    retry_after_s: float | None = None
    #: how many attempts the request took (set by the retry loop; > 1 is recorded)
    attempts: int | None = None
    #: a reasoning model's separate thinking text, when the API returns it apart from the answer
    reasoning: str | None = None
    #: this answer's own box convention, when a provider reads it from the answer (Gemini's box key);
    #: None = the model's declared convention
    convention: str | None = None
    #: the box key the answer used, when the provider picks the convention by key
    box_key: str | None = None
    #: the server said "too many requests" (HTTP 429 / RESOURCE_EXHAUSTED): adaptive concurrency backs off
    rate_limited: bool = False


class ModelAPI(abc.ABC):
    """Base class of providers.

    ``convention`` names how the model writes boxes (see :mod:`mmrbench.coords`). ``max_concurrency``
    bounds parallel requests for API providers; ``batch_size`` is how many requests a local engine
    takes per :meth:`generate` call.
    """

    provider: str = ""
    convention: str = "pixel"
    max_concurrency: int = 1
    batch_size: int = 1

    #: True for providers whose boxes are always in one convention (AnomalyGPT, the detectors write
    #: original pixels): a card or flag asking for another is an error, not a silent misreading
    fixed_convention: bool = False

    def __init__(self, model: str, *, convention: str | None = None, **kwargs: Any):
        self.model = model
        if convention:
            self.set_convention(convention)

    def set_convention(self, convention: str) -> None:
        """Declare how this model writes boxes (checked against :data:`mmrbench.coords.CONVENTIONS`)."""
        from mmrbench.coords import check_convention
        from mmrbench.errors import ConfigError

        conv = check_convention(convention)
        if self.fixed_convention and conv != self.convention:
            raise ConfigError(f"provider '{self.provider}' writes its boxes as '{self.convention}': "
                              f"convention '{conv}' does not apply to it")
        self.convention = conv

    @abc.abstractmethod
    def generate(self, requests: Sequence[Request]) -> list[Response]:
        """Answer every request, in order, never raising for a single failed request."""

    def describe(self) -> dict[str, Any]:
        """What goes into result.json's model card: never secrets."""
        return {"provider": self.provider, "model_id": self.model, "convention": self.convention}

    def local_weights(self, folder: str, lora: str | None = None) -> dict[str, str]:
        """For a local engine's :meth:`describe`: the content digests of its model and adapter folders
        (:mod:`mmrbench.weights_identity`; nothing for hub ids), so a run folder never resumes over
        answers of other weights that once sat at the same path. Computed once per instance, which
        is right after the weights were loaded."""
        cached = self.__dict__.get("_local_weights")
        if cached is None:
            from mmrbench.weights_identity import local_weights
            cached = self.__dict__["_local_weights"] = local_weights(folder, lora)
        return dict(cached)

    def close(self) -> None:
        pass
