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
        out.append(QueryTokens(row, runs[-1], targets, place_targets(grid).repeat(t, 1)))
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
