"""Can the mini model use the reference + query pair, and can it say where? Three checks, no training run.

    python benchmarks/mini_pair_probe.py --model DIR --manifest DATA/mini_fit.jsonl [--adapter RUN] [--n 60]

``DIR`` is a mini model folder written by ``benchmarks/mini_anomaly_r1.py`` / ``table5_mini.py``
(``model-v3-...``); ``--adapter`` an SFT/GRPO run on it (its trained modules, e.g. the vision
tower, are used). Use a *training* manifest (``mini_fit.jsonl``/``mini_train.jsonl``), never the
held-out one: this is a diagnostic, and a diagnostic read on held-out images is tuning on them.

1. **Are the two images told apart?** Qwen2.5-VL gives image tokens 3-D rope positions (t, h, w).
   The probe prints, per image of the paper's prompt (reference first, query second), the range of
   each component and whether corresponding patches (same row/column) of the two images differ by
   one constant offset in all three components -- the condition for attention to match a query
   patch with the reference patch at the same place through relative positions alone.
2. **Does the vision tower make the pair informative?** Per merged image token (8x8 px at 128 px),
   an anomaly score either from the pair, ``||f_query - f_reference||`` at the same position, or from
   the query alone, ``||f_query - median over the query's own tokens||``. It prints the AUROC of
   defect tokens (overlapping a ground-truth box) against the other tokens of anomalous images, and
   the image-level AUROC (max token score, anomalous vs normal) of both scores. If the pair score is
   not better than the query's own, the reference adds nothing the language model could use
   without learning invariances the vision features lack.
3. **Do the query's image tokens know where they are?** To write a box the model must turn "this
   token is the defect" into its row and column. Qwen2.5-VL's vision tower uses relative (rotary)
   positions only, so its features need not carry a token's place; the language model can build it
   from its 3-D rope positions. The probe fits a ridge regression from each layer's hidden state of the
   query's image tokens (layer 0 = the vision features as the language model receives them) to the
   token's row and column (fitted on half the images, R^2 on the other half; 0 = no information,
   1 = exact). Low R^2 at every layer means no layer can read a defect token's place off its state.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def auroc(pos: list[float], neg: list[float]) -> float:
    """Probability that a positive scores above a negative (ties count half): Mann-Whitney U / (n+ n-)."""
    if not pos or not neg:
        return float("nan")
    allv = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    ranks = [0.0] * len(allv)
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1][0] == allv[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    r_pos = sum(r for r, (_, lab) in zip(ranks, allv) if lab)
    n1, n0 = len(pos), len(neg)
    return (r_pos - n1 * (n1 + 1) / 2) / (n1 * n0)


def ridge_r2(fit, test, lam: float = 1.0) -> list[float]:
    """R^2 on ``test`` of a ridge regression fitted on ``fit`` (each a (features, targets) pair),
    one figure per target column; features standardised with the fit set's statistics."""
    import torch

    (x, y), (xt, yt) = fit, test
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    x, xt = (x - mu) / sd, (xt - mu) / sd
    x = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    xt = torch.cat([xt, torch.ones(len(xt), 1)], 1).double()
    reg = lam * torch.eye(x.shape[1], dtype=torch.float64)
    reg[-1, -1] = 0  # the bias is not shrunk
    w = torch.linalg.solve(x.T @ x + reg, x.T @ y.double())
    pred = xt @ w
    yt = yt.double()
    sse = ((pred - yt) ** 2).sum(0)
    sst = ((yt - yt.mean(0)) ** 2).sum(0).clamp_min(1e-12)
    return (1 - sse / sst).tolist()


def image_spans(input_ids, image_token_id: int) -> list[tuple[int, int]]:
    """(start, end) of each run of image placeholder tokens in one row."""
    ids = input_ids.tolist()
    spans, i = [], 0
    while i < len(ids):
        if ids[i] == image_token_id:
            j = i
            while j < len(ids) and ids[j] == image_token_id:
                j += 1
            spans.append((i, j))
            i = j
        else:
            i += 1
    return spans


