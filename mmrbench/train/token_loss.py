"""Auxiliary per-token defect loss for SFT (``sft.token_loss_weight``; off by default, not in the paper).

Why: the SFT loss reaches the image only through the few answer tokens, so a small language model
trained from scratch must discover on its own, from one bit per image, that a handful of its
256-512 image tokens decide the answer. This loss gives every image token of the *query* a target:
whether its cell of the image overlaps a ground-truth box. It adds no parameter: the score of a token
is the model's own "Yes" minus "No" logit read at that token (its hidden state after
``token_loss_layer`` decoder layers, through the final norm and the output head, a "logit lens"), so
the direction the answer is read from is the one that learns to mark defects. Positives and negatives
are weighted equally (defects cover 1-3 % of an image).

The auxiliary *position* loss (``sft.position_loss_weight``) asks the same tokens' states to say where
they are: along two fixed directions of the hidden space (seeded, orthonormal, never trained or saved),
their projections should equal the token's row and column scaled to [-1, 1]. Why: a box needs the
defect token's column, and ``benchmarks/mini_pair_probe.py`` measured that a small model's image
tokens carry their row (from the causal mask) but hardly their column (the vision tower's positions are
relative only). It adds no parameter, like the defect loss.

The *attention* loss (``sft.attention_loss_weight``) asks the first head of one decoder layer to look
at the query's defect tokens at every position that predicts a digit of a box in the answer. Why: a
probe of the mini model found that the state writing a box holds no trace of the defect's column
however well the image tokens hold it, and no head looks at the defect there (docs/training.md,
"Where the place is lost on its way to the box"). It reads attention weights, which only
transformers' eager attention returns, so SFT switches the model to it while the loss is on.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mmrbench.errors import ConfigError


@dataclass
class QueryTokens:
    """The query image's tokens of one batch row: their positions and 0/1 defect targets."""

    row: int
    positions: torch.Tensor
    targets: torch.Tensor
    #: (tokens, 2) each token's row and column in the grid, scaled to [-1, 1]
    places: torch.Tensor
    #: (rows, columns) of merged tokens, the size (w, h) the policy sees and the ground-truth boxes in it
    grid: tuple[int, int] = (0, 0)
    sent_size: tuple[int, int] = (0, 0)
    boxes: tuple[tuple[float, float, float, float], ...] = ()


def image_runs(ids: torch.Tensor, image_token_id: int) -> list[torch.Tensor]:
    """Positions of each image's placeholder tokens in one row, in order (one contiguous run each)."""
    pos = (ids == image_token_id).nonzero().flatten()
    if pos.numel() == 0:
        return []
    breaks = (pos[1:] - pos[:-1] != 1).nonzero().flatten() + 1
    return list(torch.tensor_split(pos, breaks.tolist()))


def cell_targets(grid_hw: tuple[int, int], sent_size: tuple[int, int], boxes_sent: Sequence[Sequence[float]]) -> torch.Tensor:
    """Row-major 0/1 target per merged token: 1 where the token's cell of the image (as sent to the
    vision tower) overlaps any box (given in that frame)."""
    rows, cols = grid_hw
    w, h = sent_size
    out = torch.zeros(rows * cols)
    for x0, y0, x1, y1 in boxes_sent:
        c0 = max(0, int(x0 * cols / w))
        c1 = min(cols - 1, int(max(x0, x1 - 1e-6) * cols / w))
        r0 = max(0, int(y0 * rows / h))
        r1 = min(rows - 1, int(max(y0, y1 - 1e-6) * rows / h))
        for r in range(r0, r1 + 1):
            out[r * cols + c0:r * cols + c1 + 1] = 1.0
    return out


def place_targets(grid_hw: tuple[int, int]) -> torch.Tensor:
    """Row-major (row, column) of each merged token, each scaled to [-1, 1] (0 for a one-cell axis)."""
    rows, cols = grid_hw
    r = torch.arange(rows * cols) // cols
    c = torch.arange(rows * cols) % cols
    scale = torch.tensor([max(1, rows - 1), max(1, cols - 1)], dtype=torch.float32)
    return 2 * torch.stack([r, c], 1).float() / scale - torch.tensor([float(rows > 1), float(cols > 1)])


