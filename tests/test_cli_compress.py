"""`hwcompress compress` and `hwcompress policy template`, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], cwd=ROOT,
                          capture_output=True, text=True, check=check, env={**os.environ})


def test_policy_template_then_compress(tmp_path):
    tpl = json.loads(_cli("policy", "template", "--model", "lenet5").stdout)
    assert set(tpl["layers"]) == {"features.0", "features.4", "classifier.1", "classifier.3", "classifier.5"}
    for name in ("features.0", "features.4", "classifier.1"):
        tpl["layers"][name].update(keep_ratio=0.5, w_bits=8, a_bits=8)
    (tmp_path / "p.json").write_text(json.dumps(tpl))
    out = tmp_path / "out"
    _cli("compress", "--model", "lenet5", "--data", "digits", "--policy", str(tmp_path / "p.json"),
         "--out", str(out))
    result = json.loads((out / "result.json").read_text())
    for side in ("original", "compressed"):
        for key in ("accuracy", "macs", "params", "size_mb", "latency_ms_measured"):
            assert key in result[side], (side, key)
    assert result["compressed"]["macs"] < result["original"]["macs"]
    assert result["compressed"]["size_mb"] < result["original"]["size_mb"] / 3
    assert result["original"]["accuracy"] > 0.9
    onnx.checker.check_model(onnx.load(out / "compressed.onnx"))
    # three int8 layers: their weights are 7-bit where this CPU's int8 GEMM saturates, else 8
    from latency_models.onnx_runtime import int8_gemm_saturates
    assert result["compressed"]["int8_weight_bits"] == (7 if int8_gemm_saturates() else 8)


def test_compress_bad_policy_names_the_layer(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"layers": {"features.4": {"keep_ratio": 1.5}}}))
    r = _cli("compress", "--model", "lenet5", "--policy", str(tmp_path / "p.json"), "--out",
             str(tmp_path / "o"), check=False)
    assert r.returncode == 2
    assert "features.4" in r.stderr and "keep_ratio=1.5" in r.stderr
