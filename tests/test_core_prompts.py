"""Prompt variants of protocol mmr-ad-v1."""
import pytest

from mmrbench.data.schema import Box, Sample
from mmrbench.parsing import parse_answer
from mmrbench.prompts import (build_prompt, category_anomaly_labels, domain_knowledge_sentence, format_answer)


def sample(label="anomalous", ref="ref.png"):
    boxes = [Box(10, 20, 30, 40, "scratch"), Box(50, 50, 60, 70, "hole")] if label == "anomalous" else []
    return Sample("s1", "MVTecAD", "metal_nut", "test", "q.png", label, 100, 100, ref, boxes)


def test_default_sends_reference_first_then_query_without_hint():
    p = build_prompt(sample())
    assert p.images == ("ref.png", "q.png")
    assert "first image" in p.user and "second image" in p.user
    assert "metal nut" in p.user
    assert "<answer>" in p.user and "bbox_2d" in p.user
    assert "Hint" not in p.user and "red box" not in p.user
    assert "10, 20" not in p.user  # no ground truth leaks into the evaluation prompt


def test_no_reference_variant():
    p = build_prompt(sample(), "no_reference")
    assert p.images == ("q.png",)
    assert "first image" not in p.user


def test_missing_reference_falls_back_to_single_image():
    assert build_prompt(sample(ref=None)).images == ("q.png",)


def test_domain_knowledge_lists_distinct_sorted_labels():
    p = build_prompt(sample(), "domain_knowledge", domain_labels=["scratch", "hole", "scratch"])
    assert p.user.endswith("on metal nut samples, these types of anomalies may occur: hole, scratch.")
    assert domain_knowledge_sentence("x", []) == ""


def test_category_labels_from_samples():
    labels = category_anomaly_labels([sample(), sample("normal")])
    assert labels == {("MVTecAD", "metal_nut"): ["hole", "scratch"]}


def test_hint_variant_carries_ground_truth_and_opposite_hint_does_not():
    hinted = build_prompt(sample(), hint=True)
    assert "abnormal" in hinted.user and "[10, 20, 30, 40]" in hinted.user and "'hole'" in hinted.user
    opposite = build_prompt(sample(), opposite_hint=True)
    assert "normal, with no anomaly" in opposite.user and "[10, 20" not in opposite.user
    opposite_normal = build_prompt(sample("normal"), opposite_hint=True)
    assert "abnormal" in opposite_normal.user


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown prompt variant"):
        build_prompt(sample(), "few_shot")


def test_formatted_answers_parse_back():
    s = sample()
    p = parse_answer("<think>x</think>" + format_answer(True, s.boxes))
    assert p.decision is True
    assert [b.coords for b in p.boxes] == [(10, 20, 30, 40), (50, 50, 60, 70)]
    assert [b.label for b in p.boxes] == ["scratch", "hole"]
    assert parse_answer(format_answer(False)).decision is False


def test_prompt_hash_is_stable():
    assert build_prompt(sample()).sha256 == build_prompt(sample()).sha256
    assert build_prompt(sample()).sha256 != build_prompt(sample(), "no_reference").sha256
