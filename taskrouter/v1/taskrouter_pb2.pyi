import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Message(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("router", "messages", "prompt")
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    router: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    prompt: str
    def __init__(self, router: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., prompt: _Optional[str] = ...) -> None: ...

class TaskScore(_message.Message):
    __slots__ = ("task", "score", "similarity")
    TASK_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    task: str
    score: float
    similarity: float
    def __init__(self, task: _Optional[str] = ..., score: _Optional[float] = ..., similarity: _Optional[float] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("tokenize_ms", "queue_ms", "inference_ms", "batch_size")
    TOKENIZE_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    tokenize_ms: float
    queue_ms: float
    inference_ms: float
    batch_size: int
    def __init__(self, tokenize_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("task", "matched", "scores", "threshold", "fallback_score", "truncated", "input_tokens", "latency_ms", "timing", "router", "router_version", "criterion", "criterion_value")
    TASK_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_SCORE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    ROUTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CRITERION_FIELD_NUMBER: _ClassVar[int]
    CRITERION_VALUE_FIELD_NUMBER: _ClassVar[int]
    task: str
    matched: bool
    scores: _containers.RepeatedCompositeFieldContainer[TaskScore]
    threshold: float
    fallback_score: float
    truncated: bool
    input_tokens: int
    latency_ms: float
    timing: Timing
    router: str
    router_version: int
    criterion: str
    criterion_value: float
    def __init__(self, task: _Optional[str] = ..., matched: _Optional[bool] = ..., scores: _Optional[_Iterable[_Union[TaskScore, _Mapping]]] = ..., threshold: _Optional[float] = ..., fallback_score: _Optional[float] = ..., truncated: _Optional[bool] = ..., input_tokens: _Optional[int] = ..., latency_ms: _Optional[float] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., router: _Optional[str] = ..., router_version: _Optional[int] = ..., criterion: _Optional[str] = ..., criterion_value: _Optional[float] = ...) -> None: ...

class ClassifyBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ClassifyRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ClassifyRequest, _Mapping]]] = ...) -> None: ...

class ClassifyBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ClassifyResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[ClassifyResponse, _Mapping]]] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("router", "messages", "prompt")
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    router: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    prompt: str
    def __init__(self, router: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., prompt: _Optional[str] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("classification", "models", "selection_policy", "skipped")
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SELECTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    classification: ClassifyResponse
    models: _containers.RepeatedScalarFieldContainer[str]
    selection_policy: str
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedModel]
    def __init__(self, classification: _Optional[_Union[ClassifyResponse, _Mapping]] = ..., models: _Optional[_Iterable[str]] = ..., selection_policy: _Optional[str] = ..., skipped: _Optional[_Iterable[_Union[SkippedModel, _Mapping]]] = ...) -> None: ...

