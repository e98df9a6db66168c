"""The deploy files, validated offline: YAML parses, each manifest has the fields its kind
requires, the pieces point at each other (ports, selectors, names), generated copies are
current. (No container engine or cluster here: nothing is applied or run.)"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


def _expand(word: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env[m.group(1)], word)


def _steps(command: list[str] | str, env: dict[str, str]) -> list[list[str]]:
    """A container's command as the argv of each program it runs: ``["sh", "-c", "a && exec b"]``
    -> [a's argv, b's argv], split and $VARs expanded as the shell would; a plain command -> [it]."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] != ["sh", "-c"]:
        return [argv]
    assert len(argv) == 3 and "||" not in argv[2] and ";" not in argv[2], argv
    steps = []
    for part in argv[2].split("&&"):
        words = [_expand(w, env) for w in shlex.split(part)]
        steps.append(words[1:] if words[0] == "exec" else words)
    return steps


def _option(argv: list[str], name: str) -> str | None:
    """``--name value`` or ``--name=value`` in argv (the last one wins, as in click/argparse)."""
    found = None
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            found = argv[i + 1]
        elif word.startswith(name + "="):
            found = word.split("=", 1)[1]
    return found


def _service_steps(steps: list[list[str]]) -> tuple[list[str], list[str]]:
    """The service container's `ray start` (joining the cluster) and `hwcompress serve` argv."""
    assert len(steps) == 2, steps
    ray_start, serve = steps
    assert ray_start[:2] == ["ray", "start"] and serve[:2] == ["hwcompress", "serve"], steps
    return ray_start, serve


def _assert_driver_can_use(ray_start: list[str], serve: list[str], head: str) -> None:
    """The server's Ray address works for a driver outside the head: Ray Client (ray://), or the
    head's GCS address with a raylet joined to that same head in the container first (a driver
    needs a raylet on its own node; a bare GCS address from elsewhere fails)."""
    address = _option(serve, "--ray-address")
    assert address, serve
    if address.startswith("ray://"):
        return
    assert address == head, (address, head)
    assert "--head" not in ray_start and _option(ray_start, "--address") == head, ray_start
    assert _option(ray_start, "--num-cpus") == "0", "no trials beside the server"
    assert "--block" not in ray_start, "the raylet must be up before the server starts"


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
    env = {e["name"]: e.get("value") for e in c["env"]}
    ray_start, serve = _service_steps(_steps(c["command"] + c["args"], env))
    assert "50051" in serve and "9464" in serve
    # probes use gRPC health checking on the gRPC port
    assert c["readinessProbe"]["grpc"]["port"] == 50051
    assert c["readinessProbe"]["grpc"]["service"] == "hwcompress.v1.CompressionService"
    assert c["livenessProbe"]["grpc"]["port"] == 50051
    ray = {(d["kind"]): d for d in _docs("raycluster.yaml")}["RayCluster"]
    head = f"{ray['metadata']['name']}-head-svc.{ray['metadata']['namespace']}.svc.cluster.local:6379"
    assert env["RAY_ADDRESS"] == head  # KubeRay's head service, its GCS port
    _assert_driver_can_use(ray_start, serve, head)
    # the raylet's object store gets a real /dev/shm (a pod's is 64 MiB)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    shm = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if mounts.get(v["name"]) == "/dev/shm")
    assert shm["emptyDir"]["medium"] == "Memory"
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


def _token_sources_k8s(container: dict) -> tuple[str | None, object]:
    env = {e["name"]: e for e in container.get("env", [])}
    mode = env.get("RAY_AUTH_MODE", {}).get("value")
    token = env.get("RAY_AUTH_TOKEN", {})
    assert "value" not in token, "the token comes from a secret, never a literal"
    return mode, token.get("valueFrom")


def test_ray_token_reaches_every_ray_process_k8s():
    """Head, every worker group and the service (a driver on a raylet of its own) read RAY_AUTH_MODE
    and RAY_AUTH_TOKEN, the token from one and the same secret."""
    ray = _docs("raycluster.yaml")[0]
    containers = [ray["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]]
    containers += [g["template"]["spec"]["containers"][0] for g in ray["spec"]["workerGroupSpecs"]]
    dep = next(d for d in _docs("hwcompress.yaml") if d["kind"] == "Deployment")
    containers.append(dep["spec"]["template"]["spec"]["containers"][0])
    sources = [_token_sources_k8s(c) for c in containers]
    assert all(mode == "token" for mode, _ in sources), sources
    refs = {json.dumps(ref, sort_keys=True) for _, ref in sources}
    assert len(refs) == 1 and None not in [ref for _, ref in sources], sources
    assert json.loads(refs.pop())["secretKeyRef"]["key"] == "auth_token"


def test_ray_token_reaches_every_ray_process_compose():
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    ray_services = [name for name, svc in services.items()
                    if any(step[:2] == ["ray", "start"] for step in _steps(svc.get("command", "true"), {}))]
    assert set(ray_services) == {"ray-head", "ray-worker", "hwcompress"}, ray_services
    tokens = set()
    for name in ray_services:
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        tokens.add(env["RAY_AUTH_TOKEN"])
    # one variable of the environment `docker compose up` runs in, required (${VAR:?...})
    assert len(tokens) == 1 and tokens.pop().startswith("${RAY_AUTH_TOKEN:?")


def test_compose_service_is_a_cluster_driver(monkeypatch):
    hw = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["hwcompress"]
    ray_start, serve = _service_steps(_steps(hw["command"], {}))
    _assert_driver_can_use(ray_start, serve, "ray-head:6379")
    assert hw["init"] is True  # PID 1 reaps the raylet's orphans and forwards SIGTERM
    assert hw["shm_size"]
    # the real CLI reads the same address into the server's config
    cfg = _serve_config(serve[1:], {"HWCOMPRESS_AUTH_TOKEN": "s3cret"}, monkeypatch)
    assert cfg.ray_address == "ray-head:6379"


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
    _, serve = _service_steps(_steps(hw["command"], {}))
    assert _option(serve, "--ray-address") == "ray-head:6379"
    assert _option(_steps(services["ray-worker"]["command"], {})[0], "--address") == "ray-head:6379"
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
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    _, serve = _service_steps(_steps(c["command"] + c["args"], env))
    assert "--insecure" not in serve
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    secret_volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert any(env["HWCOMPRESS_AUTH_TOKEN_FILE"].startswith(mounts[v] + "/") for v in secret_volumes)
    env = {k: v for k, v in env.items() if k.startswith("HWCOMPRESS_")}
    env["HWCOMPRESS_AUTH_TOKEN_FILE"] = str(token)
    cfg = _serve_config(serve[1:], env, monkeypatch)
    _assert_reachable_and_authenticated(cfg)
    assert cfg.auth_token == "s3cret"
    # docker compose: the token comes from the caller's environment, required (${VAR:?...})
    hw = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["hwcompress"]
    _, argv = _service_steps(_steps(hw["command"], {}))
    assert "--insecure" not in argv
    assert hw["environment"]["HWCOMPRESS_AUTH_TOKEN"].startswith("${HWCOMPRESS_AUTH_TOKEN:?")
    compose_env = {k: str(v) for k, v in hw["environment"].items()
                   if k.startswith("HWCOMPRESS_")} | {"HWCOMPRESS_AUTH_TOKEN": "s3cret"}
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