def probe(model_dir: Path, manifest: Path, adapter: Path | None, n: int) -> dict:
    import torch
    import transformers

    from mmrbench.adapters.hf_inputs import load_processor
    from mmrbench.data.manifest import read_manifest
    from mmrbench.train.collate import prompt_inputs
    from mmrbench.train.data import build_messages

    model = transformers.AutoModelForImageTextToText.from_pretrained(str(model_dir))
    if adapter is not None:
        import peft

        model = peft.PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.eval()
    proc = load_processor(model_dir)
    m = read_manifest(manifest)
    pool = [s for s in m.samples if s.reference]
    # half anomalous, half normal (manifests list one class after the other)
    samples = [s for s in pool if s.is_anomalous][: n - n // 2] + [s for s in pool if not s.is_anomalous][: n // 2]
    inner = model.model
    img_tok = model.config.image_token_id
    merge = inner.visual.spatial_merge_size
    tok_pos, tok_neg, tok_pos_self, tok_neg_self = [], [], [], []
    layer_feats: list[list] = []  # per image: [layer] -> (tokens, hidden) of the query's image tokens
    places: list = []  # per image: (tokens, 2) row, column of each token, as fractions of the grid
    img_pair, img_self = {True: [], False: []}, {True: [], False: []}
    rope_report = None
    with torch.no_grad():
        for s in samples:
            inp = prompt_inputs(proc, build_messages(s, m.root, "default"))
            grid = inp["image_grid_thw"]
            if rope_report is None:
                kw = {k: inp[k] for k in ("mm_token_type_ids",) if k in inp}
                pos, _ = inner.get_rope_index(inp["input_ids"], image_grid_thw=grid,
                                              attention_mask=inp["attention_mask"], **kw)
                spans = image_spans(inp["input_ids"][0], img_tok)
                rng = [[(int(pos[c, 0, a:b].min()), int(pos[c, 0, a:b].max())) for c in range(3)] for a, b in spans]
                (a1, b1), (a2, b2) = spans[:2]
                diff = pos[:, 0, a2:b2] - pos[:, 0, a1:b1]
                rope_report = {"images": len(spans), "ranges_thw": rng,
                               "constant_offset": bool((diff == diff[:, :1]).all()),
                               "offset": diff[:, 0].tolist()}
            hidden = model(**inp, output_hidden_states=True).hidden_states
            a_q, b_q = image_spans(inp["input_ids"][0], img_tok)[1]
            layer_feats.append([h[0, a_q:b_q].float() for h in hidden])
            feats = inner.get_image_features(inp["pixel_values"], grid).pooler_output
            ref, qry = feats[0], feats[1]
            gh, gw = int(grid[1, 1]) // merge, int(grid[1, 2]) // merge
            rows = torch.arange(gh * gw) // gw
            places.append(torch.stack([rows / max(1, gh - 1), (torch.arange(gh * gw) % gw) / max(1, gw - 1)], 1))
            pair = (qry - ref).norm(dim=-1)
            own = (qry - qry.median(dim=0).values).norm(dim=-1)
            # defect mask per merged token: the query is resized to (gw*cell, gh*cell) px
            sx, sy = s.width / gw, s.height / gh
            mask = torch.zeros(gh * gw, dtype=torch.bool)
            for b in s.boxes:
                x0, y0, x1, y1 = b.xyxy
                for r in range(int(y0 // sy), min(gh, int((y1 - 1e-6) // sy) + 1)):
                    for c in range(int(x0 // sx), min(gw, int((x1 - 1e-6) // sx) + 1)):
                        mask[r * gw + c] = True
            if s.is_anomalous and mask.any():
                tok_pos += pair[mask].tolist()
                tok_neg += pair[~mask].tolist()
                tok_pos_self += own[mask].tolist()
                tok_neg_self += own[~mask].tolist()
            img_pair[s.is_anomalous].append(float(pair.max()))
            img_self[s.is_anomalous].append(float(own.max()))
    half = len(samples) // 2
    position_r2 = []
    for layer in range(len(layer_feats[0])):
        fit = torch.cat([f[layer] for f in layer_feats[:half]]), torch.cat(places[:half])
        test = torch.cat([f[layer] for f in layer_feats[half:]]), torch.cat(places[half:])
        position_r2.append([round(v, 3) for v in ridge_r2(fit, test)])
    return {"samples": len(samples), "rope": rope_report,
            "position_r2_row_col_by_layer": position_r2,
            "token_auroc_pair": auroc(tok_pos, tok_neg), "token_auroc_query_only": auroc(tok_pos_self, tok_neg_self),
            "image_auroc_pair": auroc(img_pair[True], img_pair[False]),
            "image_auroc_query_only": auroc(img_self[True], img_self[False])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--manifest", required=True, type=Path)
    ap.add_argument("--adapter", type=Path)
    ap.add_argument("--n", type=int, default=60)
    a = ap.parse_args(argv)
    if a.manifest.name.startswith("mini_eval"):
        print("mini_pair_probe: error: use a training manifest, not the held-out split", file=sys.stderr)
        return 2
    import json

    import torch

    torch.set_num_threads(1)
    print(json.dumps(probe(a.model, a.manifest, a.adapter, a.n), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
