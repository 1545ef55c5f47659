"""Protocol ``mmad-v1``: the prompt MMAD's evaluation sends, as data, and the grouping of questions.

The wording below is a fact of MMAD's protocol, reproduced verbatim so that results are comparable;
it is taken from github.com/jam-cc/MMAD at commit bad03b44c30fdb4d0e1774e07e0f245fbaae3b6c:

* ``INSTRUCTION`` and the template / query / question-list sentences: ``evaluation/examples/Gemini/
  gemini_query.py`` (``instruction`` and ``get_query``), the script that asks the anomaly-detection
  question first and on its own and then the remaining questions as one list. The missing space in
  "query imageFollowing" is MMAD's own and kept.
* ``DOMAIN_KNOWLEDGE_INTRO``: ``evaluation/examples/Transformers/qwen2_5_vl_query.py`` (``get_query``);
  the category's entries of ``dataset/MMAD/domain_knowledge.json`` are joined by newlines, looked up
  under the image's dataset (``DS-MVTec`` read as ``MVTec``) and category, as that script does.
* Each question renders as ``"Question: {text} \\n"`` followed by one ``"{letter}. {option}\\n"`` line per
  option, and the question list joins the questions with ``"\\n"`` (same file, ``parse_conversation``).

The images go first (the k templates, then the query image) and the text after them, in one user
message, as the Gemini script builds its request.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from mmrbench.errors import ConfigError, MMRBenchError
from mmrbench.mmad.data import AD_SUBTASK, MMADImage, MMADQuestion

PROTOCOL = "mmad-v1"
SOURCE = "github.com/jam-cc/MMAD@bad03b44c30fdb4d0e1774e07e0f245fbaae3b6c"

INSTRUCTION = (
    "\nYou are an industrial inspector who checks products by images. You should judge whether there is a "
    "defect in the query image and answer the questions about it.\n"
    "Answer with the option's letter from the given choices directly.\n"
    "\n"
    "Finally, you should output a answer list of every question, such as:\n"
    "1. Answer: B.\n"
    "2. Answer: B.\n"
    "3. Answer: A.\n"
    "...\n"
    "\n"
)
TEMPLATES_SENTENCE = "The first {n} image is the normal sample, which can be used as a template to compare."
QUERY_SENTENCE = "The last image is the query image"
LIST_SENTENCE = "Following is the question list: "
DOMAIN_KNOWLEDGE_INTRO = ("Following is the domain knowledge which contains some type of defect and the normal "
                          "object characteristics: \n {knowledge}")

AskMode = Literal["ad-first", "separate"]
ASK_MODES = ("ad-first", "separate")
TEMPLATE_KINDS = ("random", "similar")


def render_question(q: MMADQuestion) -> str:
    return f"Question: {q.question} \n" + "".join(f"{k}. {v}\n" for k, v in q.options)


def prompt_text(questions: Sequence[MMADQuestion], *, shots: int, knowledge: str | None = None) -> str:
    """The text part of one request (the images travel before it)."""
    incontext = ""
    if knowledge:
        incontext += DOMAIN_KNOWLEDGE_INTRO.format(knowledge=knowledge)
    if shots:
        incontext += TEMPLATES_SENTENCE.format(n=shots)
    listing = "".join(render_question(q) + "\n" for q in questions)
    return INSTRUCTION + incontext + QUERY_SENTENCE + LIST_SENTENCE + "\n" + listing


def group_questions(image: MMADImage, ask: str) -> list[tuple[MMADQuestion, ...]]:
    """The requests one image is asked in: ``ad-first`` = each anomaly-detection question alone, then
    every other question in one list (MMAD's Gemini script); ``separate`` = one request per question
    (MMAD's scripts for open models)."""
    if ask not in ASK_MODES:
        raise ConfigError(f"unknown ask mode '{ask}' (known: {', '.join(ASK_MODES)})")
    if ask == "separate":
        return [(q,) for q in image.questions]
    ad = [(q,) for q in image.questions if q.subtask == AD_SUBTASK]
    rest = tuple(q for q in image.questions if q.subtask != AD_SUBTASK)
    return ad + ([rest] if rest else [])


def templates_for(image: MMADImage, shots: int, kind: str) -> tuple[str, ...]:
    if kind not in TEMPLATE_KINDS:
        raise ConfigError(f"unknown template kind '{kind}' (known: {', '.join(TEMPLATE_KINDS)})")
    if shots < 0:
        raise ConfigError(f"shots must be >= 0, got {shots}")
    pool = image.similar_templates if kind == "similar" else image.random_templates
    if len(pool) < shots:
        raise MMRBenchError(f"image '{image.key}': field '{kind}_templates': {shots}-shot needs {shots} "
                            f"template(s), the file lists {len(pool)}")
    return tuple(pool[:shots])


# -- domain knowledge ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DomainKnowledge:
    entries: dict[str, dict[str, dict[str, str]]]  # dataset -> category -> {name: text}

    def for_image(self, dataset: str, category: str) -> str | None:
        d = self.entries.get(dataset.replace("DS-MVTec", "MVTec"), {}).get(category)
        return "\n".join(d.values()) if d else None


def load_domain_knowledge(path: str | os.PathLike) -> DomainKnowledge:
    """``domain_knowledge.json`` as MMAD released it: dataset -> category -> {key: text}."""
    from mmrbench.validation import read_json_file
    p = Path(path)
    obj = read_json_file(p, "domain knowledge file")
    if not isinstance(obj, dict):
        raise MMRBenchError(f"{p}: field '<top level>': must map dataset -> category -> texts")
    for ds, cats in obj.items():
        if not isinstance(cats, dict):
            raise MMRBenchError(f"{p}: field '{ds}': must map category -> texts")
        for cat, texts in cats.items():
            if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
                raise MMRBenchError(f"{p}: field '{ds}.{cat}': must map names to strings")
    return DomainKnowledge(obj)
