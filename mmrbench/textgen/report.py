"""The text-generation report: how many texts passed, where, and why the others failed."""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mmrbench.textgen.verify import REASON_TEXT, REASONS, Verdict


@dataclass
class TextgenReport:
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return self.data["overall"]["kept"]

    @property
    def total(self) -> int:
        return self.data["overall"]["total"]

    @property
    def reasons(self) -> dict[str, int]:
        return self.data["reasons"]

    def to_json(self) -> dict[str, Any]:
        return self.data

    def write(self, path: str | os.PathLike) -> None:
        p = Path(path)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, p)

    def render(self) -> str:
        from tabulate import tabulate

        d = self.data
        rows = [["overall", "", *_cells(d["overall"])]]
        rows += [["subdataset", k, *_cells(v)] for k, v in d["by_subdataset"].items()]
        rows += [["label", k, *_cells(v)] for k, v in d["by_label"].items()]
        rows += [["anomaly type", k, *_cells(v)] for k, v in d["by_anomaly_type"].items()]
        parts = [f"reasoning texts by {d['generator']}: {d['overall']['kept']}/{d['overall']['total']} kept",
                 tabulate(rows, headers=["group", "name", "answered", "kept", "pass rate"], tablefmt="simple")]
        rej = [[r, REASON_TEXT.get(r, r), n] for r, n in d["reasons"].items() if n]
        if rej:
            parts.append(tabulate(rej, headers=["rejected", "why", "count"], tablefmt="simple"))
        if d.get("skipped"):
            parts.append("skipped: " + ", ".join(f"{k} {v}" for k, v in d["skipped"].items()))
        if d.get("frame_mismatches"):
            parts.append(f"warning: for {d['frame_mismatches']} requests the adapter sent the query at another size "
                         "than the hint's coordinates were written for: the adapter does not publish its resize rule "
                         "(give it a sent_size(size) method); such texts are marked frame_mismatch")
        if d.get("pending"):
            parts.append(f"not answered yet: {d['pending']} (run the same command again to resume)")
        neg = d.get("negatives")
        if neg:
            line = f"negatives: {neg['kept']}/{neg['total']} kept"
            bad = ", ".join(f"{k} {v}" for k, v in neg["reasons"].items() if v)
            parts.append(line + (f" (rejected: {bad})" if bad else ""))
        parts.append(f"output: {d['output']['manifest']}")
        return "\n\n".join(parts)


def _cells(g: dict) -> list:
    return [g["total"], g["kept"], f"{100 * g['pass_rate']:.1f}%"]


def _group(total: int, kept: int) -> dict:
    return {"total": total, "kept": kept, "pass_rate": kept / total if total else 0.0}


def build_report(jobs: Sequence, verdicts: dict[str, Verdict], *, skipped: Sequence, model: Any, generator: str,
                 manifest: Any, out: Path, raw: Path, out_sha256: str, opts: Any, similarity: Any) -> TextgenReport:
    """The report of one textgen run; ``generator`` names the model (``provider:model_id``) and ``raw``
    is the file of raw answers (both given by the caller, so this module needs nothing of generate's)."""
    from mmrbench.provenance import harness_info, now_iso
    from mmrbench.prompts import PROMPT_VERSION

    pos = [j for j in jobs if j.kind == "positive"]
    neg = [j for j in jobs if j.kind == "negative"]
    answered = [j for j in pos if j.rid in verdicts]
    tot: Counter = Counter()
    kept: Counter = Counter()
    # a rejected verdict names its first failed check; None would be counted as is (never expected)
    reasons: Counter[str | None] = Counter({r: 0 for r in REASONS})
    rejections = []
    for j in answered:
        v = verdicts[j.rid]
        s = j.sample
        keys = [("subdataset", s.subdataset), ("label", s.label)] + [
            ("anomaly_type", t) for t in sorted({b.label for b in s.boxes if b.label})]
        for k in keys:
            tot[k] += 1
            kept[k] += v.kept
        tot["all"] += 1
        kept["all"] += v.kept
        if not v.kept:
            reasons[v.reason] += 1
            rejections.append({"id": s.id, **v.to_json()})

    def groups(kind: str) -> dict:
        names = sorted(k[1] for k in tot if isinstance(k, tuple) and k[0] == kind)
        return {n: _group(tot[(kind, n)], kept[(kind, n)]) for n in names}

    neg_reasons: Counter[str | None] = Counter({r: 0 for r in ("api_error", "no_answer", "wrong_decision", "hint_leak")})
    neg_answered = [j for j in neg if j.rid in verdicts]
    neg_rejections = []
    for j in neg_answered:
        v = verdicts[j.rid]
        if not v.kept:
            neg_reasons[v.reason] += 1
            neg_rejections.append({"id": j.rid, **v.to_json()})
    desc = model.describe() if hasattr(model, "describe") else {}
    data: dict[str, Any] = {
        "generator": generator,
        "model": {k: v for k, v in desc.items() if "key" not in k.lower() or k == "api_key_env"},
        "convention": getattr(model, "convention", None),
        "prompt_version": PROMPT_VERSION,
        "sampling": opts.config.to_json(),
        "thresholds": {"iou": opts.iou_threshold, "label_similarity": opts.sim_threshold},
        "similarity_model": getattr(similarity, "model_name", None) if similarity is not None else None,
        "input": {"manifest": str(manifest.path), "sha256": manifest.sha256},
        "output": {"manifest": str(out), "sha256": out_sha256, "raw": str(raw)},
        "overall": _group(tot["all"], kept["all"]),
        "by_subdataset": groups("subdataset"),
        "by_label": groups("label"),
        "by_anomaly_type": groups("anomaly_type"),
        "reasons": dict(reasons),
        "pending": len(pos) - len(answered),
        "frame_mismatches": sum(1 for j in answered if verdicts[j.rid].frame_mismatch),
        "skipped": {"anomalous without boxes": len(skipped)} if skipped else {},
        "rejections": rejections,
        "harness": harness_info(),
        "date": now_iso(),
    }
    if neg:
        data["negatives"] = {"total": len(neg_answered), "kept": sum(verdicts[j.rid].kept for j in neg_answered),
                             "requested": len(neg), "reasons": dict(neg_reasons), "rejections": neg_rejections}
    return TextgenReport(data)
