"""bench.lut_fidelity's ``--import-cell``: a fidelity cell recorded from a table built by
``hwcompress profile`` and a report written by ``hwcompress lut validate`` (how the 224×224 cells
of issue 14 were re-validated on new policies without rebuilding their tables)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import lut_fidelity

SHAPE = (1, 32, 32)


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(lut_fidelity, "RESULTS", tmp_path)
    monkeypatch.setattr(lut_fidelity, "this_hardware", lambda: "cpu-under-test")
    return tmp_path


def _write_report(path: Path, hardware: str, n: int) -> Path:
    path.write_text(json.dumps({"model": "resnet20", "input_shape": list(SHAPE), "hardware": hardware,
                                "n": n, "within_10pct": 1.0, "samples": [{"measured_ms": 0.2}] * n}))
    return path


def _cell_table(results: Path, entries: int) -> Path:
    table = lut_fidelity.table_path("resnet20", SHAPE, False)
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(json.dumps({"entries": {f"k{i}": {} for i in range(entries)}}))
    return table


def test_reimport_over_its_own_table_keeps_the_hold_out_table_facts_not_its_figures(results: Path) -> None:
    table = _cell_table(results, entries=3)
    report = _write_report(results / "new-report.json", "cpu-under-test", n=4)
    previous = {"holdout_calibrated": {"trained_on": ["vgg@1x32x32"], "table": "holdout-resnet20.json",
                                       "build_s": 79.0, "remainder_points": 32,
                                       "within_10pct": 0.97, "spearman": 0.95}}

    cell = lut_fidelity.import_cell("resnet20", SHAPE, table, report, 238.0, previous=previous)

    assert cell["table_entries"] == 3 and cell["table_build_s"] == 238.0
    assert cell["n"] == 4 and "samples" not in cell
    # the figures were of the replaced policies; what building the hold-out table cost stays
    assert cell["holdout_calibrated"] == {"trained_on": ["vgg@1x32x32"], "table": "holdout-resnet20.json",
                                          "build_s": 79.0, "remainder_points": 32}
    copied = json.loads((results / "lut_fidelity_resnet20_1x32x32.json").read_text())
    assert len(copied["samples"]) == 4


def test_import_copies_a_table_from_elsewhere_and_starts_without_hold_out(results: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "built-by-cli.json"
    elsewhere.write_text(json.dumps({"entries": {"a": {}, "b": {}}}))
    report = _write_report(results / "report.json", "cpu-under-test", n=2)

    cell = lut_fidelity.import_cell("resnet20", SHAPE, elsewhere, report, None)

    assert lut_fidelity.table_path("resnet20", SHAPE, False).read_text() == elsewhere.read_text()
    assert cell["table_entries"] == 2 and "holdout_calibrated" not in cell


def test_import_refuses_a_report_measured_on_another_cpu(results: Path) -> None:
    table = _cell_table(results, entries=1)
    report = _write_report(results / "report.json", "some other CPU", n=1)
    with pytest.raises(SystemExit, match="not this CPU"):
        lut_fidelity.import_cell("resnet20", SHAPE, table, report, None)
