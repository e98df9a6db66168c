"""Device backends: the registry, the built-ins' bit rules (as they were before the backends),
a device added at run time working through every generic path without another module changing,
and no string tests of a profile's kind or runtime left outside ``latency_models/devices``."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

from automl.core import FLOAT_BITS, LayerInfo, ModelInfo, Policy
from latency_models.devices import (DeviceBackend, SimulatedBackend, UnknownBackendError, backend_names,
                                    get_backend, register_backend, unregister_backend)
from latency_models.devices.bitfusion_sim import BitFusionSimBackend
from latency_models.devices.cpu_ort import CpuOrtBackend
from latency_models.devices.cpu_torch import CpuTorchBackend
from latency_models.devices.cuda_torch import CudaTorchBackend
from latency_models.grid import layer_at, plan_grid
from latency_models.predictor import Predictor, profile_of
from latency_models.profile import PROFILES, HardwareProfile, get_profile
from latency_models.table import LatencyTable, TableEntry, TableMetadata
from latency_models.timing import Runner

BUILTINS = {"cpu-ort": CpuOrtBackend, "cpu-torch": CpuTorchBackend, "cuda-torch": CudaTorchBackend,
            "bitfusion-sim": BitFusionSimBackend}
BITS = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, FLOAT_BITS)
ROOT = Path(__file__).resolve().parent.parent


def _toy() -> ModelInfo:
    l0 = LayerInfo("c0", "conv", 1, 16, 3, 1, 1, 1, (8, 8), (8, 8), has_bn=True, activation="relu",
                   prune_group="c0", index=0)
    l1 = LayerInfo("c1", "conv", 16, 16, 3, 1, 1, 1, (8, 8), (8, 8), has_bn=True, activation="relu",
                   prune_group="c1", index=1, input_group="c0")
    l2 = LayerInfo("fc", "linear", 16, 10, prunable=False, index=2, input_group="c1")
    return ModelInfo("toy", (1, 8, 8), 10, (l0, l1, l2))


def _empty_table(profile: HardwareProfile) -> LatencyTable:
    return LatencyTable(TableMetadata(
        device=profile.name, runtime=profile.runtime, runtime_version=profile.runtime_version(),
        threads=profile.threads, batch=profile.batch, hardware=profile.hardware,
        channel_step=profile.channel_step, precisions=list(profile.precisions)))


# ---- the registry --------------------------------------------------------------------------
def test_the_registry_lists_the_four_builtin_backends():
    assert backend_names() == sorted(BUILTINS)
    for name, cls in BUILTINS.items():
        assert get_backend(name) is cls
        prof = PROFILES[name]
        assert type(prof.backend) is cls and prof.backend.profile is prof
        # the profile records exactly the kind and runtime its backend declares
        assert (prof.kind, prof.runtime) == (cls.kind, cls.runtime)


def test_an_unknown_backend_is_a_clear_error_naming_the_known_ones():
    with pytest.raises(UnknownBackendError) as exc:
        get_backend("tpu-v9")
    assert "tpu-v9" in str(exc.value)
    assert all(name in str(exc.value) for name in BUILTINS)
    assert isinstance(exc.value, ValueError)      # what callers of get_profile already catch
    orphan = HardwareProfile("tpu-v9", "tpu", "xla", ("bf16",))
    with pytest.raises(UnknownBackendError, match="register_backend"):
        orphan.precision_for(8, 8)


def test_registering_checks_the_class_and_refuses_a_second_class_under_a_taken_name():
    class Impostor(CpuOrtBackend):
        pass
    with pytest.raises(ValueError, match="already registered"):
        register_backend(Impostor)
    assert register_backend(CpuOrtBackend) is CpuOrtBackend          # the same class again: fine
    with pytest.raises(TypeError):
        register_backend(dict)                                       # type: ignore[arg-type]

    class Nameless(CpuOrtBackend):
        name = ""
    with pytest.raises(TypeError, match="name"):
        register_backend(Nameless)
    assert get_backend("cpu-ort") is CpuOrtBackend


# ---- the built-ins behave as before ----------------------------------------------------------
def _old_precision_for(prof: HardwareProfile, w: int, a: int) -> str:
    """HardwareProfile.precision_for as it was written before the backends (the reference)."""
    if prof.kind == "simulated":
        return f"w{16 if w > 8 else w}a{16 if a > 8 else a}"
    if "int8" in prof.precisions and w <= 8 and a <= 8:
        return "int8"
    if "fp16" in prof.precisions and w <= 16 and a <= 16:
        return "fp16"
    return "fp32"


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_precision_for_matches_the_old_rule(name):
    prof = get_profile(name, 2)
    for w in BITS:
        for a in BITS:
            assert prof.precision_for(w, a) == _old_precision_for(prof, w, a), (name, w, a)
    # every precision a searchable policy maps to is one its table is built at
    bits = [b for b in BITS if b >= 2]
    assert {prof.precision_for(w, a) for w in bits for a in bits} <= set(prof.precisions)


def test_the_builtins_facts():
    from automl.search.problem import searchable_bits

    ort, torch_cpu, cuda, sim = (PROFILES[n] for n in ("cpu-ort", "cpu-torch", "cuda-torch", "bitfusion-sim"))
    assert searchable_bits(ort) == (FLOAT_BITS, 8)
    assert searchable_bits(torch_cpu) == searchable_bits(cuda) == (FLOAT_BITS,)
    assert searchable_bits(sim) == (2, 3, 4, 5, 6, 7, 8)
    assert [p.backend.measures_latency for p in (ort, torch_cpu, cuda, sim)] == [True, True, True, False]
    assert [p.backend.per_layer_bits for p in (ort, torch_cpu, cuda, sim)] == [False, False, False, True]
    assert [p.backend.runs_onnx for p in (ort, torch_cpu, cuda, sim)] == [True, False, False, False]
    assert [p.backend.torch_device for p in (ort, torch_cpu, cuda)] == ["cpu", "cpu", "cuda"]
    assert sim.hardware == sim.params["hardware"] and sim.runtime_version() == "1"
    assert sim.backend.energy_meter() is None
    assert ort.hardware == torch_cpu.hardware        # both the host CPU
    with pytest.raises(ValueError, match="simulated"):
        sim.backend.layer_runner(_toy().layers[0], 1, 16, "w8a8")
    with pytest.raises(NotImplementedError, match="measures"):
        ort.backend.simulate_table(_empty_table(ort), _toy(), 2)


def test_a_profile_rebuilt_from_a_table_under_another_name_finds_its_backend():
    """Tables of devices not in PROFILES (an older name, another machine's profile) resolve by
    kind and runtime, as ``profile_of`` has always read them."""
    for runtime, cls in [("onnxruntime", CpuOrtBackend), ("torch", CpuTorchBackend),
                         ("bitfusion-sim", BitFusionSimBackend), ("other-sim", BitFusionSimBackend),
                         ("tvm", CpuOrtBackend)]:
        table = LatencyTable(TableMetadata(device="renamed", runtime=runtime, runtime_version="1",
                                           threads=1, batch=1, hardware="h", channel_step=8,
                                           precisions=["fp32", "int8"]))
        prof = profile_of(table)
        assert type(prof.backend) is cls, runtime
        assert prof.runtime == runtime and prof.name == "renamed"


def test_the_cached_backend_is_not_part_of_the_record():
    prof = get_profile("cpu-ort", 3)
    assert prof.backend is prof.backend                         # resolved once
    back = pickle.loads(pickle.dumps(prof))
    assert back == prof and "backend" not in back.__dict__       # re-resolved, not shipped
    assert back.backend.profile is back and back.with_threads(1).backend.profile.threads == 1


# ---- a device added at run time ------------------------------------------------------------
class FakeNpu(SimulatedBackend):
    """A 4/8-bit NPU known only to this test: latency ∝ MACs, halved at 4 bits."""

    name = "fake-npu"
    kind = "npu"
    runtime = "fake-npu-rt"

    def precision_for(self, w_bits: int, a_bits: int) -> str:
        return "int4" if max(w_bits, a_bits) <= 4 else "int8"

    def search_bits(self) -> tuple[int, ...]:
        return (4, 8)

    def simulate_table(self, table: LatencyTable, info: ModelInfo, points: int) -> int:
        n = 0
        for plan in plan_grid(info, self.profile.channel_step, points):
            for cin, cout in plan.points():
                macs = layer_at(plan.layer, cin, cout).macs
                for prec, k in (("int4", 0.5), ("int8", 1.0)):
                    lat = 1e-3 + k * macs * 1e-7
                    table.add(TableEntry(plan.key, cin, cout, prec, lat, 0.0, lat, 0,
                                         latency_source="simulated", energy_mj=k * macs * 1e-9,
                                         energy_source="modeled"))
                    n += 1
        return n


class FakeTimedCpu(DeviceBackend):
    """A measured device whose 'runtime' is a plain Python call: how it profiles is its own."""

    name = "fake-timed"
    kind = "fake-cpu"
    runtime = "python"
    calls: list[tuple[int, int, str]] = []

    def hardware(self) -> str:
        return "a test's imagination"

    def runtime_version(self) -> str:
        return "0"

    def layer_runner(self, layer: LayerInfo, cin: int, cout: int, precision: str) -> Runner:
        self.calls.append((cin, cout, precision))
        return Runner([lambda: sum(range(cin * cout // 16 + 1))])


@pytest.fixture
def fake_devices():
    register_backend(FakeNpu)
    register_backend(FakeTimedCpu)
    FakeTimedCpu.calls = []
    yield
    unregister_backend(FakeNpu.name)
    unregister_backend(FakeTimedCpu.name)


def test_a_backend_registered_at_run_time_drives_a_profile_end_to_end(fake_devices):
    from automl.search.problem import searchable_bits

    assert {"fake-npu", "fake-timed"} <= set(backend_names())
    prof = HardwareProfile("fake-npu", "npu", "fake-npu-rt", ("int4", "int8"), channel_step=8)
    assert isinstance(prof.backend, FakeNpu)
    assert (prof.precision_for(4, 3), prof.precision_for(8, 8), prof.precision_for(32, 32)) == \
        ("int4", "int8", "int8")
    assert searchable_bits(prof) == (4, 8)
    assert not prof.backend.measures_latency and prof.backend.per_layer_bits
    assert prof.hardware == "fake-npu"                    # a simulator without params: its name

    info = _toy()
    table = _empty_table(prof)
    assert prof.backend.simulate_table(table, info, points=3) > 0
    # a predictor over its table, given the profile or finding it from the table's metadata alone
    for pred in (Predictor(table, prof, warn=False), Predictor(table, warn=False)):
        assert isinstance(pred.profile.backend, FakeNpu)
        lat4, e4 = pred.predict(info, Policy.uniform(info, 1.0, 4, 4))
        lat8, e8 = pred.predict(info, Policy.uniform(info, 1.0, 8, 8))
        half8, _ = pred.predict(info, Policy.uniform(info, 0.5, 8, 8))
        assert lat4 < lat8 and e4 < e8 and half8 < lat8


def test_a_measured_backend_registered_at_run_time_is_profiled_through_its_runner(fake_devices):
    from latency_models.profiler import profile_layers

    prof = HardwareProfile("fake-timed", "fake-cpu", "python", ("fp32", "int8"), channel_step=8)
    info = _toy()
    table = _empty_table(prof)
    n = profile_layers(table, info, prof, points=2, progress=False)
    assert n == len(table.entries) > 0 and table.overhead_ms > 0
    entries = list(table.entries.values())
    assert {e.precision for e in entries} == {"fp32", "int8"}
    assert all(e.latency_source == "measured" and e.energy_source == "modeled" for e in entries)
    assert (1, 1, "fp32") in FakeTimedCpu.calls          # the default overhead runner: a 1 -> 1 layer
    assert {p for _, _, p in FakeTimedCpu.calls} == {"fp32", "int8"}


# ---- no kind/runtime string tests outside the backends -----------------------------------------
PACKAGES = ("automl", "agents", "services", "latency_models", "bench")
KNOWN = {c.kind for c in BUILTINS.values()} | {c.runtime for c in BUILTINS.values()}


def _is_kind_or_runtime(node: ast.AST) -> bool:
    """``x.kind`` / ``x.runtime``, or a local named like one (``kind``, ``profile_kind``)."""
    if isinstance(node, ast.Attribute):
        return node.attr in ("kind", "runtime")
    return isinstance(node, ast.Name) and node.id.endswith(("kind", "runtime"))


def _string_literals(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _string_literals(e)]
    return []


def _offences(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for subject in filter(_is_kind_or_runtime, sides):
                literals = [s for other in sides if other is not subject for s in _string_literals(other)]
                # an attribute against any literal; a bare local only against a device's value
                # (``kind == "trial"`` for an event kind is not a device test)
                if literals and (isinstance(subject, ast.Attribute) or set(literals) & KNOWN):
                    found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith") and _is_kind_or_runtime(node.func.value)
              and isinstance(node.func.value, ast.Attribute)):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_checker_catches_the_forms_it_replaced():
    src = ('a = profile.kind == "simulated"\nb = p.runtime != "onnxruntime"\nc = x.kind in ("cuda", "cpu")\n'
           'd = md.runtime.endswith("-sim")\ne = "cuda" == prof.kind\nf = profile_kind == "simulated"\n'
           'g = kind == "cuda"\nok1 = kind == "trial"\nok2 = prof.backend.measures_latency\n')
    assert [line for line, _ in _offences(ast.parse(src))] == [1, 2, 3, 4, 5, 6, 7]


def test_no_module_outside_the_backends_tests_a_profile_kind_or_runtime_by_string():
    devices = ROOT / "latency_models" / "devices"
    offences = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if devices in path.parents or "_pb2" in path.name:
                continue
            for line, text in _offences(ast.parse(path.read_text(), str(path))):
                offences.append(f"{path.relative_to(ROOT)}:{line}: {text}")
    assert not offences, "ask the profile's backend instead:\n" + "\n".join(offences)
