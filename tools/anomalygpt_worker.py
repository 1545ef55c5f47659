#!/usr/bin/env python
"""AnomalyGPT worker for mmrbench: run it with the AnomalyGPT environment's Python.

AnomalyGPT (Gu et al., AAAI 2024; github.com/CASIA-IVA-Lab/AnomalyGPT) pins torch 1.13 and
transformers 4.29, so mmrbench talks to it through this worker over stdin/stdout, one JSON object
per line (protocol ``mmrbench-anomalygpt/1``, specified in docs/local-models.md):

    ready  -> {"ready": true, "protocol": "mmrbench-anomalygpt/1", "model": ..., "map_size": [224, 224]}
    request <- {"id", "query_image", "reference_image" (path or null), "prompt",
                optional "max_new_tokens", "temperature", "top_p", "seed", "map_dir"}
    reply  -> {"id", "text", "anomaly_map": {"dtype": "float16", "shape": [224, 224], "data": base64},
               "error": null}
    {"cmd": "shutdown"} or end of input -> exit

What it calls in the AnomalyGPT checkout (``--root``, the folder holding ``code/``):

1. ``sys.path`` gets ``<root>/code``; ``from model.openllama import OpenLLAMAPEFTModel``;
2. ``OpenLLAMAPEFTModel(model='openllama_peft', imagebind_ckpt_path=..., vicuna_ckpt_path=...,
   anomalygpt_ckpt_path=..., delta_ckpt_path=..., stage=2, max_tgt_len=..., lora_r=32, lora_alpha=32,
   lora_dropout=0.1)``, then ``load_state_dict(..., strict=False)`` of the PandaGPT delta checkpoint
   and of the AnomalyGPT checkpoint, ``.eval().half().cuda()`` -- as the checkout's test scripts do;
3. per request ``model.generate({'prompt', 'image_paths': [query], 'normal_img_paths': [reference]
   or [], 'audio_paths': [], 'video_paths': [], 'thermal_paths': [], 'top_p', 'temperature',
   'max_tgt_len', 'modality_embeds': []})``, which returns ``(text, pixel_output)``; the anomaly map
   is ``pixel_output`` reshaped to 224x224.

What AnomalyGPT does that the harness must know (read in its repository, commit f21c51b, Dec 2023):

* frame: ``generate`` loads images with ImageBind's ``load_and_transform_vision_data`` (``code/model/
  ImageBind/data.py``): shorter side resized to 224 (bicubic), then a 224x224 centre crop; only
  ``web_demo=True`` squashes to 224x224 instead. The map therefore covers the central square of a
  non-square query; the harness places it there (or pads the query to square first).
* map meaning: without a reference the map is a softmax probability; with one it is 1 - cosine
  similarity of patch tokens (``extract_multimodal_feature``), not a probability.
* sampling: ``generate`` calls ``llama_model.generate(..., do_sample=True)`` unconditionally and sets
  no seed, so greedy decoding is not available and repeated runs differ. This worker seeds torch per
  request (``seed``) so a run can be repeated; transformers rejects ``temperature <= 0`` and ``top_p``
  outside [0, 1] when sampling, and so does this worker (before the model is called).

Protocol output goes to the real stdout only; everything else printed by the model code is sent to
stderr, so a chatty library cannot break the framing. Checkpoints are loaded with
``torch.load(weights_only=True)`` unless ``--unsafe-load`` is given (only for files you trust).

Usage (from the mmrbench side):
    mmrbench eval --model "anomalygpt:/envs/agpt/bin/python /path/to/mmrbench/tools/anomalygpt_worker.py \
        --root /opt/AnomalyGPT" --data ...
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import traceback

PROTOCOL = "mmrbench-anomalygpt/1"
MAP_SIZE = 224
#: what the ready line tells the harness about the engine (see the module docstring)
READY_INFO = {"frame": "resize-shorter-224-centre-crop", "sampling": "always"}


def encode_map(arr):
    """float16 little-endian raw bytes, base64: the protocol's inline anomaly map."""
    import numpy as np

    a = np.ascontiguousarray(np.asarray(arr, dtype="<f2"))
    return {"dtype": "float16", "shape": [int(a.shape[0]), int(a.shape[1])],
            "data": base64.b64encode(a.tobytes()).decode("ascii")}


