"""Typed records at every boundary (issue 15): the engine's events, trial outcomes and result
round-trip through their dict (and JSON) form, refuse a newer schema by name, read what older
code stored; every event kind converts to the API's message and back; the service's job
progress is read from what a real search writes; one budget parser behind all four spellings;
one error root; one named constant per default."""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import fields

import grpc
import pytest

from automl.core import (DEFAULT_BASELINE_EPOCHS, DEFAULT_OBJECTIVE, DEFAULT_RL_MODE, DEFAULT_STRATEGY,
                         DEFAULT_TRIALS, Budget, BudgetError, BudgetTerm, HwcompressError, LayerPolicy,
                         Policy, PolicyError, SearchCancelled, SearchFailed)
from automl.records import (EVENT_TYPES, SCHEMA_KEY, FinishedEvent, LogEvent, ParetoPoint, RecordError,
                            SearchResult, StartedEvent, TrialEvent, TrialOutcome, event_from_dict)
from services import convert
from services.proto.hwcompress.v1 import service_pb2 as pb

POLICY = Policy({"conv1": LayerPolicy(0.5, 8, 8), "fc": LayerPolicy(1.0, 32, 32)})

SAMPLE_EVENTS = {
    "log": LogEvent("loading lenet5 on digits"),
    "started": StartedEvent("uniform", 6, {"size_mb": 0.12, "latency_ms": 0.5},
                            {"size_mb": 0.3, "latency_ms": 1.0, "energy_mj": 2.0, "macs": 4.0e5}),
    "trial": TrialEvent(index=3, total=6, accuracy=0.93, latency_ms=0.21, energy_mj=0.4, size_mb=0.1,
                        feasible=True, error=None, best_accuracy=0.95, strategy="netadapt",
                        wall_s=0.7, cached=False, elapsed_s=12.5,
                        strategy_state={"iteration": 2, "resource": 0.8}),
    "finished": FinishedEvent(0.91, 0.95, 0.21, 0.23, 6, 40.0),
}


def sample_result(pareto: bool = True) -> SearchResult:
    return SearchResult(
        model="lenet5", dataset="digits", strategy="optuna-nsga2", policy=POLICY, hardware="cpu-ort",
        seed=3, budgets=["latency_ms=0.5x"], accuracy_val_search=0.94, accuracy_original=0.97,
        accuracy_before_finetune=0.9, accuracy_after_finetune=0.95, accuracy_deployed=0.95,
        accuracy_deployed_images=359, finetune_epochs=0.2, latency_ms_predicted=0.2,
        latency_ms_predicted_table=0.18, latency_correction={"8/mixed": 1.1}, latency_ms_measured=0.22,
        latency_ms_measured_source="onnxruntime on this CPU", latency_ms_measured_raw=0.25,
        latency_fraction_measured=0.45, latency_ms_cpu_ort=0.22, latency_ms_original_measured=0.5,
        latency_ms_budget=0.25, latency_within_budget_measured=True,
        latency_checks=[{"source": "best candidate", "latency_ms_measured": 0.22}],
        energy_mj_predicted=0.3, size_mb=0.05, macs=120000, params=30000, evaluations=6,
        failed_trials=1, nodes=["127.0.0.1"],
        pareto=[ParetoPoint(0.94, 0.2, 0.3, 0.05, POLICY)] if pareto else None,
        latency_calibration=[{"kind": "8/uniform", "latency_fraction": 0.4}], wall_s=41.0)


def sample_outcome() -> TrialOutcome:
    return TrialOutcome(key=json.dumps(POLICY.to_dict(), sort_keys=True), trial=2, strategy="random",
                        policy=POLICY, latency_ms=0.2, energy_mj=0.3, size_mb=0.05, macs=120000.0,
                        accuracy=0.9, feasible=True, node="127.0.0.1", wall_s=0.5, params={"seed": 1})


RECORDS = [*SAMPLE_EVENTS.values(), sample_result(), sample_result(pareto=False), sample_outcome()]


