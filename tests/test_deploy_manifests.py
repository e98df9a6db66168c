"""The deploy files, validated offline: YAML parses, each manifest has the fields its kind
requires, the pieces point at each other (ports, selectors, names), generated copies are
current. (No container engine or cluster here: nothing is applied or run.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


def _all_k8s() -> list[dict]:
    kust = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files, "kustomization must list every manifest"
    return [d for f in kust["resources"] for d in _docs(f)]


def test_generated_files_are_current():
    proc = subprocess.run([sys.executable, str(DEPLOY / "render.py"), "--check"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_manifest_has_its_required_fields():
    required_spec = {"Deployment": ["selector", "template"], "Service": ["ports"],
                     "PersistentVolumeClaim": ["accessModes", "resources"],
                     "RayCluster": ["headGroupSpec"], "Role": [], "RoleBinding": [],
                     "ServiceAccount": [], "ConfigMap": [], "Namespace": []}
    for doc in _all_k8s():
        kind = doc.get("kind")
        assert doc.get("apiVersion") and kind in required_spec, doc
        assert doc["metadata"]["name"]
        if kind != "Namespace":
            assert doc["metadata"]["namespace"] == "hwcompress", (kind, doc["metadata"])
        for field in required_spec[kind]:
            assert field in doc["spec"], (kind, field)
        if kind == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
            for c in doc["spec"]["template"]["spec"]["containers"]:
                assert c["name"] and c["image"]
        if kind == "RoleBinding":
            assert doc["roleRef"]["name"] and doc["subjects"]
        if kind == "ConfigMap":
            assert doc["data"]


def test_service_deployment_wiring():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _docs("hwcompress.yaml")}
    dep = docs[("Deployment", "hwcompress")]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9464}
    assert c["args"][:2] == ["hwcompress", "serve"] and "50051" in c["args"] and "9464" in c["args"]
    # probes use gRPC health checking on the gRPC port
    assert c["readinessProbe"]["grpc"]["port"] == 50051
    assert c["readinessProbe"]["grpc"]["service"] == "hwcompress.v1.CompressionService"
    assert c["livenessProbe"]["grpc"]["port"] == 50051
    env = {e["name"]: e.get("value") for e in c["env"]}
    ray = {(d["kind"]): d for d in _docs("raycluster.yaml")}["RayCluster"]
    assert env["RAY_ADDRESS"].startswith(f"{ray['metadata']['name']}-head-svc.")  # KubeRay's head service
    svc = docs[("Service", "hwcompress")]
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == set(ports)
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    claim = dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in docs


def test_raycluster():
    ray = _docs("raycluster.yaml")[0]
    assert ray["apiVersion"] == "ray.io/v1"
    head = ray["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["metrics-export-port"] == "8080"
    assert head["template"]["spec"]["containers"][0]["image"]
    for group in ray["spec"]["workerGroupSpecs"]:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"][0]["image"]
        assert "rayStartParams" in group


def test_configmaps_match_their_sources():
    dash = _docs("grafana-dashboard.yaml")[0]
    assert json.loads(dash["data"]["hwcompress.json"]) == json.loads(
        (DEPLOY / "grafana" / "dashboards" / "hwcompress.json").read_text())
    prom = _docs("prometheus-config.yaml")[0]
    assert prom["data"]["alerts.yml"] == (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert yaml.safe_load(prom["data"]["prometheus.yml"])["scrape_configs"]
    deployment = [d for d in _docs("prometheus.yaml") if d["kind"] == "Deployment"][0]
    vols = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": prom["metadata"]["name"]}} in vols


def test_compose_file():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"hwcompress", "ray-head", "ray-worker", "prometheus", "grafana"} <= set(services)
    hw = services["hwcompress"]
    assert "--ray-address ray-head:6379" in " ".join(hw["command"].split())
    assert "ray-head:6379" in services["ray-worker"]["command"]
    prom_cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prom_cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "hwcompress:9464" in targets and "ray-head:8080" in targets
    mounts = " ".join(services["grafana"]["volumes"])
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "hwcompress.yml").read_text())
    assert f"./grafana/dashboards:{provider['providers'][0]['options']['path']}" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning" in mounts
    for name in ("hwcompress", "ray-head", "ray-worker"):
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and 'CMD ["hwcompress", "serve"' in dockerfile


def _serve_config(argv: list[str], env: dict[str, str], monkeypatch):
    """``hwcompress serve`` ARGV under ENV, parsed by the real CLI into the server's config."""
    from services.cli.main import build_parser
    from services.cli.service_cmds import server_config

    for name in [k for k in os.environ if k.startswith("HWCOMPRESS_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(argv)  # flag defaults read the environment at build time
    assert args.command == "serve"
    return server_config(args)


def _assert_reachable_and_authenticated(config) -> None:
    from services.server import check_exposure

    assert config.host == "0.0.0.0" and config.metrics_host == "0.0.0.0", (config.host, config.metrics_host)
    assert not config.insecure and config.auth_token
    assert check_exposure(config) is None  # starts, with no --insecure warning


def test_containers_serve_every_interface_with_auth(tmp_path, monkeypatch):
    """The server binds loopback by default, which nothing outside a container reaches: every
    manifest binds 0.0.0.0 and wires the bearer token (never --insecure)."""
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    # Kubernetes: the token file is the mounted hwcompress-auth secret
    dep = {(d["kind"], d["metadata"]["name"]): d for d in _docs("hwcompress.yaml")}[("Deployment", "hwcompress")]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert "--insecure" not in c["args"]
    env = {e["name"]: e["value"] for e in c["env"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    secret_volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert any(env["HWCOMPRESS_AUTH_TOKEN_FILE"].startswith(mounts[v] + "/") for v in secret_volumes)
    env["HWCOMPRESS_AUTH_TOKEN_FILE"] = str(token)
    cfg = _serve_config(c["args"][1:], env, monkeypatch)
    _assert_reachable_and_authenticated(cfg)
    assert cfg.auth_token == "s3cret"
    # docker compose: the token comes from the caller's environment, required (${VAR:?...})
    hw = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["hwcompress"]
    argv = hw["command"].split()
    assert argv[0] == "hwcompress" and "--insecure" not in argv
    assert hw["environment"]["HWCOMPRESS_AUTH_TOKEN"].startswith("${HWCOMPRESS_AUTH_TOKEN:?")
    compose_env = {k: str(v) for k, v in hw["environment"].items()} | {"HWCOMPRESS_AUTH_TOKEN": "s3cret"}
    _assert_reachable_and_authenticated(_serve_config(argv[1:], compose_env, monkeypatch))
    # the image's default command: all interfaces, so it starts only when given a token
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    cmd = json.loads(next(line for line in text.splitlines() if line.startswith("CMD "))[4:])
    assert "--insecure" not in cmd
    _assert_reachable_and_authenticated(_serve_config(cmd[1:], {"HWCOMPRESS_AUTH_TOKEN_FILE": str(token)},
                                                      monkeypatch))
    from services.server import check_exposure
    with pytest.raises(ValueError, match="--insecure"):
        check_exposure(_serve_config(cmd[1:], {}, monkeypatch))
