"""Model cards and --model spec strings."""
from __future__ import annotations

import json

import pytest

from mmrbench.cards import (card_from_dict, cards_dir, create_model, list_cards, load_card, model_kwargs,
                            parse_spec, with_overrides)
from mmrbench.errors import ConfigError

TABLE4 = {"GPT-4o", "GPT-5", "o4-mini", "Gemini-2.5-pro", "Qwen-QVQ-Max", "Llama4-Maverick", "Gemma3-27B",
          "InternVL3-8B", "InternVL3-38B", "InternVL3.5-8B", "InternVL3.5-38B", "Qwen2.5-VL-7B", "Qwen2.5-VL-72B",
          "AnomalyGPT-7B", "Anomaly-R1-7B"}


def test_every_table4_model_has_a_valid_card():
    cards = {c.title: c for c in list_cards()}
    assert TABLE4 <= set(cards)
    for c in cards.values():
        # every card cites its source; only the bundled board's own reference entry is not a paper row
        assert c.convention_source and c.paper
        assert "Table 4" in c.paper or (c.name == "anomaly-r1-mini" and c.paper.startswith("Not a row of the paper"))
        assert c.name == c.path.rsplit("/", 1)[-1][:-5]  # name = file stem, so `--model NAME` finds it
    assert cards["Gemini-2.5-pro"].convention == "gemini"
    assert cards["InternVL3-8B"].convention == cards["InternVL3.5-38B"].convention == "norm1000"
    assert cards["Qwen2.5-VL-7B"].convention == "pixel" and cards["Qwen2.5-VL-7B"].provider == "hf"
    assert cards["GPT-5"].reasoning and cards["o4-mini"].reasoning and not cards["GPT-4o"].reasoning
    assert cards["GPT-5"].generation_config().temperature is None
    r1 = cards["Anomaly-R1-7B"].generation_config()
    assert (r1.temperature, r1.min_p, r1.max_new_tokens) == (1.5, 0.1, 512)  # paper's inference sampling
    assert cards["AnomalyGPT-7B"].provider == "anomalygpt"
    qvq = cards["Qwen-QVQ-Max"]
    assert qvq.api_key_env == "DASHSCOPE_API_KEY" and "compatible-mode" in qvq.base_url and qvq.stream


def test_spec_forms(tmp_path):
    c = parse_spec("openai:gpt-4o")
    assert (c.provider, c.model_id, c.convention) == ("openai", "gpt-4o", "pixel")
    assert parse_spec("gemini:gemini-2.5-pro").convention == "gemini"
    c = parse_spec("hf:Qwen/Qwen2.5-VL-7B-Instruct")
    assert (c.provider, c.model_id, c.name) == ("hf", "Qwen/Qwen2.5-VL-7B-Instruct", "Qwen2.5-VL-7B-Instruct")
    assert parse_spec("vllm:/models/x").provider == "vllm"
    assert parse_spec("PatchCore").provider == "detector" and parse_spec("padim").model_id == "padim"
    assert parse_spec("gpt-4o").model_id == "gpt-4o" and parse_spec("gpt-4o").path
    assert parse_spec("GPT-4o").name == "gpt-4o"  # card names are case-insensitive
    card = tmp_path / "mine.toml"
    card.write_text('name = "mine"\nprovider = "openai"\nmodel_id = "m"\nconvention = "norm1000"\n'
                    '[sampling]\nmax_new_tokens = 64\n')
    c = parse_spec(str(card))
    assert (c.name, c.convention, c.generation_config().max_new_tokens) == ("mine", "norm1000", 64)
    for bad in ("", "nope-model", "openai:", "foo:bar"):
        with pytest.raises(ConfigError):
            parse_spec(bad)


def test_card_validation_names_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        card_from_dict({"name": "x", "provider": "openai", "model_id": "m", "temprature": 1})
    with pytest.raises(ConfigError, match="unknown provider"):
        card_from_dict({"name": "x", "provider": "nope", "model_id": "m"})
    with pytest.raises(ConfigError, match="convention"):
        card_from_dict({"name": "x", "provider": "openai", "model_id": "m", "convention": "xywh"})
    with pytest.raises(ConfigError, match="sampling"):
        card_from_dict({"name": "x", "provider": "openai", "model_id": "m", "sampling": {"temp": 1}})
    p = tmp_path / "bad.toml"
    p.write_text("name = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_card(p)


def test_overrides_win_and_result_json_has_no_secrets():
    c = with_overrides(parse_spec("gpt-4o"), base_url="http://u:pw@127.0.0.1:9/v1", concurrency=3,
                       sampling={"temperature": 0.7, "max_new_tokens": None}, options={"api_key": "sk-x", "a": 1})
    assert c.concurrency == 3 and c.generation_config().temperature == 0.7
    assert c.generation_config().max_new_tokens == 2048  # None leaves the card's value
    d = c.to_result_json()
    blob = json.dumps(d)
    assert "sk-x" not in blob and "pw" not in blob and d["base_url"] == "http://127.0.0.1:9/v1"
    assert d["options"] == {"a": 1}
    assert d["sampling"] == {"max_new_tokens": 2048, "temperature": 0.7}


def test_create_model_passes_card_settings(monkeypatch):
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="DASHSCOPE_API_KEY"):
        create_model(parse_spec("qwen-qvq-max"))
    c = with_overrides(parse_spec("qwen-qvq-max"), base_url="http://127.0.0.1:1/v1")  # a local server: no key needed
    m = create_model(c)
    assert m.stream and m.image_prep.resize == "smart" and m.max_concurrency == 4
    kw = model_kwargs(parse_spec("anomaly-r1-7b"))
    assert kw["lora"] and kw["convention"] == "pixel" and kw["max_pixels"] == 1003520


def test_models_command_lists_cards_without_keys(monkeypatch, capsys):
    from mmrbench.cli import main
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-print-me")
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    assert main(["models", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert "sk-never-print-me" not in out
    data = json.loads(out)
    rows = {r["card"]: r for r in data["cards"]}
    assert rows["gpt-4o"]["key"] == "set" and rows["gemini-2.5-pro"]["key"] == "not set"
    assert {p["provider"] for p in data["providers"]} >= {"openai", "gemini", "hf", "vllm", "lmdeploy", "anomalygpt",
                                                          "detector", "scripted"}
    assert cards_dir().name == "adapters"


def test_card_relative_model_folder_resolves_against_the_card_file(tmp_path, monkeypatch):
    """A card shipped beside its weights (``model_id = "../weights/m"``) loads from any working
    directory; what results record stays as written, with no machine's absolute path."""
    import mmrbench.adapters.registry as registry

    seen = {}

    class Recorder:
        convention = "pixel"

        def __init__(self, model, **kw):
            seen["model"] = model

    monkeypatch.setattr(registry, "provider_class", lambda name: Recorder)
    (tmp_path / "weights" / "m").mkdir(parents=True)
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "mini.toml").write_text('name = "mini"\nprovider = "hf"\nmodel_id = "../weights/m"\n')
    monkeypatch.chdir(tmp_path / "weights")  # somewhere the relative path does not lead
    card = load_card(cards / "mini.toml")
    create_model(card)
    assert seen["model"] == str((tmp_path / "weights" / "m").resolve())
    assert card.to_result_json()["model_id"] == "../weights/m"
    # a hub id is passed on untouched
    import dataclasses
    create_model(dataclasses.replace(card, model_id="Qwen/Qwen2.5-VL-7B-Instruct"))
    assert seen["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