def query_tokens(input_ids: torch.Tensor, image_grid_thw: torch.Tensor, examples: Sequence[Any],
                 image_token_id: int, merge: int) -> list[QueryTokens]:
    """For each row, the last image's tokens (the query: the prompt lists the reference first) with
    targets from the example's ground-truth boxes, scaled to the size the policy sees."""
    out: list[QueryTokens] = []
    k = 0  # index into image_grid_thw: images of all rows, in order
    for row, ex in enumerate(examples):
        runs = image_runs(input_ids[row], image_token_id)
        if not runs:
            continue
        k += len(runs)
        t, gh, gw = (int(v) for v in image_grid_thw[k - 1])
        grid = (gh // merge, gw // merge)
        if t * grid[0] * grid[1] != runs[-1].numel():
            raise ConfigError(f"query image of row {row}: {runs[-1].numel()} tokens but grid {t}x{grid[0]}x{grid[1]}")
        (ow, oh), (sw, sh) = ex.image_size, ex.sent_size
        boxes = [(b.xyxy[0] * sw / ow, b.xyxy[1] * sh / oh, b.xyxy[2] * sw / ow, b.xyxy[3] * sh / oh)
                 for b in ex.sample.boxes]
        targets = cell_targets(grid, (sw, sh), boxes).repeat(t)
        out.append(QueryTokens(row, runs[-1], targets, place_targets(grid).repeat(t, 1), grid, (sw, sh),
                               tuple(boxes)))
    return out


def yes_no_ids(tokenizer: Any) -> tuple[int, int]:
    yes = tokenizer.encode("Yes", add_special_tokens=False)
    no = tokenizer.encode("No", add_special_tokens=False)
    if not yes or not no or yes[0] == no[0]:
        raise ConfigError("the tokenizer does not tell 'Yes' and 'No' apart by their first token")
    return int(yes[0]), int(no[0])


def lens_states(model: Any, hidden_states: Sequence[torch.Tensor], layer: int,
                queries: Sequence[QueryTokens], what: str) -> torch.Tensor:
    """The query tokens' states after ``layer`` decoder layers (0 = the last), through the final norm."""
    n_layers = len(hidden_states) - 1
    layer = layer if layer > 0 else n_layers
    if not 1 <= layer <= n_layers:
        raise ConfigError(f"token loss layer {layer} is outside 1..{n_layers} ({what})")
    h = torch.cat([hidden_states[layer][q.row, q.positions] for q in queries])
    if layer < n_layers:  # the last entry already went through the final norm
        h = model.get_decoder().norm(h)
    return h


@functools.lru_cache(maxsize=8)
def place_directions(hidden: int, seed: int = 0) -> torch.Tensor:
    """Two fixed orthonormal directions (hidden, 2) the position loss reads row and column along
    (computed once per size, not on every micro-batch)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(hidden, 2, generator=g, dtype=torch.float64))
    return q.float()


def position_loss(model: Any, hidden_states: Sequence[torch.Tensor], layer: int,
                  queries: Sequence[QueryTokens]) -> torch.Tensor:
    """Mean squared error between the query tokens' states projected on :func:`place_directions` and
    their (row, column) in [-1, 1]; 0 when the batch has no query image."""
    if not queries:
        return hidden_states[-1].sum() * 0.0
    h = lens_states(model, hidden_states, layer, queries, "position loss; sft.token_loss_layer in SFT")
    proj = (h @ place_directions(h.shape[-1]).to(h.device, h.dtype)).float()
    target = torch.cat([q.places for q in queries]).to(proj.device)
    return torch.nn.functional.mse_loss(proj, target)


def token_loss(model: Any, hidden_states: Sequence[torch.Tensor], layer: int, queries: Sequence[QueryTokens],
               yes_no: tuple[int, int]) -> torch.Tensor:
    """Class-balanced binary cross-entropy of the tokens' Yes-minus-No logit against their targets
    (mean over positive tokens and mean over negative tokens, averaged); 0 when the batch has no
    query image."""
    if not queries:
        return hidden_states[-1].sum() * 0.0
    h = lens_states(model, hidden_states, layer, queries, "defect loss; sft.token_loss_layer")
    weight = model.get_output_embeddings().weight
    direction = (weight[yes_no[0]] - weight[yes_no[1]]).to(h.dtype)
    score = (h @ direction).float()
    return balanced_bce(score, torch.cat([q.targets for q in queries]).to(score.device))


def balanced_bce(score: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of logits against 0/1 targets, the mean over positives and the mean over
    negatives averaged (a defect covers a few tokens of hundreds; a plain mean would ignore it)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(score, target, reduction="none")
    parts = [bce[m].mean() for m in (target > 0.5, target <= 0.5) if bool(m.any())]
    return torch.stack(parts).mean()


def box_digits(tokenizer: Any, ids: Sequence[int], after: str = "") -> list[tuple[int, int, int, int]]:
    """Every token of ``ids`` that spells a digit of a box's number, as (token index, box ordinal, the
    number's place in its box: 0-3 for x1 y1 x2 y2, the number). Boxes are the ``[...]`` lists of the
    text the tokens spell, after the first ``after`` when given (the answer block, not the reasoning);
    numbers are mapped back to the tokens that cover their characters, so a token spelling several
    characters counts for each number it touches and the tokenizer's merges need no assumption."""
    import re

    import numpy as np

    pieces = [tokenizer.decode([int(i)]) for i in ids]
    text = "".join(pieces)
    starts = np.cumsum([0] + [len(p) for p in pieces])  # token t spells text[starts[t]:starts[t + 1]]
    begin = text.find(after) if after else 0
    if begin < 0:
        return []
    out = []
    for ordinal, box in enumerate(re.finditer(r"\[([^\]]*)\]", text[begin:])):
        for k, m in enumerate(re.finditer(r"\d+", box.group(1))):
            lo = begin + box.start(1) + m.start()
            first = int(np.searchsorted(starts, lo, side="right")) - 1
            end = int(np.searchsorted(starts, lo + len(m.group()), side="left"))
            out += [(t, ordinal, k % 4, int(m.group())) for t in range(first, end)]
    return out


def look_loss(head_attention: torch.Tensor, looks: Sequence[tuple[int, int, torch.Tensor]]) -> torch.Tensor:
    """Mean ``-log`` of the attention mass one head (``head_attention``: batch x queries x keys) puts on
    the given keys, over ``looks`` = (row, query position, key positions); 0 when there are none."""
    if not looks:
        return head_attention.sum() * 0.0
    mass = torch.stack([head_attention[r, q, k].sum() for r, q, k in looks])
    return -torch.log(mass.float() + 1e-6).mean()


def answer_looks(input_ids: torch.Tensor, labels: torch.Tensor, tokenizer: Any,
                 queries: Sequence[QueryTokens]) -> list[tuple[int, int, torch.Tensor]]:
    """For :func:`look_loss` in SFT: at each position that predicts a digit of a box in the target's
    ``<answer>`` block, the query image's tokens that box overlaps (boxes in the target's order, the
    sample's). Rows without a query image or a box give none."""
    looks = []
    for q in queries:
        answer = (labels[q.row] != -100).nonzero().flatten()  # collate.IGNORE_INDEX: the prompt
        if answer.numel() == 0 or not q.boxes:
            continue
        start = int(answer[0])
        ids = input_ids[q.row, start:int(answer[-1]) + 1].tolist()
        frames = q.positions.numel() // (q.grid[0] * q.grid[1])
        cells = [q.positions[cell_targets(q.grid, q.sent_size, [b]).repeat(frames) > 0] for b in q.boxes]
        for t, ordinal, _, _ in box_digits(tokenizer, ids, after="<answer>"):
            if ordinal < len(cells):  # the logits at start + t - 1 predict token start + t
                looks.append((q.row, start + t - 1, cells[ordinal]))
    return looks
