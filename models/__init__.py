"""The task classifier: plain PyTorch and a tokenizer; knows nothing of gRPC, YAML or asyncio.

Public surface: `load_checkpoint` builds a `TaskClassifier` and its tokenizer from a checkpoint
directory; `build_prompt` turns chat messages into encoder input within a token budget.
"""

from models.checkpoint import DEFAULT_CHECKPOINT, PLAIN_CHECKPOINT, load_checkpoint, save_checkpoint
from models.classifier import TaskClassifier, match_probabilities
from models.config import ClassifierConfig
from models.prompt import ALLOWED_ROLES, ChatMessage, PromptInput, build_prompt, pad_batch
from models.tasks import TaskVectors

__all__ = [
    "ALLOWED_ROLES",
    "DEFAULT_CHECKPOINT",
    "PLAIN_CHECKPOINT",
    "ChatMessage",
    "ClassifierConfig",
    "PromptInput",
    "TaskClassifier",
    "TaskVectors",
    "build_prompt",
    "load_checkpoint",
    "match_probabilities",
    "pad_batch",
    "save_checkpoint",
]