# -- round trips and versions ----------------------------------------------------------------------
@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_every_record_round_trips_through_its_dict_and_json(record):
    d = record.to_dict()
    assert d[SCHEMA_KEY] == type(record).SCHEMA_VERSION
    assert type(record).from_dict(d) == record
    assert type(record).from_dict(json.loads(json.dumps(d))) == record


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_a_newer_schema_is_refused_by_name_and_a_missing_one_means_version_1(record):
    d = record.to_dict()
    with pytest.raises(RecordError, match=rf"{type(record).__name__}: schema_version 2 is newer") as exc:
        type(record).from_dict({**d, SCHEMA_KEY: 2})
    assert exc.value.field == SCHEMA_KEY and isinstance(exc.value, ValueError)
    with pytest.raises(RecordError, match="not a version number"):
        type(record).from_dict({**d, SCHEMA_KEY: "one"})
    old = {k: v for k, v in d.items() if k != SCHEMA_KEY}  # written before records were versioned
    assert type(record).from_dict(old) == record


def test_missing_optional_fields_take_defaults_and_a_missing_required_one_is_named():
    assert TrialEvent.from_dict({"type": "trial", "index": 0}) == TrialEvent(0)
    assert SearchResult.from_dict({"model": "m", "dataset": "d", "strategy": "s",
                                   "policy": {"layers": {}}}).evaluations == 0
    with pytest.raises(RecordError) as exc:
        SearchResult.from_dict({"model": "m", "strategy": "s", "policy": {"layers": {}}})
    assert exc.value.field == "dataset" and "'dataset' is missing" in str(exc.value)
    with pytest.raises(RecordError) as exc:
        TrialEvent.from_dict({"type": "trial"})
    assert exc.value.field == "index"
    with pytest.raises(RecordError) as exc:
        event_from_dict({"type": "progress"})
    assert exc.value.field == "type"
    with pytest.raises(RecordError) as exc:
        TrialEvent.from_dict({"type": "log", "index": 0})
    assert exc.value.field == "type"


def test_events_stored_by_the_old_code_still_read():
    """What a job database holds from before records: no schema_version, the strategy's state
    spread among the trial's fields; the finished numbers nested under 'result'."""
    trial = {"type": "trial", "index": 4, "total": 8, "accuracy": 0.9, "latency_ms": 0.1,
             "energy_mj": 0.2, "size_mb": 0.3, "feasible": True, "error": None, "best_accuracy": 0.92,
             "strategy": "ddpg", "wall_s": 1.5, "cached": False, "elapsed_s": 30.0,
             "episode": 4, "rl_mode": "joint", "sigma": 0.4}
    got = event_from_dict(trial)
    assert isinstance(got, TrialEvent) and (got.index, got.best_accuracy, got.wall_s) == (4, 0.92, 1.5)
    assert got.strategy_state == {"episode": 4, "rl_mode": "joint", "sigma": 0.4}
    finished = {"type": "finished", "result": {"accuracy_before_finetune": 0.9,
                                               "accuracy_after_finetune": 0.95,
                                               "latency_ms_predicted": 0.2, "latency_ms_measured": 0.21,
                                               "evaluations": 8, "wall_s": 50.0}}
    assert event_from_dict(finished) == FinishedEvent(0.9, 0.95, 0.2, 0.21, 8, 50.0)
    assert event_from_dict({"type": "started", "strategy": "uniform", "trials": 4,
                            "limits": {"size_mb": 0.1}, "reference": {}}).limits == {"size_mb": 0.1}
    # the service's own cancel line has no type in its payload; the row's type column says log
    msg = convert.event_to_pb("job-0", {"seq": 1, "time": 1.0, "type": "log",
                                        "payload": {"message": "cancel requested: bye"}})
    assert msg.log.message == "cancel requested: bye"
    msg = convert.event_to_pb("job-0", {"seq": 2, "time": 2.0, "type": "trial", "payload": trial})
    assert (msg.trial.index, msg.trial.best_accuracy, msg.trial.strategy) == (4, 0.92, "ddpg")


