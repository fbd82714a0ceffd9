"""Input building on the real packaged tokenizer: the two context modes, priority, budget and
truncation reporting."""

from __future__ import annotations

from pathlib import Path

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
    out = build_prompt(tokenizer, messages, 64, "conversation")
    assert not out.truncated
    assert words(tokenizer, out.input_ids) == "you triage tickets first question first answer second question"
    prefix, suffix = special_tokens(tokenizer)
    assert out.input_ids[: len(prefix)] == prefix and out.input_ids[-len(suffix) :] == suffix


def test_history_is_dropped_oldest_first_and_reported(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [ChatMessage("user", f"old turn number {i}") for i in range(30)] + [
        ChatMessage("user", "latest ask")
    ]
    out = build_prompt(tokenizer, messages, 32, "conversation")
    text = words(tokenizer, out.input_ids)
    assert out.truncated and out.n_tokens == 32
    assert text.endswith("latest ask") and "number 29" in text and "number 0 " not in text


def test_long_system_prompt_cannot_crowd_out_the_user_turn(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [ChatMessage("system", "rule " * 500), ChatMessage("user", "please fix my failing test")]
    out = build_prompt(tokenizer, messages, 64, "conversation")
    assert out.truncated and out.n_tokens == 64
    assert words(tokenizer, out.input_ids).endswith("please fix my failing test")


def test_long_user_turn_keeps_head_and_tail(tokenizer: PreTrainedTokenizerBase) -> None:
    prompt = "summarise this log " + "line " * 2000 + " and tell me the root cause"
    out = build_prompt(tokenizer, [ChatMessage("user", prompt)], 48, "conversation")
    text = words(tokenizer, out.input_ids)
    assert out.truncated and out.n_tokens == 48
    assert text.startswith("summarise this log") and text.endswith("tell me the root cause")


def test_megabyte_prompt_is_clipped_before_tokenizing(tokenizer: PreTrainedTokenizerBase) -> None:
    out = build_prompt(tokenizer, [ChatMessage("user", "word " * 200_000)], 256, "conversation")
    assert out.truncated and out.n_tokens == 256


def test_system_prompt_alone_may_use_the_whole_budget(tokenizer: PreTrainedTokenizerBase) -> None:
    out = build_prompt(tokenizer, [ChatMessage("system", "word " * 40)], 64, "conversation")
    assert not out.truncated and out.n_tokens == 42


def test_long_chat_tokenizes_only_the_turns_that_can_fit(tokenizer: PreTrainedTokenizerBase) -> None:
    history = [
        ChatMessage("user" if i % 2 else "assistant", f"turn {i} " + "filler " * 300) for i in range(1000)
    ]
    out = build_prompt(
        tokenizer, [*history, ChatMessage("user", "what is the status of my order?")], 64, "conversation"
    )
    text = words(tokenizer, out.input_ids)
    assert out.truncated and out.n_tokens == 64 and text.endswith("what is the status of my order?")
    assert "turn 999" in text and "turn 998" not in text


SYSTEM = (
    Path(__file__).resolve().parents[2] / "training/data/system_prompts/coding_agent_terminal.txt"
).read_text()


def test_latest_turn_ignores_the_preamble_entirely(tokenizer: PreTrainedTokenizerBase) -> None:
    request = "Why does this raise KeyError: 'price' when the cart is empty?"
    alone = build_prompt(tokenizer, [ChatMessage("user", "open the repo"), ChatMessage("user", request)], 256)
    agent = [
        ChatMessage("system", SYSTEM),
        ChatMessage("user", "open the repo"),
        ChatMessage("assistant", "Opened. " * 50),
        ChatMessage("tool", "file contents " * 300),
        ChatMessage("user", request),
    ]
    behind = build_prompt(tokenizer, agent, 256)
    assert behind.input_ids == alone.input_ids and not behind.truncated
    assert len(SYSTEM.split()) >= 600  # the test preamble is a realistic agent prompt


def test_a_short_follow_up_keeps_what_it_refers_to(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [
        ChatMessage("system", "You are a helpful assistant."),
        ChatMessage("user", "write a rust function that checks whether a number is prime"),
        ChatMessage("assistant", "fn is_prime(n: u64) -> bool { ... }"),
        ChatMessage("user", "now in go"),
    ]
    text = words(tokenizer, build_prompt(tokenizer, messages, 256).input_ids)
    assert text == "write a rust function that checks whether a number is prime now in go"
    strict = build_prompt(tokenizer, messages, 256, history=False)
    assert words(tokenizer, strict.input_ids) == "now in go"


def test_earlier_user_turns_take_at_most_half_of_a_long_request(tokenizer: PreTrainedTokenizerBase) -> None:
    request = "Why does the checkout page raise KeyError: price when the cart holds a gift card? " * 2
    messages = [ChatMessage("user", "earlier turn " * 200), ChatMessage("user", request)]
    out = build_prompt(tokenizer, messages, 256)
    alone = build_prompt(tokenizer, [ChatMessage("user", request)], 256)
    added = out.n_tokens - alone.n_tokens
    assert 0 < added <= (alone.n_tokens - 2) // 2
    assert out.input_ids[-alone.n_tokens + 1 :] == alone.input_ids[1:]  # the request ends it, whole


def test_latest_turn_without_a_user_turn_reads_what_there_is(tokenizer: PreTrainedTokenizerBase) -> None:
    out = build_prompt(tokenizer, [ChatMessage("system", "summarise the attached report")], 64)
    assert words(tokenizer, out.input_ids) == "summarise the attached report"


def test_latest_turn_keeps_head_and_tail_of_a_long_request(tokenizer: PreTrainedTokenizerBase) -> None:
    request = "summarise this log " + "line " * 2000 + " and tell me the root cause"
    out = build_prompt(tokenizer, [ChatMessage("system", SYSTEM), ChatMessage("user", request)], 48)
    text = words(tokenizer, out.input_ids)
    assert out.truncated and out.n_tokens == 48
    assert text.startswith("summarise this log") and text.endswith("tell me the root cause")


def test_unknown_context_is_refused(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ValueError, match="latest_turn, conversation"):
        build_prompt(tokenizer, [ChatMessage("user", "hi")], 64, "everything")