def serve(backend, infile, outfile, info=None):
    """The protocol loop. ``backend(query, reference, prompt, params) -> (text, map HxW)``.

    Returns the number of requests answered. One bad request is answered with an error; the loop
    goes on.
    """
    def send(obj):
        outfile.write(json.dumps(obj) + "\n")
        outfile.flush()

    ready = {"ready": True, "protocol": PROTOCOL, "map_size": [MAP_SIZE, MAP_SIZE], "pid": os.getpid()}
    ready.update(info or {})
    send(ready)
    answered = 0
    for line in infile:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError:
            send({"id": None, "text": None, "anomaly_map": None, "error": "request is not valid JSON"})
            continue
        if not isinstance(req, dict):
            send({"id": None, "text": None, "anomaly_map": None, "error": "request is not a JSON object"})
            continue
        if req.get("cmd") == "shutdown":
            break
        rid = req.get("id")
        try:
            query = req["query_image"]
            if not isinstance(query, str) or not os.path.isfile(query):
                raise ValueError("query_image is not a readable file: %r" % (query,))
            ref = req.get("reference_image")
            if ref is not None and not os.path.isfile(ref):
                raise ValueError("reference_image is not a readable file: %r" % (ref,))
            params = check_params(req)
            text, amap = backend(query, ref, req.get("prompt") or "", params)
            send({"id": rid, "text": text, "anomaly_map": None if amap is None else encode_map(amap), "error": None})
        except Exception as exc:  # noqa: BLE001 - answer with the error, keep serving
            traceback.print_exc(file=sys.stderr)
            send({"id": rid, "text": None, "anomaly_map": None, "error": "%s: %s" % (type(exc).__name__, exc)})
        answered += 1
    return answered


def check_params(req):
    """The sampling fields of a request, checked as transformers' sampling warpers check them
    (AnomalyGPT always samples): temperature > 0, 0 <= top_p <= 1, max_new_tokens >= 1, integer seed."""
    params = {k: req[k] for k in ("max_new_tokens", "temperature", "top_p", "seed") if req.get(k) is not None}
    t = params.get("temperature")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0):
        raise ValueError("temperature (=%r) has to be a strictly positive float: AnomalyGPT always samples" % (t,))
    p = params.get("top_p")
    if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1):
        raise ValueError("top_p has to be in [0, 1], got %r" % (p,))
    n = params.get("max_new_tokens")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError("max_new_tokens has to be a positive integer, got %r" % (n,))
    seed = params.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63):
        raise ValueError("seed has to be a non-negative integer, got %r" % (seed,))
    return params


def load_state(torch, path, unsafe):
    if unsafe:
        return torch.load(path, map_location="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        raise SystemExit("this torch cannot load checkpoints safely (no weights_only); pass --unsafe-load "
                         "if you trust %s" % path)