class SkippedModel(_message.Message):
    __slots__ = ("model", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("model", "messages", "prompt", "affinity_key", "max_tokens", "temperature", "max_cost_usd")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    prompt: str
    affinity_key: str
    max_tokens: int
    temperature: float
    max_cost_usd: float
    def __init__(self, model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., prompt: _Optional[str] = ..., affinity_key: _Optional[str] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., max_cost_usd: _Optional[float] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("model", "endpoint", "outcome", "ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    endpoint: str
    outcome: str
    ms: float
    def __init__(self, model: _Optional[str] = ..., endpoint: _Optional[str] = ..., outcome: _Optional[str] = ..., ms: _Optional[float] = ...) -> None: ...

class ChatStart(_message.Message):
    __slots__ = ("router", "task", "model", "selection_policy", "pinned", "affinity_key")
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SELECTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_KEY_FIELD_NUMBER: _ClassVar[int]
    router: str
    task: str
    model: str
    selection_policy: str
    pinned: bool
    affinity_key: str
    def __init__(self, router: _Optional[str] = ..., task: _Optional[str] = ..., model: _Optional[str] = ..., selection_policy: _Optional[str] = ..., pinned: _Optional[bool] = ..., affinity_key: _Optional[str] = ...) -> None: ...

class ChatEnd(_message.Message):
    __slots__ = ("finish_reason", "prompt_tokens", "completion_tokens", "cost_usd", "attempts")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    def __init__(self, finish_reason: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ...) -> None: ...

class ChatEvent(_message.Message):
    __slots__ = ("start", "delta", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: ChatStart
    delta: str
    end: ChatEnd
    def __init__(self, start: _Optional[_Union[ChatStart, _Mapping]] = ..., delta: _Optional[str] = ..., end: _Optional[_Union[ChatEnd, _Mapping]] = ...) -> None: ...

class CustomTask(_message.Message):
    __slots__ = ("name", "description", "examples")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    examples: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., examples: _Optional[_Iterable[str]] = ...) -> None: ...

class SelectionPolicy(_message.Message):
    __slots__ = ("prefer",)
    PREFER_FIELD_NUMBER: _ClassVar[int]
    prefer: str
    def __init__(self, prefer: _Optional[str] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("custom_task", "models", "selection_policy")
    CUSTOM_TASK_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SELECTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    custom_task: CustomTask
    models: _containers.RepeatedScalarFieldContainer[str]
    selection_policy: SelectionPolicy
    def __init__(self, custom_task: _Optional[_Union[CustomTask, _Mapping]] = ..., models: _Optional[_Iterable[str]] = ..., selection_policy: _Optional[_Union[SelectionPolicy, _Mapping]] = ...) -> None: ...

class Router(_message.Message):
    __slots__ = ("name", "description", "policies", "fallback_models", "threshold", "max_cost_usd", "context", "criterion", "fallback_examples", "version", "create_time", "update_time", "uuid", "no_match")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_MODELS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CRITERION_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    NO_MATCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    fallback_models: _containers.RepeatedScalarFieldContainer[str]
    threshold: float
    max_cost_usd: float
    context: str
    criterion: str
    fallback_examples: _containers.RepeatedScalarFieldContainer[str]
    version: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    uuid: str
    no_match: NoMatch
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ..., fallback_models: _Optional[_Iterable[str]] = ..., threshold: _Optional[float] = ..., max_cost_usd: _Optional[float] = ..., context: _Optional[str] = ..., criterion: _Optional[str] = ..., fallback_examples: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uuid: _Optional[str] = ..., no_match: _Optional[_Union[NoMatch, _Mapping]] = ...) -> None: ...

class NoMatch(_message.Message):
    __slots__ = ("context", "criterion", "threshold", "threshold_source", "expected_fallback_precision", "expected_fallback_recall", "examples", "fallback_examples")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CRITERION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FALLBACK_PRECISION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FALLBACK_RECALL_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    context: str
    criterion: str
    threshold: float
    threshold_source: str
    expected_fallback_precision: float
    expected_fallback_recall: float
    examples: int
    fallback_examples: int
    def __init__(self, context: _Optional[str] = ..., criterion: _Optional[str] = ..., threshold: _Optional[float] = ..., threshold_source: _Optional[str] = ..., expected_fallback_precision: _Optional[float] = ..., expected_fallback_recall: _Optional[float] = ..., examples: _Optional[int] = ..., fallback_examples: _Optional[int] = ...) -> None: ...

class CreateRouterRequest(_message.Message):
    __slots__ = ("router",)
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    router: Router
    def __init__(self, router: _Optional[_Union[Router, _Mapping]] = ...) -> None: ...

class GetRouterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListRoutersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRoutersResponse(_message.Message):
    __slots__ = ("routers",)
    ROUTERS_FIELD_NUMBER: _ClassVar[int]
    routers: _containers.RepeatedCompositeFieldContainer[Router]
    def __init__(self, routers: _Optional[_Iterable[_Union[Router, _Mapping]]] = ...) -> None: ...

class UpdateRouterRequest(_message.Message):
    __slots__ = ("router",)
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    router: Router
    def __init__(self, router: _Optional[_Union[Router, _Mapping]] = ...) -> None: ...

class DeleteRouterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteRouterResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
