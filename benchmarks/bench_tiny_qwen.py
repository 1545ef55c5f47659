"""Time the tiny Qwen2.5-VL: build, load, generate with two images, LoRA forward + backward (CPU).

    python benchmarks/bench_tiny_qwen.py [--threads 1] [--repeat 5]

Prints medians in milliseconds. Targets (DESIGN.md): build < 2 s, generate and a LoRA step well
under a second.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def median_ms(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()

    t0 = time.perf_counter()
    import numpy as np
    import peft
    import torch
    from PIL import Image

    from mmrbench.adapters.base import ImagePart, Message, TextPart
    from mmrbench.adapters.hf_inputs import chat_messages, encode, language_lora_targets
    from mmrbench.testing.tiny_qwen import build_tiny_qwen25vl, load_tiny
    import_ms = (time.perf_counter() - t0) * 1000
    torch.set_num_threads(args.threads)

    tmp = tempfile.mkdtemp()
    build = median_ms(lambda: build_tiny_qwen25vl(f"{tmp}/m", seed=0), args.repeat)
    load = median_ms(lambda: load_tiny(f"{tmp}/m"), args.repeat)
    model, proc = load_tiny(f"{tmp}/m")
    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)) for _ in range(2)]
    msgs = [Message("system", "You inspect products."),
            Message("user", [ImagePart(ims[0]), ImagePart(ims[1]), TextPart("Is there an anomaly? " * 20)])]
    batch = encode(proc, [chat_messages(msgs)])
    n_prompt = int(batch["input_ids"].shape[1])

    def gen():
        with torch.inference_mode():
            model.generate(**batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)

    gen()
    generate = median_ms(gen, args.repeat)

    lm = peft.get_peft_model(load_tiny(f"{tmp}/m")[0], peft.LoraConfig(r=8, lora_alpha=16,
                                                                       target_modules=language_lora_targets(model)))
    conv, _ = chat_messages(msgs, answer="<think>The surface is uniform.</think><answer>No.</answer>", embed_images=True)
    enc = proc.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                   return_tensors="pt")
    mask = enc.pop("assistant_masks").bool()
    labels = torch.where(mask, enc["input_ids"], torch.full_like(enc["input_ids"], -100))

    def step():
        lm.zero_grad()
        lm(**enc, labels=labels).loss.backward()

    step()
    lora_step = median_ms(step, args.repeat)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny Qwen2.5-VL: {n_params} parameters, threads={args.threads}")
    print(f"imports            {import_ms:8.1f} ms (once per process)")
    print(f"build (save)       {build:8.1f} ms")
    print(f"load               {load:8.1f} ms")
    print(f"generate           {generate:8.1f} ms  ({n_prompt} prompt tokens incl. 2x64 image tokens, "
          f"{args.new_tokens} new tokens)")
    print(f"LoRA fwd+bwd step  {lora_step:8.1f} ms")


if __name__ == "__main__":
    main()
