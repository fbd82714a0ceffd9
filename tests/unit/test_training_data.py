"""Data loading for training: task files, labelled JSONL, fixed splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.data import SHARED_DATA, ensure_val_split, load_project_set, read_labelled, read_tasks


def test_task_file_json_or_yaml_with_examples(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        "- {name: a, description: first, examples: [x, y]}\n- {name: b, description: 2nd}\n"
    )
    tasks = read_tasks(tmp_path / "t.yaml")
    assert [(t.name, t.examples) for t in tasks] == [("a", ("x", "y")), ("b", ())]
    (tmp_path / "bad.json").write_text(
        json.dumps([{"name": "a", "description": "x"}, {"name": "a", "description": "y"}])
    )
    with pytest.raises(ValueError, match="unique"):
        read_tasks(tmp_path / "bad.json")


def test_labelled_rows_text_messages_and_fixed_hash_splits(tmp_path: Path) -> None:
    rows = [{"text": f"prompt number {i}\u2028with a line separator", "label": "a"} for i in range(200)]
    rows.append(
        {
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            "label": "fallback",
        }
    )
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    first = read_labelled(path, ["a"], val_share=0.2)
    assert len(first) == 201 and first[-1].messages[0].role == "system"
    assert first == read_labelled(path, ["a"], val_share=0.2)  # the split never changes
    assert 20 < sum(r.split == "val" for r in first) < 60
    path.write_text(json.dumps({"text": "x", "label": "zzz"}) + "\n")
    with pytest.raises(ValueError, match="label 'zzz' is not a task name"):
        read_labelled(path, ["a"])


def test_project_prompt_set_is_valid() -> None:
    taxonomy = load_project_set()
    assert len(taxonomy.tasks) >= 14
    counts = {t: sum(e.label == t for e in taxonomy.examples) for t in taxonomy.task_names}
    assert min(counts.values()) >= 40, counts
    assert sum(len(e.messages) > 1 for e in taxonomy.examples) >= 50  # multi-turn rows
    assert {e.split for e in taxonomy.examples} == {"train", "val", "test"}


@pytest.mark.skipif(not (SHARED_DATA / "snips").is_dir(), reason="needs ../shared/data")
def test_shared_set_without_val_lends_train_rows() -> None:
    from training.data import load_dataset_dir

    snips = ensure_val_split(load_dataset_dir(SHARED_DATA / "snips"))
    assert snips.has_split("val") and len(snips.rows("test")) == 700
