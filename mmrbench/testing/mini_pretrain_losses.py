"""The mini pretraining's dense auxiliary losses: each gives the base a signal on every step that the
grounding text alone gives too rarely (docs/training.md, "A pretrained mini base" and "Where the place is
lost on its way to the box").

* :func:`token_aux_loss`: each image token says whether its cell holds a mark, and where the cell is;
* :func:`coordinate_loss`: the state that writes a box's digit holds that coordinate;
* :func:`attention_loss`: one head looks at the mark while its box is written;
* :func:`value_loss`: that head's output holds the mark's place.

Only the first is on by default (:class:`~mmrbench.testing.mini_pretrain.PretrainConfig`); the others were
measured once each and did not get the column of a mark into the box.
"""
from __future__ import annotations


def token_aux_loss(model, hidden_states, enc, boxes: list[list[tuple[int, int, int, int]]], side: int,
                   layer: int = 0):
    """Dense signal for grounding: each image token's state must say whether its cell holds a mark
    (class-balanced BCE along one fixed direction) and where the cell is (row and column, the SFT
    position loss), so attention can find the mark by content and read its place from the value.

    One image per row, all of one size (``side``), as the pretraining draws them. ``layer``: the decoder
    layer whose outputs are read, through the final norm (0 = the last)."""
    import torch

    from mmrbench.train.token_loss import (QueryTokens, balanced_bce, cell_targets, image_runs, lens_states,
                                           place_directions, place_targets, position_loss)

    grid = merged_grid(model, enc)
    places = place_targets(grid)
    queries = [QueryTokens(r, image_runs(enc["input_ids"][r], model.config.image_token_id)[0],
                           cell_targets(grid, (side, side), b), places) for r, b in enumerate(boxes)]
    h = lens_states(model, hidden_states, layer, queries, "pretraining token loss; PretrainConfig.token_layer")
    mark_dir = place_directions(h.shape[-1], seed=1)[:, 0]  # a third fixed direction, apart from the place pair
    mark = (h @ mark_dir.to(h.dtype)).float()
    return (balanced_bce(mark, torch.cat([q.targets for q in queries]).to(mark.device))
            + position_loss(model, hidden_states, layer, queries))


def merged_grid(model, enc) -> tuple[int, int]:
    """(rows, columns) of merged image tokens of the images of ``enc`` (all of one size)."""
    merge = model.config.vision_config.spatial_merge_size
    _, gh, gw = (int(v) for v in enc["image_grid_thw"][0])
    return gh // merge, gw // merge


def coordinate_targets(tokenizer, answer_ids: list[int], side: int, cells: int) -> dict[str, list]:
    """For each token that spells a box coordinate in the answer ``answer_ids``: its index among them
    (``index``), the ordinal of its box in the answer (``box``), the axis its number lies on (``axis``:
    0 = y, read along the row direction; 1 = x, the column direction) and the number on the scale :func:`~mmrbench.train.token_loss.place_targets` gives
    the image tokens (``value``: cell centres at -1 ... 1), so a state that copies a token's place
    through attention already holds the right value.

    Numbers are read from the text the tokens spell, four per ``[...]`` box (x1, y1, x2, y2), and mapped
    back to the tokens that cover their characters, so the tokenizer's merges need no assumption."""
    from mmrbench.train.token_loss import box_digits

    cell = side / cells
    out: dict[str, list] = {"index": [], "axis": [], "value": [], "box": []}
    for t, ordinal, k, number in box_digits(tokenizer, answer_ids):
        out["index"].append(t)
        out["axis"].append(1 - k % 2)
        out["value"].append((number / cell - 0.5) / max(1, cells - 1) * 2 - 1)
        out["box"].append(ordinal)
    return out


