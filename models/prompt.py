"""Turns a chat request into encoder input within a token budget, and says when something was cut.

Two ways to read a conversation (`context`, chosen per router; measured in training/README.md):

- `latest_turn` (the default): the latest user turn is the request, and it leads. The user's earlier
  turns join it, newest first, within half its length (at least HISTORY_MIN_TOKENS, so that a follow-up
  like "ok, now in Go" keeps what it refers to); the system prompt, assistant answers and tool output
  never do. An agent or RAG front end sends the
  same long preamble (tone rules, tool lists, environment) on every request; mean pooling weighs
  every token alike, so that preamble, identical across the router's traffic and telling its tasks
  nothing apart, would otherwise outvote a one-line request and pull every prompt to one task.
- `conversation`: everything, by priority: the system prompt, then the latest user turn, then
  earlier turns, newest first. The system prompt may take at most half the budget while a user
  turn is waiting. For routers in front of many applications whose system prompts differ and do
  say what the request is ("You translate English to German").

Long texts keep their head and tail: instructions tend to sit around a pasted blob.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

SYSTEM_ROLES = frozenset({"system", "developer"})
LATEST_TURN = "latest_turn"
CONVERSATION = "conversation"
CONTEXT_MODES = (LATEST_TURN, CONVERSATION)
# In `latest_turn` mode, the user's earlier turns may add this share of the latest turn's tokens, and
# at least HISTORY_MIN_TOKENS. Measured on the multi-turn rows of training/data/llm_task_types (plain
# encoder, 105 rows): latest turn alone 0.448, everything as one conversation 0.543, this 0.543 (with
# an 8-token minimum 0.562, but then "now in go" loses most of what it refers to); behind a long
# agent preamble the conversation falls to 0.162 and this does not move.
HISTORY_SHARE = 0.5
HISTORY_MIN_TOKENS = 16
_HISTORY_TURNS = 4
ALLOWED_ROLES = ("system", "developer", "user", "assistant", "tool")
# Characters kept per budget token before tokenizing; anything longer cannot fit anyway, and clipping
# first keeps tokenization of a 1 MB prompt as cheap as that of a short one.
_CHARS_PER_TOKEN_CAP = 8


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class PromptInput:
    """Token ids ready for the encoder (special tokens included)."""

    input_ids: list[int]
    truncated: bool

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


def _split_turns(messages: Sequence[ChatMessage]) -> tuple[str, str, list[str]]:
    """(system text, latest user turn, earlier turns newest first); empty turns are skipped."""
    system = "\n".join(m.content for m in messages if m.role in SYSTEM_ROLES and m.content.strip())
    turns = [m for m in messages if m.role not in SYSTEM_ROLES and m.content.strip()]
    user_positions = [i for i, m in enumerate(turns) if m.role == "user"]
    latest = user_positions[-1] if user_positions else len(turns) - 1
    if latest < 0:
        return system, "", []
    history = [m.content for i, m in enumerate(turns) if i != latest]
    return system, turns[latest].content, history[::-1]


def _head_tail(ids: list[int], keep: int) -> list[int]:
    """Keep `keep` ids: two thirds from the head, one third from the tail."""
    if keep <= 0:
        return []
    if len(ids) <= keep:
        return ids
    head = (2 * keep + 2) // 3
    return ids[:head] + ids[len(ids) - (keep - head) :]


def _clip_chars(text: str, max_chars: int) -> tuple[str, bool]:
    if len(text) <= max_chars:
        return text, False
    head = (2 * max_chars) // 3
    return text[:head] + " " + text[len(text) - (max_chars - head) :], True


@functools.lru_cache(maxsize=8)
def special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after one sequence (e.g. [CLS] and [SEP]).

    Found by tokenizing a probe word with and without special tokens, which works for any
    tokenizer, fast or slow, whatever its template.
    """
    bare = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise ValueError(f"cannot locate the special tokens of {type(tokenizer).__name__}")


