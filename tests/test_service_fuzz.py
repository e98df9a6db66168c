"""Hypothesis-generated JobSpecs against a real server on a loopback port: the server never
crashes, and every rejection is INVALID_ARGUMENT (NOT_FOUND for an unknown upload id) whose
message starts with a real JobSpec field path, at most 1 KiB, with a BadRequest naming the same
field. Accepted specs run the test-only instant work function (what a job computes is not the
point here)."""

from __future__ import annotations

import math
import re

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.client import Client
from services.errors import bad_request
from services.proto.hwcompress.v1 import service_pb2 as pb

from .test_service_api import _service, instant_work_for_tests

FIELD_RE = re.compile(r"^spec\.(model|uploaded_model_id|dataset|hardware_profile|latency_table|"
                      r"budgets(\[\d+\]\.(metric|value))?|strategy|trials|seed|finetune_epochs|"
                      r"idempotency_key|rl_mode|baseline_epochs)$")
INT32 = st.integers(-2**31, 2**31 - 1)


def names(*known: str) -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=40), st.text(min_size=120, max_size=300), st.just(""),
                     st.sampled_from(known))


def mostly(draw, valid: st.SearchStrategy, invalid: st.SearchStrategy):
    """Valid 5 times in 6, so specs get past their first field and the later checks are hit."""
    return draw(valid if draw(st.integers(0, 5)) else invalid)


valid_budget = st.builds(pb.Budget, metric=st.integers(1, 4), value=st.floats(0.05, 1.0),
                         relative=st.just(True))
any_budget = st.builds(pb.Budget, metric=st.one_of(st.integers(-6, 6), INT32),
                       value=st.floats(allow_nan=True, allow_infinity=True), relative=st.booleans())


@st.composite
def job_specs(draw) -> pb.JobSpec:
    budget = lambda: mostly(draw, valid_budget, any_budget)  # noqa: E731
    n_budgets = mostly(draw, st.integers(1, 2), st.integers(0, 6))
    msg = pb.JobSpec(
        dataset=mostly(draw, st.sampled_from(["digits", "digits@16", "", "digits@32"]),
                       names("digits@600", "mnist:/etc/passwd", "digits@x", "digits@-3", "..")),
        hardware_profile=mostly(draw, st.sampled_from(["", "cpu-ort", "bitfusion-sim"]), names("tpu")),
        latency_table=mostly(draw, st.just(""), names("t1")),
        budgets=[budget() for _ in range(n_budgets)],
        strategy=mostly(draw, st.sampled_from(["", "uniform", "random", "ddpg"]), names("annealing")),
        trials=mostly(draw, st.integers(1, 20), st.one_of(st.integers(-2, 0), INT32)),
        seed=mostly(draw, st.integers(0, 100), st.integers(-2**63, 2**63 - 1)),
        idempotency_key=mostly(draw, st.just(""), st.one_of(
            st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True), st.text(max_size=200))),
        rl_mode=mostly(draw, st.integers(0, 3), INT32),
        baseline_epochs=mostly(draw, st.integers(0, 3), INT32))
    if mostly(draw, st.just(True), st.just(False)):
        msg.model = mostly(draw, st.sampled_from(["lenet5", "vgg"]), names("resnet9000", "os:system"))
    else:
        msg.uploaded_model_id = draw(names("upl-0123456789abcdef"))
    if draw(st.booleans()):
        msg.finetune_epochs = mostly(draw, st.floats(0, 3), st.floats(allow_nan=True, allow_infinity=True))
    return msg


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    svc = _service(tmp_path_factory.mktemp("fuzz"), instant_work_for_tests, max_queued=10_000)
    yield svc
    svc.stop()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=job_specs())
def test_fuzzed_job_specs_are_accepted_or_refused_naming_their_field(fuzz_server, spec):
    with Client(f"127.0.0.1:{fuzz_server.port}", timeout=10) as c:
        try:
            job = c.submit(spec)
        except grpc.RpcError as exc:
            details = exc.details() or ""
            assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                  grpc.StatusCode.ALREADY_EXISTS), (exc.code(), details)
            assert len(details.encode()) <= 1024
            field = details.partition(": ")[0]
            event(f"refused: {re.sub(r'[0-9]+', 'N', field)}")
            assert FIELD_RE.match(field), details
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                assert [f for f, _ in bad_request(exc)] == [field], (details, bad_request(exc))
            elif exc.code() == grpc.StatusCode.NOT_FOUND:
                assert field == "spec.uploaded_model_id"
            return
        event("accepted")  # a sane spec
        assert job.id.startswith("job-") and 1 <= job.spec.trials <= 10_000
        assert all(1 <= b.metric <= 4 and math.isfinite(b.value) for b in job.spec.budgets)
        assert job.spec.rl_mode in (1, 2, 3)


def test_the_server_is_still_healthy_after_the_fuzzing(fuzz_server):
    with grpc.insecure_channel(f"127.0.0.1:{fuzz_server.port}") as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
