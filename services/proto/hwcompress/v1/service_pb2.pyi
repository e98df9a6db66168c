import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class BudgetMetric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_METRIC_UNSPECIFIED: _ClassVar[BudgetMetric]
    BUDGET_METRIC_LATENCY_MS: _ClassVar[BudgetMetric]
    BUDGET_METRIC_ENERGY_MJ: _ClassVar[BudgetMetric]
    BUDGET_METRIC_SIZE_MB: _ClassVar[BudgetMetric]
    BUDGET_METRIC_MACS: _ClassVar[BudgetMetric]

class RlMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RL_MODE_UNSPECIFIED: _ClassVar[RlMode]
    RL_MODE_PRUNE: _ClassVar[RlMode]
    RL_MODE_QUANTIZE: _ClassVar[RlMode]
    RL_MODE_JOINT: _ClassVar[RlMode]

class WeightsFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEIGHTS_FORMAT_UNSPECIFIED: _ClassVar[WeightsFormat]
    WEIGHTS_FORMAT_SAFETENSORS: _ClassVar[WeightsFormat]
    WEIGHTS_FORMAT_TORCH_STATE_DICT: _ClassVar[WeightsFormat]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
BUDGET_METRIC_UNSPECIFIED: BudgetMetric
BUDGET_METRIC_LATENCY_MS: BudgetMetric
BUDGET_METRIC_ENERGY_MJ: BudgetMetric
BUDGET_METRIC_SIZE_MB: BudgetMetric
BUDGET_METRIC_MACS: BudgetMetric
RL_MODE_UNSPECIFIED: RlMode
RL_MODE_PRUNE: RlMode
RL_MODE_QUANTIZE: RlMode
RL_MODE_JOINT: RlMode
WEIGHTS_FORMAT_UNSPECIFIED: WeightsFormat
WEIGHTS_FORMAT_SAFETENSORS: WeightsFormat
WEIGHTS_FORMAT_TORCH_STATE_DICT: WeightsFormat