def test_the_evaluation_log_reads_old_rows_and_refuses_newer_ones(tmp_path):
    from automl.search.runner import EvaluationLog, _policy_key

    outcome = sample_outcome()
    old_row = {k: v for k, v in outcome.to_dict().items() if k != SCHEMA_KEY}
    path = tmp_path / "evaluations.jsonl"
    path.write_text(json.dumps(old_row) + "\n" + '{"key": "cut by a cra')
    log = EvaluationLog(path)
    assert log.get(POLICY) == outcome.to_dict()
    log.add(TrialOutcome(**{**{f.name: getattr(outcome, f.name) for f in fields(outcome)},
                            "key": _policy_key(Policy()), "policy": Policy(), "trial": 3}))
    assert len(EvaluationLog(path).rows) == 2  # appended, and read back
    path.write_text(json.dumps({**outcome.to_dict(), SCHEMA_KEY: 99}) + "\n")
    with pytest.raises(RecordError, match="TrialOutcome: schema_version 99"):
        EvaluationLog(path)


# -- events <-> the API ----------------------------------------------------------------------------
def test_the_samples_cover_every_event_kind_the_engine_emits():
    assert set(SAMPLE_EVENTS) == set(EVENT_TYPES) == {"log", "started", "trial", "finished"}


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_every_event_kind_converts_to_the_proto_and_back(kind):
    event = SAMPLE_EVENTS[kind]
    stored = {"seq": 7, "time": 1_700_000_000.5, "type": event.kind,
              "payload": json.loads(json.dumps(event.to_dict()))}  # as the store keeps it
    msg = convert.event_to_pb("job-0123456789abcdef", stored)
    wire = pb.JobEvent.FromString(msg.SerializeToString())
    back = convert.event_from_pb(wire)
    assert wire.seq == 7 and wire.job_id == "job-0123456789abcdef"
    if isinstance(event, TrialEvent):
        carried = [f.name for f in pb.Trial.DESCRIPTOR.fields]
        assert carried and all(getattr(back, name) == getattr(event, name) for name in carried), back
    elif isinstance(event, LogEvent):
        assert back == event
    elif isinstance(event, StartedEvent):
        assert back.message == "search started: uniform, 6 trials, limits size_mb ≤ 0.12, latency_ms ≤ 0.5"
    else:
        assert back.message.startswith("search finished: ") and "evaluations=6" in back.message \
            and "accuracy_after_finetune=0.95" in back.message


def test_a_trial_without_accuracy_or_best_leaves_them_unset_on_the_wire():
    event = TrialEvent(index=0, total=3, latency_ms=2.0, feasible=False, error="boom /srv/secret/x.py")
    msg = convert.event_to_pb("job-0", {"seq": 1, "time": 0.0, "type": "trial", "payload": event.to_dict()})
    assert not msg.trial.HasField("accuracy") and not msg.trial.HasField("best_accuracy")
    assert "/srv" not in msg.trial.error
    back = convert.event_from_pb(msg)
    assert back.accuracy is None and back.best_accuracy is None and back.error


def test_an_event_of_a_newer_server_is_shown_not_dropped():
    payload = {**SAMPLE_EVENTS["trial"].to_dict(), SCHEMA_KEY: 5}
    msg = convert.event_to_pb("job-0", {"seq": 1, "time": 0.0, "type": "trial", "payload": payload})
    assert "schema_version 5 is newer" in msg.log.message


def test_the_result_summary_carries_the_result_not_its_schema_version():
    summary = convert.summary_to_pb(sample_result().to_dict(), [])
    assert summary.metrics["accuracy_after_finetune"] == 0.95 and SCHEMA_KEY not in summary.metrics
    assert [p.layer for p in summary.policy] == ["conv1", "fc"] and len(summary.pareto) == 1
    assert SearchResult.from_dict(json.loads(summary.result_json)) == sample_result()


def test_what_the_clis_print_are_result_fields():
    from services.cli.service_cmds import DEMO_SHOWN, RESULT_HEADLINE

    names = {f.name for f in fields(SearchResult)}
    assert set(RESULT_HEADLINE) <= names and set(DEMO_SHOWN) <= names
    assert {f.name for f in fields(FinishedEvent)} <= names