def anomalygpt_backend(args):
    """Build AnomalyGPT as its own test scripts do and return the per-request callable."""
    code = os.path.join(os.path.abspath(args.root), "code")
    if not os.path.isdir(os.path.join(code, "model")):
        raise SystemExit("%s does not look like an AnomalyGPT checkout (no code/model/)" % args.root)
    sys.path.insert(0, code)
    os.chdir(code)  # the checkout resolves some assets relative to code/
    import torch
    from model.openllama import OpenLLAMAPEFTModel

    cfg = {
        "model": "openllama_peft",
        "imagebind_ckpt_path": args.imagebind_ckpt,
        "vicuna_ckpt_path": args.vicuna_ckpt,
        "anomalygpt_ckpt_path": args.anomalygpt_ckpt,
        "delta_ckpt_path": args.delta_ckpt,
        "stage": 2,
        "max_tgt_len": args.max_tgt_len,
        "lora_r": 32,
        "lora_alpha": 32,
        "lora_dropout": 0.1,
    }
    model = OpenLLAMAPEFTModel(**cfg)
    model.load_state_dict(load_state(torch, args.delta_ckpt, args.unsafe_load), strict=False)
    model.load_state_dict(load_state(torch, args.anomalygpt_ckpt, args.unsafe_load), strict=False)
    model = model.eval()
    model = model.half().cuda() if args.device == "cuda" else model.to(args.device)

    def run(query, reference, prompt, params):
        if params.get("seed") is not None:  # AnomalyGPT samples and seeds nothing: seed here
            torch.manual_seed(int(params["seed"]))
            if torch.cuda.is_available():
                torch.cuda.manual_seed_all(int(params["seed"]))
        with torch.no_grad():
            text, pixel_output = model.generate({
                "prompt": prompt,
                "image_paths": [query],
                "normal_img_paths": [reference] if reference else [],
                "audio_paths": [], "video_paths": [], "thermal_paths": [],
                "top_p": float(params.get("top_p", args.top_p)),
                "temperature": float(params.get("temperature", args.temperature)),
                "max_tgt_len": int(params.get("max_new_tokens", args.max_tgt_len)),
                "modality_embeds": [],
            })
        amap = pixel_output.reshape(MAP_SIZE, MAP_SIZE).float().detach().cpu().numpy()
        return str(text), amap

    return run


def build_parser():
    p = argparse.ArgumentParser(description="AnomalyGPT worker speaking mmrbench's JSON-lines protocol on stdin/stdout.")
    p.add_argument("--root", required=True, help="AnomalyGPT checkout (the folder holding code/)")
    p.add_argument("--imagebind-ckpt", default=None, help="default: <root>/pretrained_ckpt/imagebind_ckpt/imagebind_huge.pth")
    p.add_argument("--vicuna-ckpt", default=None, help="default: <root>/pretrained_ckpt/vicuna_ckpt/7b_v0")
    p.add_argument("--delta-ckpt", default=None, help="default: <root>/pretrained_ckpt/pandagpt_ckpt/7b/pytorch_model.pt")
    p.add_argument("--anomalygpt-ckpt", default=None,
                   help="default: <root>/code/ckpt/train_supervised/pytorch_model.pt")
    p.add_argument("--max-tgt-len", type=int, default=512)
    p.add_argument("--top-p", type=float, default=0.1, help="used when a request sends none (checkout's test scripts: 0.1)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--unsafe-load", action="store_true", help="allow pickled checkpoints (only files you trust)")
    p.add_argument("--device", default="cuda", help="cuda (half precision, as the checkout's scripts) or cpu")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    root = os.path.abspath(args.root)
    args.imagebind_ckpt = args.imagebind_ckpt or os.path.join(root, "pretrained_ckpt/imagebind_ckpt/imagebind_huge.pth")
    args.vicuna_ckpt = args.vicuna_ckpt or os.path.join(root, "pretrained_ckpt/vicuna_ckpt/7b_v0")
    args.delta_ckpt = args.delta_ckpt or os.path.join(root, "pretrained_ckpt/pandagpt_ckpt/7b/pytorch_model.pt")
    args.anomalygpt_ckpt = args.anomalygpt_ckpt or os.path.join(root, "code/ckpt/train_supervised/pytorch_model.pt")
    protocol_out = sys.stdout
    sys.stdout = sys.stderr  # everything the model code prints goes to stderr
    backend = anomalygpt_backend(args)
    serve(backend, sys.stdin, protocol_out, info=dict(READY_INFO, model="AnomalyGPT-7B", checkpoint=args.anomalygpt_ckpt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
