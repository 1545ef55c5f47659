"""Grounding pretraining of the mini base, on its own: how well a setting makes the base see and place marks.

    python benchmarks/mini_pretrain_check.py --out /tmp/ptc --steps 1500 --token-layer 2 [--seed 0]
    python benchmarks/mini_pretrain_check.py --probe BASE_DIR     # the writer probe alone, on a saved base
    python benchmarks/mini_pretrain_check.py --init BASE_DIR --out /tmp/ptc2 --steps 1000 --curriculum 0 ...  # continue

Builds the random mini base that ``table5_mini.py --layers 4`` builds (same data, tokenizer and seed),
pretrains it with :class:`mmrbench.testing.mini_pretrain.PretrainConfig` as the flags say, and prints the
grounding check (:func:`~mmrbench.testing.mini_pretrain.grounding_eval`: presence, marks found at IoU 0.1 /
0.5) every ``--eval-every`` steps on 32 fresh images and at the end on ``--eval-n``. Only generated marks
are read, never the benchmark's held-out split, so settings can be chosen here.

The *writer probe* (printed at the end, or alone with ``--probe``) asks whether the state that writes a box
knows where the mark is: on images with one mark and their answer teacher-forced, a ridge regression from
the hidden state just before ``x1``'s first digit (each layer) to the mark's centre x and y, fitted on two
thirds and scored (R^2) on the rest, with the share of first digits the model predicts right and, at that
position, each layer's attention mass on the mark's image tokens (head 0, the one ``--attn-aux`` supervises,
and the head that puts most there), and R^2 of the mark's x from head 0's output there (before each
layer's output projection). It also asks whether the image tokens hold their column where the
position loss asks for it (along its fixed direction, through the final norm): the correlation of that
reading with the column for all image tokens, and for the mark's tokens (their mean against the mark's x). The report (losses and
checks) is written to ``--out``/report.json, the base with ``--save`` to ``--out``/model; nothing is cached,
every run trains.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def writer_probe(model, proc, side: int, n: int = 240, seed: int = 5, ridge: float = 10.0) -> dict:
    """R^2 by layer of the mark's centre (x, y) read from the state that predicts ``x1``'s first digit."""
    import numpy as np
    import torch
    from PIL import Image

    from mmrbench.testing.mini_pretrain import grounding_example, grounding_prompt, grounding_text
    from mmrbench.testing.mini_pretrain_losses import merged_grid
    from mmrbench.train.token_loss import cell_targets, image_runs, place_directions, place_targets

    rng = np.random.default_rng([seed, 99])  # neither the training ([seed, 7]) nor the check's stream
    prompt = grounding_prompt(proc)
    states: list[list[np.ndarray]] = []
    centres, right, head0, best = [], [], [], []
    column = place_directions(model.config.text_config.hidden_size)[:, 1]
    all_cols: list[list[float]] = []  # per image, per layer: correlation of all image tokens' reading with their column
    mark_cols: list[list[float]] = []  # per image, per layer: the mark tokens' mean reading
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")  # the only implementation that returns attention weights
    model.eval()
    decoder_layers = model.get_decoder().layers
    head_dim = model.config.text_config.hidden_size // model.config.text_config.num_attention_heads
    head_out: dict[int, torch.Tensor] = {}
    hooks = [layer.self_attn.o_proj.register_forward_pre_hook(
        lambda _m, args, k=k: head_out.__setitem__(k, args[0][..., :head_dim])) for k, layer in enumerate(decoder_layers)]
    heads: list[list[np.ndarray]] = []
    while len(centres) < n:
        img, boxes = grounding_example(rng, side)
        if len(boxes) != 1:
            continue
        enc = proc(text=[prompt + grounding_text(boxes) + "<|im_end|>"], images=[Image.fromarray(img)],
                   return_tensors="pt")
        ids = enc["input_ids"][0].tolist()
        n_prompt = len(proc(text=[prompt], images=[Image.fromarray(img)])["input_ids"][0])
        pieces = [proc.tokenizer.decode([i]) for i in ids[n_prompt:]]
        first = int(np.searchsorted(np.cumsum([0] + [len(p) for p in pieces]), "".join(pieces).index("[") + 1,
                                    side="right")) - 1  # the token that spells x1's first digit
        with torch.no_grad():
            out = model(**enc, output_hidden_states=True, output_attentions=True)
        image = image_runs(enc["input_ids"][0], model.config.image_token_id)[0]
        mark = image[cell_targets(merged_grid(model, enc), (side, side), boxes) > 0]
        mass = [a[0, :, n_prompt + first - 1, mark].sum(-1) for a in out.attentions]  # per layer, per head
        head0.append([float(m[0]) for m in mass])
        places = place_targets(merged_grid(model, enc))[:, 1].numpy()
        readings = [((model.get_decoder().norm(h[0, image]) if k < len(out.hidden_states) - 1 else h[0, image])
                     @ column).detach().float().numpy() for k, h in enumerate(out.hidden_states)]
        all_cols.append([float(np.corrcoef(r, places)[0, 1]) if r.std() > 0 else 0.0 for r in readings])
        in_mark = (cell_targets(merged_grid(model, enc), (side, side), boxes) > 0).numpy()
        mark_cols.append([float(r[in_mark].mean()) for r in readings])
        best.append([float(m.max()) for m in mass])
        states.append([h[0, n_prompt + first - 1].float().numpy() for h in out.hidden_states])
        heads.append([head_out[k][0, n_prompt + first - 1].float().numpy() for k in range(len(decoder_layers))])
        right.append(int(out.logits[0, n_prompt + first - 1].argmax()) == ids[n_prompt + first])
        x1, y1, x2, y2 = boxes[0]
        centres.append(((x1 + x2) / 2 / side, (y1 + y2) / 2 / side))
    for hook in hooks:
        hook.remove()
    model.set_attn_implementation(impl)
    y = np.asarray(centres)
    fit = slice(0, 2 * n // 3)
    test = slice(2 * n // 3, n)

    def r2(x: np.ndarray, t: np.ndarray) -> float:
        a = x - x[fit].mean(0)
        w = np.linalg.solve(a[fit].T @ a[fit] + ridge * np.eye(a.shape[1]), a[fit].T @ (t[fit] - t[fit].mean()))
        pred = a[test] @ w + t[fit].mean()
        return float(1 - ((pred - t[test]) ** 2).sum() / ((t[test] - t[test].mean()) ** 2).sum())

    layers = len(states[0])
    by_layer = [np.stack([s[k] for s in states]) for k in range(layers)]
    return {"n": n, "x_r2_by_layer": [round(r2(h, y[:, 0]), 3) for h in by_layer],
            "y_r2_by_layer": [round(r2(h, y[:, 1]), 3) for h in by_layer],
            "x1_first_digit_right": float(np.mean(right)),
            "x_r2_head0_output_by_layer": [round(r2(np.stack([h[k] for h in heads]), y[:, 0]), 3)
                                           for k in range(len(decoder_layers))],
            "image_tokens_column_corr_by_layer": [round(float(v), 3) for v in np.mean(all_cols, 0)],
            "mark_tokens_column_corr_by_layer": [round(float(np.corrcoef(np.asarray(mark_cols)[:, k], y[:, 0])[0, 1]), 3)
                                                 if np.asarray(mark_cols)[:, k].std() > 0 else 0.0
                                                 for k in range(len(mark_cols[0]))],
            "attention_on_mark_head0_by_layer": [round(float(v), 3) for v in np.mean(head0, 0)],
            "attention_on_mark_best_head_by_layer": [round(float(v), 3) for v in np.mean(best, 0)]}


def main(argv=None) -> int:
    from mmrbench.testing.mini_pretrain import PretrainConfig

    d = PretrainConfig(0)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/mini_pretrain_check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--image-side", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=d.batch)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--curriculum", type=float, default=d.curriculum)
    ap.add_argument("--token-aux", type=float, default=d.token_aux)
    ap.add_argument("--token-layer", type=int, default=d.token_layer, help="0 = the last decoder layer")
    ap.add_argument("--coord-aux", type=float, default=d.coord_aux, help="weight of the coordinate loss (0 = off)")
    ap.add_argument("--coord-layer", type=int, default=d.coord_layer,
                    help="the decoder layer (1-based) the coordinate loss reads (0 = the last)")
    ap.add_argument("--value-aux", type=float, default=d.value_aux,
                    help="weight of the value loss: the supervised head returns the mark's place (0 = off)")
    ap.add_argument("--attn-aux", type=float, default=d.attn_aux,
                    help="weight of the attention loss: one head looks at the mark while writing its box (0 = off)")
    ap.add_argument("--attn-layer", type=int, default=d.attn_layer, help="its decoder layer, 1-based (0 = the last)")
    ap.add_argument("--rope-theta", type=float, default=None,
                    help="the base's rotary base (rope_parameters.rope_theta; default 10000, the mini base's)")
    ap.add_argument("--init", metavar="BASE_DIR",
                    help="continue from a saved base (another run's --save) instead of a random one "
                         "(with its own rotary base: not with --rope-theta)")
    ap.add_argument("--save", action="store_true", help="save the pretrained base to --out/model (with its processor)")
    ap.add_argument("--train-vision", action="store_true")
    ap.add_argument("--eval-every", type=int, default=300)
    ap.add_argument("--eval-n", type=int, default=64)
    ap.add_argument("--probe", metavar="BASE_DIR", help="only run the writer probe on a saved base")
    a = ap.parse_args(argv)

    import torch
    import transformers

    from mmrbench.adapters.hf_inputs import load_processor
    from mmrbench.testing.mini_pretrain import grounding_eval, run_pretraining

    torch.set_num_threads(a.threads)
    if a.probe:
        probe = writer_probe(transformers.AutoModelForImageTextToText.from_pretrained(a.probe), load_processor(a.probe),
                             a.image_side)
        print(json.dumps(probe))
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.spec_from_file_location("mini", ROOT / "benchmarks" / "mini_anomaly_r1.py")
    assert spec is not None and spec.loader is not None
    mini = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mini)
    train_m, *_ = mini.make_data(out, 0, "large", ["foam", "carpet"], 180)  # table5_mini's data, for its tokenizer
    if a.init and a.rope_theta is not None:
        raise SystemExit("--rope-theta sets a new base's rotary base; a base given with --init keeps its own")
    base = (Path(a.init) if a.init else mini.build_model(out, a.seed, a.image_side, 128, a.layers, train_m, "default",
                                                         None, a.rope_theta or 10000.0))
    model = transformers.AutoModelForImageTextToText.from_pretrained(str(base))
    proc = load_processor(base)
    config = PretrainConfig(a.steps, batch=a.batch, lr=a.lr, curriculum=a.curriculum, token_aux=a.token_aux,
                            train_vision=a.train_vision, token_layer=a.token_layer,
                            coord_aux=a.coord_aux, coord_layer=a.coord_layer, attn_aux=a.attn_aux, attn_layer=a.attn_layer,
                            value_aux=a.value_aux)
    print(f"[{time.strftime('%H:%M:%S')}] {config}", flush=True)
    t0 = time.perf_counter()
    losses = run_pretraining(model, proc, config, side=a.image_side, seed=a.seed, eval_every=a.eval_every,
                             log=lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True))
    check = grounding_eval(model, proc, side=a.image_side, n=a.eval_n, seed=a.seed)
    wall = time.perf_counter() - t0
    probe = writer_probe(model, proc, a.image_side)
    print(f"writer probe: {json.dumps(probe)}")
    print(f"end: presence {check['presence']:.1%}, IoU 0.1 {check['recall_iou01']:.1%}, "
          f"IoU 0.5 {check['recall_iou05']:.1%} on {check['n']} images; {wall / 60:.1f} min; {check['samples']}")
    if a.save:
        model.save_pretrained(out / "model")
        proc.save_pretrained(out / "model")
    (out / "report.json").write_text(json.dumps({"config": vars(a), "check": check, "probe": probe, "wall_s": wall,
                                                 "loss": [round(x, 5) for x in losses]}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