# -- the service's progress from a real search -------------------------------------------------------
def _wait_final(store, job_id, timeout=600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get_job(job_id)
        if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {store.get_job(job_id)['state']}")


def test_job_progress_reads_what_a_real_search_writes(tmp_path, lenet_digits):
    """A tiny real search (uniform, 4 trials, LeNet-5 on digits, simulated accelerator, no Ray)
    run by the real job manager: every event it emits is a record, is stored as its dict and
    reads back equal, converts to the API, and the job's progress is what the trials said."""
    from automl.search.runner import SearchConfig, run_search
    from services.jobs import JobManager
    from services.store import JobStore

    emitted = []

    def work(spec, on_event, should_stop):
        def tee(event):
            emitted.append(event)
            on_event(event)
        config = SearchConfig(model=spec["model"], data=spec["data"], budgets=spec["budgets"],
                              strategy=spec["strategy"], trials=spec["trials"], hardware=spec["hardware"],
                              finetune_epochs=0.0, out_dir=spec["out_dir"], quick_table=True,
                              use_ray=False)
        return run_search(config, tee, should_stop).to_dict()

    store = JobStore(tmp_path / "jobs.sqlite")
    manager = JobManager(store, work, tmp_path / "artifacts")
    manager.start()
    try:
        job, _ = manager.submit({"model": "lenet5", "data": "digits", "strategy": "uniform", "trials": 4,
                                 "seed": 0, "hardware": "bitfusion-sim", "budgets": ["size_mb=0.4x"],
                                 "finetune_epochs": 0.0})
        job = _wait_final(store, job["id"])
    finally:
        manager.shutdown(timeout=30)
    assert job["state"] == "SUCCEEDED", job["reason"]

    assert all(isinstance(e, tuple(EVENT_TYPES.values())) for e in emitted)
    assert {e.kind for e in emitted} == set(EVENT_TYPES)
    stored = [e for e in store.events_after(job["id"]) if e["type"] in EVENT_TYPES]
    assert [event_from_dict({**e["payload"], "type": e["type"]}) for e in stored] == emitted

    trials = [e for e in emitted if isinstance(e, TrialEvent)]
    top = max(t.accuracy for t in trials if t.feasible and t.accuracy is not None)
    assert job["trials_done"] == len(trials) and job["trials_total"] == trials[-1].total == 4
    assert job["best_accuracy"] == trials[-1].best_accuracy == top
    # the latest trial to reach the best accuracy gives the best latency
    assert job["best_latency_ms"] == [t for t in trials if t.feasible and t.accuracy == top][-1].latency_ms
    progress = convert.job_to_pb(job).progress
    assert (progress.trials_done, progress.trials_total) == (len(trials), 4)

    for e in store.events_after(job["id"]):
        msg = convert.event_to_pb(job["id"], e)
        if e["type"] == "trial":
            assert msg.trial.index == e["payload"]["index"] and msg.trial.strategy == "uniform"
        elif e["type"] in EVENT_TYPES:
            assert msg.log.message and "unknown type" not in msg.log.message
    started = next(e for e in emitted if isinstance(e, StartedEvent))
    assert started.strategy == "uniform" and started.trials == 4 and set(started.limits) == {"size_mb"}

    result = SearchResult.from_dict(job["result"])
    assert result.evaluations == sum(1 for t in trials if t.accuracy is not None)
    assert result.size_mb <= result.size_mb_budget * 1.0001
    assert FinishedEvent.of(result) == next(e for e in emitted if isinstance(e, FinishedEvent))
    on_disk = json.loads((tmp_path / "artifacts" / job["id"] / "result.json").read_text())
    assert SearchResult.from_dict(on_disk) == result
    rows = json.loads((tmp_path / "artifacts" / job["id"] / "trace.json").read_text())
    assert all(TrialOutcome.from_dict({**r, "key": ""}).strategy == "uniform" for r in rows)


# -- one budget parser -----------------------------------------------------------------------------
BUDGET_TEXTS = ["latency_ms=0.5x", "size_mb=0.2", "macs=1e6", "energy_mj = 0.123456789X",
                "latency_ms=0.1234567890123x"]


@pytest.mark.parametrize("text", BUDGET_TEXTS)
def test_the_four_budget_spellings_parse_identically(text, tmp_path):
    from services.catalog import Catalog
    from services.cli.service_cmds import load_spec, parse_budget

    term = BudgetTerm.parse(text)
    assert BudgetTerm.parse(term.to_text()) == term
    assert Budget.parse([text]).terms == (term,)                                  # search / SearchConfig
    assert convert.budget_from_pb(parse_budget(text)) == term                      # submit --budget
    (tmp_path / "job.yaml").write_text(f"model: lenet5\nbudgets: [{json.dumps(text)}]\n")
    assert convert.budget_from_pb(load_spec(str(tmp_path / "job.yaml")).budgets[0]) == term  # --spec
    stored = Catalog().validate(pb.JobSpec(model="lenet5", trials=1, budgets=[convert.budget_to_pb(term)]))
    assert [BudgetTerm.parse(t) for t in stored["budgets"]] == [term]              # the service's store
    assert convert.spec_to_pb(stored, None).budgets[0] == convert.budget_to_pb(term)


def test_budget_errors_name_the_field_in_every_spelling(tmp_path):
    from services.catalog import Catalog
    from services.cli.service_cmds import load_spec, parse_budget
    from services.errors import SpecError

    for text, field_name in (("latency_ms=-1", "latency_ms"), ("size_mb=2x", "size_mb"),
                             ("macs=lots", "macs"), ("speed=3", "speed"), ("fast", "fast")):
        with pytest.raises(BudgetError) as exc:
            BudgetTerm.parse(text)
        assert exc.value.field == field_name and str(exc.value).startswith("budget ")
        with pytest.raises(BudgetError) as exc:
            parse_budget(text)
        assert exc.value.field == field_name and f"--budget {text!r}" in str(exc.value)
        (tmp_path / "job.yaml").write_text(f"model: lenet5\nbudgets: [\"size_mb=0.5x\", {json.dumps(text)}]\n")
        with pytest.raises(BudgetError, match=r"budgets\[1\]") as exc:
            load_spec(str(tmp_path / "job.yaml"))
        assert exc.value.field == field_name
    with pytest.raises(BudgetError) as exc:
        Budget.parse(["size_mb=0.5x", "size_mb=0.4x"])
    assert exc.value.field == "size_mb"
    with pytest.raises(SpecError) as exc:
        Catalog().validate(pb.JobSpec(model="lenet5", trials=1, budgets=[pb.Budget(
            metric=pb.BUDGET_METRIC_SIZE_MB, value=2.0, relative=True)]))
    assert exc.value.field == "budgets[0].value" and "size_mb" in exc.value.reason
    with pytest.raises(BudgetError) as exc:
        convert.budget_from_pb(pb.Budget(metric=99, value=1.0))
    assert exc.value.field == "metric"


# -- one error root ------------------------------------------------------------------------------------
def test_every_error_of_ours_has_the_root_and_keeps_its_builtin_base():
    from automl.data import DataError
    from services.cli.common import EnvError
    from services.errors import (IdempotencyConflict, QueueFull, ShuttingDown, SpecError, UploadError,
                                 UploadTooLarge)

    for cls, base in ((PolicyError, ValueError), (BudgetError, ValueError), (DataError, ValueError),
                      (RecordError, ValueError), (SpecError, ValueError), (UploadError, ValueError),
                      (UploadTooLarge, ValueError), (EnvError, ValueError),
                      (SearchFailed, RuntimeError), (SearchCancelled, RuntimeError),
                      (QueueFull, Exception), (ShuttingDown, Exception), (IdempotencyConflict, Exception)):
        assert issubclass(cls, HwcompressError) and issubclass(cls, base), cls
    # the old import paths still work
    from services.catalog import SpecError as CatalogSpecError
    from services.jobs import QueueFull as JobsQueueFull
    from automl.search.runner import SearchCancelled as RunnerCancelled
    assert (CatalogSpecError, JobsQueueFull, RunnerCancelled) == (SpecError, QueueFull, SearchCancelled)


def test_errors_carry_their_field_across_pickling():
    from services.errors import SpecError

    for err in (SpecError("budgets[0].value", "too small", not_found=False),
                BudgetError("budget size_mb: bad", field="size_mb", reason="bad"),
                PolicyError("layer 'fc': no", field="fc")):
        back = pickle.loads(pickle.dumps(err))
        assert (type(back), str(back), back.field, back.reason) == (type(err), str(err), err.field, err.reason)
    assert pickle.loads(pickle.dumps(SpecError("upload_id", "none", not_found=True))).not_found
    with pytest.raises(PolicyError) as exc:
        Policy({"conv1": LayerPolicy(1.5)}).validate()
    assert exc.value.field == "conv1"


def test_the_service_maps_errors_to_status_codes_by_class_and_names_the_field():
    from services.errors import (IdempotencyConflict, QueueFull, ShuttingDown, SpecError, UploadError,
                                 UploadTooLarge, abort_error, status_code)

    cases = [(SpecError("trials", "must be ≥ 1"), grpc.StatusCode.INVALID_ARGUMENT, "spec.trials: must be ≥ 1"),
             (SpecError("uploaded_model_id", "no upload", not_found=True), grpc.StatusCode.NOT_FOUND,
              "spec.uploaded_model_id: no upload"),
             (IdempotencyConflict(field="idempotency_key", reason="used"), grpc.StatusCode.ALREADY_EXISTS,
              "spec.idempotency_key: used"),
             (QueueFull(field="queue", reason="full"), grpc.StatusCode.RESOURCE_EXHAUSTED, "queue: full"),
             (ShuttingDown("going"), grpc.StatusCode.UNAVAILABLE, "going"),
             (UploadTooLarge("chunk: big"), grpc.StatusCode.RESOURCE_EXHAUSTED, "chunk: big"),
             (UploadError("header: twice"), grpc.StatusCode.INVALID_ARGUMENT, "header: twice"),
             (SearchFailed("nothing"), grpc.StatusCode.FAILED_PRECONDITION, "nothing")]

    class Context:
        def abort_with_status(self, status):
            self.status = status
            raise grpc.RpcError()

    for err, code, message in cases:
        assert status_code(err) == code, err
        ctx = Context()
        with pytest.raises(grpc.RpcError):  # a spec's fields are named from the request
            abort_error(ctx, err, prefix="spec." if isinstance(err, (SpecError, IdempotencyConflict)) else "")
        assert ctx.status.code == code and ctx.status.details == message


# -- one constant per default ------------------------------------------------------------------------
def test_each_default_is_one_named_constant():
    from automl.search.base import StrategyOptions
    from automl.search.runner import SearchConfig
    from services.catalog import Catalog
    from services.cli.main import build_parser
    from services.cli.service_cmds import SUBMIT_DEFAULTS

    args = build_parser().parse_args(["search", "--model", "lenet5", "--budget", "size_mb=0.5x", "--out", "x"])
    config = SearchConfig(model="lenet5")
    assert args.trials == config.trials == StrategyOptions().trials == SUBMIT_DEFAULTS["trials"] == DEFAULT_TRIALS
    assert args.strategy == config.strategy == SUBMIT_DEFAULTS["strategy"] == DEFAULT_STRATEGY
    assert args.epochs == config.epochs == DEFAULT_BASELINE_EPOCHS
    assert args.objective == config.objective == StrategyOptions().objective == DEFAULT_OBJECTIVE
    assert args.rl_mode == config.rl_mode == DEFAULT_RL_MODE
    stored = Catalog().validate(pb.JobSpec(model="lenet5", trials=2, budgets=[pb.Budget(
        metric=pb.BUDGET_METRIC_SIZE_MB, value=0.5, relative=True)]))
    assert stored["strategy"] == DEFAULT_STRATEGY and stored["epochs"] == DEFAULT_BASELINE_EPOCHS