def build_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[ChatMessage],
    max_tokens: int,
    context: str = LATEST_TURN,
    history: bool = True,
) -> PromptInput:
    """Encoder input for `messages` in at most `max_tokens` tokens (special tokens included), read
    the `context` way (see the module docstring); `history=False` keeps earlier user turns out of
    `latest_turn` (for measuring).

    The caller validates roles and non-emptiness; this only chooses and allocates. `truncated` says
    when text the mode reads did not fit, not that the mode leaves the preamble out by design.
    """
    if context not in CONTEXT_MODES:
        raise ValueError(f"context {context!r}; allowed: {', '.join(CONTEXT_MODES)}")
    prefix, suffix = special_tokens(tokenizer)
    budget = max_tokens - len(prefix) - len(suffix)
    if context == LATEST_TURN:
        users = [m.content for m in messages if m.role == "user" and m.content.strip()]
        if users:  # without a user turn there is no request to isolate: read what there is
            body, truncated = _latest_turn(tokenizer, users if history else users[-1:], budget)
            return PromptInput(input_ids=prefix + body + suffix, truncated=truncated)
    body, truncated = _conversation(tokenizer, messages, budget)
    return PromptInput(input_ids=prefix + body + suffix, truncated=truncated)


def _latest_turn(tokenizer: PreTrainedTokenizerBase, users: list[str], budget: int) -> tuple[list[int], bool]:
    """The latest user turn, after the user's earlier turns (newest first, back in chronological
    order) within HISTORY_SHARE of its length, at least HISTORY_MIN_TOKENS."""
    max_chars = budget * _CHARS_PER_TOKEN_CAP
    latest, truncated = _clip_chars(users[-1], max_chars)
    latest_ids = tokenizer([latest], add_special_tokens=False)["input_ids"][0]
    truncated |= len(latest_ids) > budget
    body = _head_tail(latest_ids, budget)
    if len(users) == 1:
        return body, truncated
    share = max(HISTORY_MIN_TOKENS, int(HISTORY_SHARE * len(body)))
    left = min(share, budget - len(body))
    earlier = [_clip_chars(t, left * _CHARS_PER_TOKEN_CAP)[0] for t in users[-2::-1][:_HISTORY_TURNS]]
    for ids in tokenizer(earlier, add_special_tokens=False)["input_ids"]:
        if left <= 0:
            break
        take = _head_tail(ids, left)
        body = take + body
        left -= len(take)
    return body, truncated


def _conversation(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[ChatMessage], budget: int
) -> tuple[list[int], bool]:
    """System prompt, latest user turn, earlier turns newest first, within `budget` tokens."""
    system, user, history = _split_turns(messages)
    max_chars = budget * _CHARS_PER_TOKEN_CAP
    # Only the newest turns that could still fit are worth tokenizing; a long chat costs no more.
    considered, chars = 0, 0
    while considered < len(history) and chars < max_chars:
        chars += len(history[considered])
        considered += 1
    truncated = considered < len(history)
    clipped = [_clip_chars(text, max_chars) for text in (system, user, *history[:considered])]
    truncated |= any(cut for _, cut in clipped)
    texts = [text for text, _ in clipped]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    system_ids, user_ids, history_ids = ids[0], ids[1], ids[2:]

    system_cap = budget // 2 if user_ids else budget
    system_keep = min(len(system_ids), system_cap)
    user_keep = min(len(user_ids), budget - system_keep)
    # Budget the user turn did not need goes back to the system prompt.
    system_keep = min(len(system_ids), budget - user_keep)
    left = budget - system_keep - user_keep
    truncated |= system_keep < len(system_ids) or user_keep < len(user_ids)

    kept_history: list[list[int]] = []
    for turn in history_ids:
        take = turn[: max(left, 0)]
        truncated |= len(take) < len(turn)
        if take:
            kept_history.append(take)
        left -= len(take)

    body = system_ids[:system_keep]
    for turn in reversed(kept_history):  # back to chronological order
        body = body + turn
    return body + _head_tail(user_ids, user_keep), truncated


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows -> (input_ids, attention_mask) [B, longest row], right-padded with `pad_id`."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask
