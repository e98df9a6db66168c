"""promtool on deploy/prometheus: the configs load, the rules parse, the rule unit tests pass.
CI installs Debian's ``prometheus`` package (.ci/run); there a missing promtool is a failure,
locally (no $CI) the tests skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is not installed (apt-get install prometheus; .ci/run does)")
        pytest.skip(f"{binary} not installed (CI installs it)")
    return path


def promtool(*args: str, cwd: Path = DEPLOY / "prometheus") -> subprocess.CompletedProcess:
    proc = subprocess.run([require("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_check_config():
    promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))


def test_check_config_kubernetes_variant(tmp_path):
    """Debian's promtool is built without Kubernetes service discovery, so the pod discovery
    blocks are swapped for static targets; everything else (relabelling, rule files) is checked
    as written."""
    import yaml

    cfg = yaml.safe_load((DEPLOY / "k8s" / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["/etc/prometheus/alerts.yml"]
    cfg["rule_files"] = ["alerts.yml"]
    for job in cfg["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")[0]["role"] == "pod"
        job["static_configs"] = [{"targets": ["localhost:9464"]}]
    (tmp_path / "alerts.yml").write_text((DEPLOY / "prometheus" / "alerts.yml").read_text())
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    promtool("check", "config", "prometheus.yml", cwd=tmp_path)


def test_check_rules():
    out = promtool("check", "rules", "alerts.yml").stdout
    assert "SUCCESS: 7 rules found" in out


def test_rule_unit_tests():
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml").stdout
