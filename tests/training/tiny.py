"""A tiny randomly initialised BERT and taxonomy, so training code runs for real in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from models.config import ClassifierConfig
from models.encoder import resolve_encoder_source

TASKS = [
    {"name": "weather", "description": "Questions about the weather forecast, rain, sun or temperature."},
    {"name": "music", "description": "Requests to play a song, an album or an artist's music."},
    {"name": "alarm", "description": "Requests to set, change or cancel an alarm or a wake-up call."},
    {"name": "refund", "description": "A customer asking for their money back for an order or a charge."},
]
PROMPTS = {
    "weather": [
        "will it rain tomorrow",
        "how hot is it today",
        "is it sunny in paris",
        "weather this weekend",
        "do i need an umbrella",
        "forecast for monday",
        "temperature in rome now",
        "will it snow tonight",
    ],
    "music": [
        "play some jazz",
        "put on the new taylor swift album",
        "play my workout playlist",
        "i want to hear queen",
        "play that song again",
        "start the beatles",
        "music for studying please",
        "play rock music loud",
    ],
    "alarm": [
        "wake me up at seven",
        "set an alarm for 6am",
        "cancel my morning alarm",
        "move the alarm to 8",
        "alarm in twenty minutes",
        "turn off all alarms",
        "set a wake up call",
        "snooze the alarm",
    ],
    "refund": [
        "i want my money back",
        "refund my last order please",
        "you charged me twice, refund it",
        "how do i get a refund",
        "return this and refund me",
        "the item broke, i want a refund",
        "cancel and refund my purchase",
        "where is my refund",
    ],
}


def make_encoder(directory: Path) -> Path:
    """Save a 2-layer, 64-wide BERT with the packaged MiniLM tokenizer: a real local encoder path."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder_source("packaged:all-MiniLM-L6-v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)  # the same tiny encoder every run
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def make_checkpoint(directory: Path) -> Path:
    encoder = make_encoder(directory / "encoder")
    checkpoint = directory / "checkpoint"
    checkpoint.mkdir()
    config = ClassifierConfig(encoder=str(encoder), max_seq_len=32)
    (checkpoint / "config.json").write_text(json.dumps(config.to_dict()))
    return checkpoint


def make_dataset(directory: Path) -> Path:
    """tasks.json + examples.jsonl in the shared-data layout; 6 train, 1 val, 1 test prompt per task."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tasks.json").write_text(json.dumps(TASKS))
    lines = []
    for label, prompts in PROMPTS.items():
        for i, text in enumerate(prompts):
            split = "train" if i < 6 else ("val" if i == 6 else "test")
            lines.append(json.dumps({"text": text, "label": label, "split": split}))
    (directory / "examples.jsonl").write_text("\n".join(lines) + "\n")
    return directory