def coordinate_loss(last_states, n_prompt: int, targets: list[dict[str, list]]):
    """Mean squared error between the states that *predict* each coordinate digit (one position before
    it) read along :func:`~mmrbench.train.token_loss.place_directions` and the coordinate's value
    (:func:`coordinate_targets`, one per row; the answer starts at ``n_prompt`` in every row). Zero
    without boxes.

    Why: the language-model loss alone leaves a base that sees marks but writes the same numbers for
    each (docs/training.md); this asks the writing state for the place it must copy from the marked
    tokens, the kind of dense signal that taught the base to see in the first place. Measured, at weight 1
    it made the base worse (docs/training.md, "Writing the place"); it is off by default."""
    import torch

    from mmrbench.train.token_loss import place_directions

    rows = [r for r, t in enumerate(targets) for _ in t["index"]]
    pos = [n_prompt + i - 1 for t in targets for i in t["index"]]
    if not pos:
        return last_states.sum() * 0.0
    h = last_states[torch.tensor(rows), torch.tensor(pos)]
    proj = (h @ place_directions(h.shape[-1]).to(h.device, h.dtype)).float()
    axis = torch.tensor([a for t in targets for a in t["axis"]])
    target = torch.tensor([v for t in targets for v in t["value"]], dtype=torch.float32, device=proj.device)
    return torch.nn.functional.mse_loss(proj[torch.arange(len(pos)), axis], target)


def attention_loss(attention, enc, image_token_id: int, grid: tuple[int, int], side: int,
                   boxes: list[list[tuple[int, int, int, int]]], n_prompt: int, targets: list[dict[str, list]]):
    """Mean of ``-log`` (attention mass on the mark's image tokens) of the first head of one decoder layer
    (``attention``: batch x heads x queries x keys), at every position that predicts a digit of a box.

    The box-writing state is what must find the mark: a probe of the pretrained base found its state
    before ``x1`` holds no linear trace of the mark's x (R^2 about 0; docs/training.md), though the image
    tokens hold both their own place and whether they are marked. This asks one head to look where the
    mark is, so its output carries what the marked tokens hold; the other heads stay free. The mark's
    tokens are the cells its box overlaps (:func:`~mmrbench.train.token_loss.cell_targets`); ``targets``
    come from :func:`coordinate_targets` (one per row, with the box ordinals of ``boxes``'s order, the
    order :func:`grounding_text` writes). Zero without boxes."""
    from mmrbench.train.token_loss import cell_targets, image_runs, look_loss

    looks = []
    for r, t in enumerate(targets):
        if not t["index"]:
            continue
        image = image_runs(enc["input_ids"][r], image_token_id)[0]
        marks = [image[cell_targets(grid, (side, side), [b]) > 0] for b in boxes[r]]
        looks += [(r, n_prompt + i - 1, marks[k]) for i, k in zip(t["index"], t["box"], strict=True) if k < len(marks)]
    return look_loss(attention[:, 0], looks)


def value_loss(head_states, n_prompt: int, targets: list[dict[str, list]],
               boxes: list[list[tuple[int, int, int, int]]], side: int, grid: tuple[int, int]):
    """Mean squared error between one head's output (``head_states``: batch x positions x head_dim, before
    the output projection) read along :func:`~mmrbench.train.token_loss.place_directions` of the head's
    size and the centre of the box being written (row, column on the scale of
    :func:`~mmrbench.train.token_loss.place_targets`), at every position that predicts one of its digits.

    Why: with :func:`attention_loss` the head looks at the mark, and the mark's tokens hold their column
    (correlation 0.91), yet the head's value projection drops it: R^2 of the mark's x from the head's
    values and from its output at the writer is about 0 (docs/training.md). This asks the value path
    to carry the place. Zero without boxes."""
    import torch

    from mmrbench.train.token_loss import place_directions

    rows, cols = grid
    rs, ps, want = [], [], []
    for r, t in enumerate(targets):
        for i, k in zip(t["index"], t["box"], strict=True):
            if k >= len(boxes[r]):
                continue
            x1, y1, x2, y2 = boxes[r][k]
            centre = [((y1 + y2) / 2 * rows / side - 0.5) / max(1, rows - 1), ((x1 + x2) / 2 * cols / side - 0.5) / max(1, cols - 1)]
            rs.append(r)
            ps.append(n_prompt + i - 1)
            want.append([2 * v - 1 for v in centre])
    if not rs:
        return head_states.sum() * 0.0
    h = head_states[torch.tensor(rs), torch.tensor(ps)]
    proj = (h @ place_directions(h.shape[-1]).to(h.device, h.dtype)).float()
    return torch.nn.functional.mse_loss(proj, torch.tensor(want, dtype=torch.float32, device=proj.device))