class Budget(_message.Message):
    __slots__ = ("metric", "value", "relative")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_FIELD_NUMBER: _ClassVar[int]
    metric: BudgetMetric
    value: float
    relative: bool
    def __init__(self, metric: _Optional[_Union[BudgetMetric, str]] = ..., value: _Optional[float] = ..., relative: _Optional[bool] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("model", "uploaded_model_id", "dataset", "hardware_profile", "latency_table", "budgets", "strategy", "trials", "seed", "finetune_epochs", "idempotency_key", "baseline_epochs", "rl_mode")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_TABLE_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FINETUNE_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    BASELINE_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    RL_MODE_FIELD_NUMBER: _ClassVar[int]
    model: str
    uploaded_model_id: str
    dataset: str
    hardware_profile: str
    latency_table: str
    budgets: _containers.RepeatedCompositeFieldContainer[Budget]
    strategy: str
    trials: int
    seed: int
    finetune_epochs: float
    idempotency_key: str
    baseline_epochs: int
    rl_mode: RlMode
    def __init__(self, model: _Optional[str] = ..., uploaded_model_id: _Optional[str] = ..., dataset: _Optional[str] = ..., hardware_profile: _Optional[str] = ..., latency_table: _Optional[str] = ..., budgets: _Optional[_Iterable[_Union[Budget, _Mapping]]] = ..., strategy: _Optional[str] = ..., trials: _Optional[int] = ..., seed: _Optional[int] = ..., finetune_epochs: _Optional[float] = ..., idempotency_key: _Optional[str] = ..., baseline_epochs: _Optional[int] = ..., rl_mode: _Optional[_Union[RlMode, str]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("trials_done", "trials_total", "best_accuracy", "best_latency_ms")
    TRIALS_DONE_FIELD_NUMBER: _ClassVar[int]
    TRIALS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    BEST_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    trials_done: int
    trials_total: int
    best_accuracy: float
    best_latency_ms: float
    def __init__(self, trials_done: _Optional[int] = ..., trials_total: _Optional[int] = ..., best_accuracy: _Optional[float] = ..., best_latency_ms: _Optional[float] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "spec", "state", "reason", "created_at", "started_at", "finished_at", "progress", "attempts", "queue_position")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: JobSpec
    state: JobState
    reason: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    progress: JobProgress
    attempts: int
    queue_position: int
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress: _Optional[_Union[JobProgress, _Mapping]] = ..., attempts: _Optional[int] = ..., queue_position: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_seq")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_seq: int
    def __init__(self, job_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: JobEvent
    def __init__(self, event: _Optional[_Union[JobEvent, _Mapping]] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("state", "reason")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    reason: str
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class Trial(_message.Message):
    __slots__ = ("index", "total", "accuracy", "latency_ms", "feasible", "error", "best_accuracy", "strategy", "wall_s")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    index: int
    total: int
    accuracy: float
    latency_ms: float
    feasible: bool
    error: str
    best_accuracy: float
    strategy: str
    wall_s: float
    def __init__(self, index: _Optional[int] = ..., total: _Optional[int] = ..., accuracy: _Optional[float] = ..., latency_ms: _Optional[float] = ..., feasible: _Optional[bool] = ..., error: _Optional[str] = ..., best_accuracy: _Optional[float] = ..., strategy: _Optional[str] = ..., wall_s: _Optional[float] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "seq", "time", "state_change", "trial", "log", "result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    state_change: StateChange
    trial: Trial
    log: LogLine
    result: ResultSummary
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_change: _Optional[_Union[StateChange, _Mapping]] = ..., trial: _Optional[_Union[Trial, _Mapping]] = ..., log: _Optional[_Union[LogLine, _Mapping]] = ..., result: _Optional[_Union[ResultSummary, _Mapping]] = ...) -> None: ...

class LayerPolicy(_message.Message):
    __slots__ = ("layer", "keep_ratio", "w_bits", "a_bits")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    KEEP_RATIO_FIELD_NUMBER: _ClassVar[int]
    W_BITS_FIELD_NUMBER: _ClassVar[int]
    A_BITS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    keep_ratio: float
    w_bits: int
    a_bits: int
    def __init__(self, layer: _Optional[str] = ..., keep_ratio: _Optional[float] = ..., w_bits: _Optional[int] = ..., a_bits: _Optional[int] = ...) -> None: ...

class ParetoPoint(_message.Message):
    __slots__ = ("metrics", "json")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    METRICS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.ScalarMap[str, float]
    json: str
    def __init__(self, metrics: _Optional[_Mapping[str, float]] = ..., json: _Optional[str] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("name", "size_bytes", "sha256", "content_type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_bytes: int
    sha256: str
    content_type: str
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...

class ResultSummary(_message.Message):
    __slots__ = ("result_json", "policy", "metrics", "pareto", "artifacts")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PARETO_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    policy: _containers.RepeatedCompositeFieldContainer[LayerPolicy]
    metrics: _containers.ScalarMap[str, float]
    pareto: _containers.RepeatedCompositeFieldContainer[ParetoPoint]
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    def __init__(self, result_json: _Optional[str] = ..., policy: _Optional[_Iterable[_Union[LayerPolicy, _Mapping]]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., pareto: _Optional[_Iterable[_Union[ParetoPoint, _Mapping]]] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("job_id", "artifacts", "summary_only")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_ONLY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    summary_only: bool
    def __init__(self, job_id: _Optional[str] = ..., artifacts: _Optional[_Iterable[str]] = ..., summary_only: _Optional[bool] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("name", "offset", "data", "last")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    name: str
    offset: int
    data: bytes
    last: bool
    def __init__(self, name: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class GetResultResponse(_message.Message):
    __slots__ = ("summary", "chunk")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    summary: ResultSummary
    chunk: ArtifactChunk
    def __init__(self, summary: _Optional[_Union[ResultSummary, _Mapping]] = ..., chunk: _Optional[_Union[ArtifactChunk, _Mapping]] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("architecture", "dataset", "format", "filename", "size_bytes")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    architecture: str
    dataset: str
    format: WeightsFormat
    filename: str
    size_bytes: int
    def __init__(self, architecture: _Optional[str] = ..., dataset: _Optional[str] = ..., format: _Optional[_Union[WeightsFormat, str]] = ..., filename: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class UploadModelRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: UploadedModel
    def __init__(self, model: _Optional[_Union[UploadedModel, _Mapping]] = ...) -> None: ...

class UploadedModel(_message.Message):
    __slots__ = ("id", "architecture", "dataset", "size_bytes", "sha256", "format")
    ID_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    id: str
    architecture: str
    dataset: str
    size_bytes: int
    sha256: str
    format: WeightsFormat
    def __init__(self, id: _Optional[str] = ..., architecture: _Optional[str] = ..., dataset: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., format: _Optional[_Union[WeightsFormat, str]] = ...) -> None: ...

class ListHardwareProfilesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HardwareProfile(_message.Message):
    __slots__ = ("name", "kind", "runtime", "precisions", "channel_step", "hardware", "is_default", "latency_tables")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_STEP_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_TABLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    runtime: str
    precisions: _containers.RepeatedScalarFieldContainer[str]
    channel_step: int
    hardware: str
    is_default: bool
    latency_tables: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., runtime: _Optional[str] = ..., precisions: _Optional[_Iterable[str]] = ..., channel_step: _Optional[int] = ..., hardware: _Optional[str] = ..., is_default: _Optional[bool] = ..., latency_tables: _Optional[_Iterable[str]] = ...) -> None: ...

class ListHardwareProfilesResponse(_message.Message):
    __slots__ = ("profiles",)
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    profiles: _containers.RepeatedCompositeFieldContainer[HardwareProfile]
    def __init__(self, profiles: _Optional[_Iterable[_Union[HardwareProfile, _Mapping]]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: ServerInfo
    def __init__(self, info: _Optional[_Union[ServerInfo, _Mapping]] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "models", "datasets", "strategies", "hardware_profiles", "max_concurrent_jobs", "max_queued_jobs", "max_upload_bytes", "max_trials", "auth_required", "max_streams", "max_streams_per_client")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    STRATEGIES_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_PROFILES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_JOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TRIALS_FIELD_NUMBER: _ClassVar[int]
    AUTH_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_PER_CLIENT_FIELD_NUMBER: _ClassVar[int]
    version: str
    models: _containers.RepeatedScalarFieldContainer[str]
    datasets: _containers.RepeatedScalarFieldContainer[str]
    strategies: _containers.RepeatedScalarFieldContainer[str]
    hardware_profiles: _containers.RepeatedScalarFieldContainer[str]
    max_concurrent_jobs: int
    max_queued_jobs: int
    max_upload_bytes: int
    max_trials: int
    auth_required: bool
    max_streams: int
    max_streams_per_client: int
    def __init__(self, version: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., datasets: _Optional[_Iterable[str]] = ..., strategies: _Optional[_Iterable[str]] = ..., hardware_profiles: _Optional[_Iterable[str]] = ..., max_concurrent_jobs: _Optional[int] = ..., max_queued_jobs: _Optional[int] = ..., max_upload_bytes: _Optional[int] = ..., max_trials: _Optional[int] = ..., auth_required: _Optional[bool] = ..., max_streams: _Optional[int] = ..., max_streams_per_client: _Optional[int] = ...) -> None: ...
