"""What a run records about itself: the command line (secrets blanked), the fingerprint that must match
to resume, the run tag every predictions line carries, the protocol and dataset blocks of result.json,
and how the run ended (:class:`RunSummary`, the CLI's exit code)."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from mmrbench import PROTOCOL
from mmrbench.data.manifest import Manifest
from mmrbench.data.schema import Sample
from mmrbench.errors import ConfigError
from mmrbench.predictions import Prediction
from mmrbench.weights_identity import reported

if TYPE_CHECKING:
    from mmrbench.dispatch import HasId

RUN = "run.json"


_SECRET_FLAG = re.compile(r"(key|token|secret|password)", re.I)


def scrub_argv(argv: Sequence[str]) -> list[str]:
    """The command line for run.json with anything secret-looking blanked (we take no key flags, but
    a user may pass ``--option api_key=...`` or a URL with credentials)."""
    out: list[str] = []
    hide_next = False
    for a in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        if a.startswith("--") and _SECRET_FLAG.search(a):
            if "=" in a:
                out.append(a.split("=", 1)[0] + "=***")
            else:
                out.append(a)
                hide_next = True
            continue
        if "=" in a and _SECRET_FLAG.search(a.split("=", 1)[0]):
            out.append(a.split("=", 1)[0] + "=***")
            continue
        out.append(re.sub(r"(https?://)[^/@\s]+@", r"\1***@", a))
    return out


def fingerprint(card_json: dict, manifest_sha: str, variant: str, shard: tuple[int, int] | None) -> dict:
    """What must match for two runs to share a predictions file: everything that changes an answer
    (a LoRA adapter given as an option, the image preparation) or how it is read (the convention)."""
    fp = {"manifest_sha256": manifest_sha, "provider": card_json.get("provider"),
          "model_id": card_json.get("model_id"), "convention": card_json.get("convention"),
          "sampling": card_json.get("sampling"), "options": card_json.get("options") or {},
          "image": card_json.get("image") or {}, "prompt_variant": variant,
          "prompt_version": _prompt_version(), "shard": f"{shard[0]}/{shard[1]}" if shard else None}
    # a local model folder's content (mmrbench.weights_identity): only the keys the provider reported,
    # so the fingerprints of API runs (and the run folders they name) stay what they were
    return {**fp, **reported(card_json)}


def run_tag(fp: dict) -> str:
    """The short hash every predictions line carries to say which run it belongs to."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


@dataclass
class RunSummary:
    """How a run ended: the CLI exits 0 only when every selected sample ended answered."""

    n_selected: int
    n_unanswered: int
    first_reason: str | None = None
    #: set when --max-cost stopped the run: (budget, estimated spend) in US dollars
    budget: tuple[float, float] | None = None

    @property
    def complete(self) -> bool:
        return self.n_unanswered == 0

    def line(self) -> str:
        if self.budget is not None:
            cap, spent = self.budget
            return (f"cost budget reached (--max-cost {cap:g} USD, estimated spend {spent:.4f} USD): "
                    f"{self.n_unanswered} of {self.n_selected} samples not answered yet; result.json scores them "
                    f"as wrong; re-running the same command resumes (raise --max-cost to go on)")
        why = f"; first reason: {self.first_reason}" if self.first_reason else ""
        return (f"{self.n_unanswered} of {self.n_selected} samples have no answer{why} "
                f"(result.json was written with them scored as wrong; run the same command to retry them)")


def summarize(samples: Sequence[HasId], preds: dict[str, Prediction]) -> RunSummary:
    unanswered = [s.id for s in samples if s.id not in preds or preds[s.id].status == "error"]
    first = None
    if unanswered:
        p = preds.get(unanswered[0])
        first = (p.error or "error") if p is not None else "no prediction"
        first = f"'{unanswered[0]}': {first}"[:300]
    return RunSummary(len(samples), len(unanswered), first)


def _prompt_version() -> str:
    from mmrbench.prompts import PROMPT_VERSION
    return PROMPT_VERSION


def protocol_json(variant: str) -> dict:
    from mmrbench.requests_build import prompt_template_sha256
    from mmrbench.scoring import LOC_IOU
    return {"name": PROTOCOL, "prompt_variant": variant, "prompt_version": _prompt_version(),
            "prompt_sha256": prompt_template_sha256(variant), "iou_threshold": LOC_IOU}


def dataset_json(manifest: Manifest, samples: Sequence[Sample], split: str | None, limit: int | None,
                 shard: tuple[int, int] | None) -> dict:
    d: dict[str, Any] = {"name": manifest.root.name or manifest.path.stem, "manifest": manifest.path.name,
                         "manifest_sha256": manifest.sha256, "split": split,
                         "subdatasets": sorted({s.subdataset for s in samples}), "n_samples": len(samples)}
    if limit is not None:
        d["limit"] = limit
    if shard is not None:
        d["shard"] = f"{shard[0]}/{shard[1]}"
    return d


def check_run_dir(out_dir: Path, fp: dict) -> None:
    """A readable run.json of another run names what differs (the predictions' own tags are the
    check that always runs: see :func:`check_origin`)."""
    run_path = out_dir / RUN
    if not run_path.exists():
        return
    try:
        prev = json.loads(run_path.read_text(encoding="utf-8")).get("fingerprint")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, RecursionError):
        return
    if isinstance(prev, dict) and prev != fp:
        diff = sorted(k for k in set(prev) | set(fp) if prev.get(k) != fp.get(k))
        raise ConfigError(f"{out_dir} holds a run with different {', '.join(diff)}: resume needs the same "
                          f"settings; use another --out")


def check_origin(path: Path, preds: dict[str, Prediction], tag: str) -> None:
    """Resume only over lines this very run (same fingerprint) wrote: a line of another run, or of
    no known run (written by hand, or by a harness before run tags), is refused, whatever run.json
    says or whether it exists at all."""
    for p in preds.values():
        if p.run != tag:
            who = f"of another run (run {p.run})" if p.run else "of unknown origin (no run tag)"
            raise ConfigError(f"{path}: sample '{p.id}' holds an answer {who}; resuming would credit it to this "
                              f"model and settings: use another --out, or delete the file to start over")
