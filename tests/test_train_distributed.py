"""Data parallelism: two gloo ranks, each with half the batch, make the same LoRA update as one
rank with the whole batch (SFT step, and a GRPO step with two mini-batch updates)."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
import torch.distributed as tdist  # noqa: E402

if not tdist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed not available", allow_module_level=True)

TEST_DIR = str(Path(__file__).parent)

# fixed completions, so rollouts are identical whatever the rank (sampling is per-rank by design)
FIXED = ["<answer>Yes. {'bbox_2d': [0, 0, 8, 8], 'label': 'hole'}</answer>", "<answer>No.</answer>", "zz"]


def recipes(tiny: str, toy: str):
    from mmrbench.train.recipe import load_recipe

    common = {"model.base": tiny, "data.manifest": toy, "lora.dropout": 0.0}
    sft = load_recipe(None, "sft", {**common, "sft.max_steps": 1, "sft.batch_size": 4, "sft.lr": 1e-2,
                                    "sft.warmup_ratio": 0.0, "sft.micro_batch_size": 1})
    grpo = load_recipe(None, "grpo", {**common, "grpo.max_steps": 1, "grpo.prompt_batch": 4, "grpo.mini_batch": 2,
                                      "grpo.group_size": 3, "grpo.lr": 1e-2, "grpo.warmup_ratio": 0.0,
                                      "grpo.contrastive": False, "grpo.beta": 0.1, "grpo.max_new_tokens": 64})
    return sft, grpo


def fixed_generate(pol, prompt, n, **kw):
    """Stands in for ``mmrbench.train.grpo.generate``: the same completions on every rank."""
    from mmrbench.train.rollout import text_to_completion

    return [text_to_completion(pol, FIXED[i % 3], 64) for i in range(n)]


def train_both(tiny: str, toy: str, out: str, dist, setattr_) -> None:
    """SFT then GRPO; ``setattr_`` installs the fixed rollout (the test's monkeypatch in this process,
    so it is undone after the test and later GRPO tests run the real sampler; plain setattr in a rank)."""
    import mmrbench.train.grpo as grpo_mod
    from mmrbench.train.sft import run_sft

    torch.set_num_threads(1)
    sft, grpo = recipes(tiny, toy)
    run_sft(sft, Path(out) / "sft", dist=dist, progress=False)
    setattr_(grpo_mod, "generate", fixed_generate)
    grpo_mod.run_grpo(grpo, Path(out) / "grpo", dist=dist, progress=False)


def worker(rank: int, world: int, port: int, tiny: str, toy: str, out: str) -> None:
    sys.path.insert(0, TEST_DIR)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from mmrbench.train.distributed import init_from_env

    d = init_from_env("cpu")
    try:
        train_both(tiny, toy, out, d, setattr)  # a rank is its own process and ends here
    finally:
        tdist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_equal_one_rank(tmp_path, monkeypatch):
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    from mmrbench.testing.tiny_qwen import tiny_qwen25vl_dir
    from mmrbench.train.distributed import Dist
    from train_toydata import write_toy_manifest

    tiny = str(tiny_qwen25vl_dir(tmp_path / "cache"))
    toy = str(write_toy_manifest(tmp_path / "toy", n=8))
    # fork (not spawn) saves each rank re-importing torch and transformers; the ranks run before the
    # parent does any torch work of its own, so no OpenMP pool is forked mid-use
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    mp.start_processes(worker, args=(2, free_port(), tiny, toy, str(tmp_path / "two")), nprocs=2, join=True,
                       start_method=method)
    n = torch.get_num_threads()
    try:
        train_both(tiny, toy, str(tmp_path / "one"), Dist(), monkeypatch.setattr)
    finally:
        torch.set_num_threads(n)
    for stage in ("sft", "grpo"):
        one = load_file(str(tmp_path / "one" / stage / "adapter_model.safetensors"))
        two = load_file(str(tmp_path / "two" / stage / "adapter_model.safetensors"))
        assert one.keys() == two.keys()
        moved = 0
        for k in one:
            assert torch.allclose(one[k], two[k], atol=1e-5), (stage, k)
        base = load_file(str(tmp_path / "one" / "sft" / "adapter_model.safetensors")) if stage == "grpo" else None
        if base is not None:
            moved = sum(int(not torch.allclose(base[k], one[k])) for k in one)
            assert moved > 0, "the GRPO step must change the weights for the comparison to mean anything"
