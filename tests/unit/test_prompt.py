"""Input building on the real packaged tokenizer: priority, budget and truncation reporting."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from models import ChatMessage, build_prompt
from models.encoder import resolve_encoder_source
from models.prompt import special_tokens


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(resolve_encoder_source("packaged:all-MiniLM-L6-v2"))


def words(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def test_short_conversation_fits_whole_in_chronological_order(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [
        ChatMessage("system", "you triage tickets"),
        ChatMessage("user", "first question"),
        ChatMessage("assistant", "first answer"),
        ChatMessage("user", "second question"),
    ]
    out = build_prompt(tokenizer, messages, 64)
    assert not out.truncated
    assert words(tokenizer, out.input_ids) == "you triage tickets first question first answer second question"
    prefix, suffix = special_tokens(tokenizer)
    assert out.input_ids[: len(prefix)] == prefix and out.input_ids[-len(suffix) :] == suffix


def test_history_is_dropped_oldest_first_and_reported(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [ChatMessage("user", f"old turn number {i}") for i in range(30)] + [
        ChatMessage("user", "latest ask")
    ]
    out = build_prompt(tokenizer, messages, 32)
    text = words(tokenizer, out.input_ids)
    assert out.truncated and out.n_tokens == 32
    assert text.endswith("latest ask") and "number 29" in text and "number 0 " not in text


def test_long_system_prompt_cannot_crowd_out_the_user_turn(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [ChatMessage("system", "rule " * 500), ChatMessage("user", "please fix my failing test")]
    out = build_prompt(tokenizer, messages, 64)
    assert out.truncated and out.n_tokens == 64
    assert words(tokenizer, out.input_ids).endswith("please fix my failing test")


def test_long_user_turn_keeps_head_and_tail(tokenizer: PreTrainedTokenizerBase) -> None:
    prompt = "summarise this log " + "line " * 2000 + " and tell me the root cause"
    out = build_prompt(tokenizer, [ChatMessage("user", prompt)], 48)
    text = words(tokenizer, out.input_ids)
    assert out.truncated and out.n_tokens == 48
    assert text.startswith("summarise this log") and text.endswith("tell me the root cause")


def test_megabyte_prompt_is_clipped_before_tokenizing(tokenizer: PreTrainedTokenizerBase) -> None:
    out = build_prompt(tokenizer, [ChatMessage("user", "word " * 200_000)], 256)
    assert out.truncated and out.n_tokens == 256


def test_system_prompt_alone_may_use_the_whole_budget(tokenizer: PreTrainedTokenizerBase) -> None:
    out = build_prompt(tokenizer, [ChatMessage("system", "word " * 40)], 64)
    assert not out.truncated and out.n_tokens == 42


def test_long_chat_tokenizes_only_the_turns_that_can_fit(tokenizer: PreTrainedTokenizerBase) -> None:
    history = [
        ChatMessage("user" if i % 2 else "assistant", f"turn {i} " + "filler " * 300) for i in range(1000)
    ]
    out = build_prompt(tokenizer, [*history, ChatMessage("user", "what is the status of my order?")], 64)
    text = words(tokenizer, out.input_ids)
    assert out.truncated and out.n_tokens == 64 and text.endswith("what is the status of my order?")
    assert "turn 999" in text and "turn 998" not in text
