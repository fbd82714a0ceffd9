"""The public sets grouped into families of siblings, and the open-world variants evaluation builds.

Holding out one set while training on its siblings (three banking sets, three SGD groups) overstates
what a model does on a truly new taxonomy, so held-out evaluation works by family. The variants
turn a labelled set into the traffic a router really sees:

- `with_ood_fallback`: prompts of unrelated families mixed in as `fallback` rows (out-of-domain
  no-match traffic). Donor families are chosen to share no domain with the target; where they
  still overlap a little (metatool's broad tool list), a donor prompt that really fits a task is
  counted as a miss, so the numbers err on the strict side.
- `with_preamble`: every conversation behind the same long system prompt, the way an agent or a
  RAG front end calls a router.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from models import ChatMessage
from training.data import FALLBACK, Example, Taxonomy

FAMILIES: dict[str, tuple[str, ...]] = {
    "banking": (
        "banking77",
        "banking77_oos",
        "dstc11_banking",
        "dstc11_finance",
        "dstc11_insurance",
        "nlupp_topics",
        "nlupp_request_acts",
    ),
    "assistant": ("hwu64", "snips", "sgd_travel", "sgd_leisure", "sgd_personal"),
    "support": ("multidogo", "bitext_customer_support", "nlu_eval_corpora"),
    "llm_tasks": ("p3_task_types", "llm_task_types", "hellobench_writing_tasks", "xstest_prompt_types"),
    "knowledge": ("mmlu", "trec_qc_coarse", "trec_qc_fine"),
    "tools_code": ("stackoverflow_tags", "metatool_tools", "gorilla_hf_ml_tasks"),
}

# Out-of-domain donors per target family: sets whose prompts no task of the target family should
# take. Chosen by domain, not by score: e.g. banking targets exclude sgd_personal (bank intents) and
# the support sets (finance and insurance chats); LLM task-type targets take only assistant
# commands, since every question, ticket or code prompt is some LLM task.
OOD_DONORS: dict[str, tuple[str, ...]] = {
    "banking": (
        "hwu64",
        "snips",
        "sgd_travel",
        "sgd_leisure",
        "mmlu",
        "trec_qc_coarse",
        "gorilla_hf_ml_tasks",
    ),
    "assistant": (
        "mmlu",
        "stackoverflow_tags",
        "gorilla_hf_ml_tasks",
        "p3_task_types",
        "hellobench_writing_tasks",
    ),
    "support": ("mmlu", "trec_qc_coarse", "gorilla_hf_ml_tasks", "hellobench_writing_tasks", "p3_task_types"),
    "llm_tasks": ("snips", "sgd_travel", "sgd_leisure", "sgd_personal"),
    "knowledge": ("banking77", "snips", "sgd_travel", "multidogo", "bitext_customer_support"),
    "tools_code": ("banking77", "dstc11_insurance", "sgd_leisure", "trec_qc_coarse"),
}

# Of the public sets, these may not train shipped weights: the TREC sets are for evaluation only,
# and p3_task_types' mixed source terms allow evaluation and internal training, not shipped weights.
NOT_FOR_WEIGHTS = ("trec_qc_coarse", "trec_qc_fine", "p3_task_types")


def family_of(name: str) -> str:
    base = Path(name).name
    for family, members in FAMILIES.items():
        if base in members:
            return family
    raise ValueError(f"{name!r} belongs to no family; known: {', '.join(sorted(FAMILIES))}")


def with_ood_fallback(
    target: Taxonomy, donors: Sequence[Taxonomy], split: str, share: float = 0.5, seed: int = 0
) -> Taxonomy:
    """`target` plus `share` x (its in-scope `split` rows) donor prompts of that split as fallback
    rows, drawn evenly from `donors` (seeded). The target's own fallback rows are kept."""
    own = target.rows(split)
    wanted = round(share * sum(1 for e in own if e.label != FALLBACK))
    rng = random.Random(f"{seed}:{target.name}:{split}")
    # Same split only: a donor's val prompts must never reappear as another set's test rows.
    pools = [p for p in (d.rows(split, with_fallback=False) for d in donors) if p]
    extra: list[Example] = []
    for i, pool in enumerate(pools):
        take = wanted // len(pools) + (1 if i < wanted % len(pools) else 0)
        extra += [Example(e.messages, FALLBACK, split) for e in rng.sample(pool, min(take, len(pool)))]
    return Taxonomy(target.name, target.tasks, [*own, *extra])


def with_preamble(taxonomy: Taxonomy, system_prompt: str) -> Taxonomy:
    """Every conversation behind `system_prompt` (replacing a system turn it may have had)."""
    preamble = ChatMessage("system", system_prompt)
    examples = [
        Example((preamble, *(m for m in e.messages if m.role != "system")), e.label, e.split)
        for e in taxonomy.examples
    ]
    return Taxonomy(taxonomy.name, taxonomy.tasks, examples)
