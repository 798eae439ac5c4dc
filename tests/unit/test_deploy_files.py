"""The deployment files: compose.yaml, workers/Dockerfile, workers/entrypoint.sh and workers/k8s/.

All offline, with no Docker engine and no cluster: compose.yaml is checked against the Compose
Specification schema vendored in the check-jsonschema wheel, and the Kubernetes manifests against
the per-version Kubernetes schemas shipped in the kubernetes-validate wheel (strict mode, so an
unknown or misspelt field fails too). Then the operational rules the schemas cannot express.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from resilient.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
WORKERS = ROOT / "workers"
DOCKERFILE = WORKERS / "Dockerfile"
ENTRYPOINT = WORKERS / "entrypoint.sh"
K8S = WORKERS / "k8s"

DEFAULT_GRACE = Settings().shutdown_grace  # RESILIENT_SHUTDOWN_GRACE when a file does not set it
K8S_VERSIONS = ["1.29", kubernetes_validate.latest_version()]  # oldest supported and newest known


# --- helpers -----------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|h|m|s)")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(duration: str | int | float) -> float:
    """A Compose duration ('30s', '1m30s', '1h') in seconds."""
    if isinstance(duration, (int, float)):
        return float(duration)
    text = duration.strip()
    parts = _DURATION.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {duration!r}"
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$")
_QUANTITY_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,  # Docker: binary
    "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4,  # Kubernetes binary suffixes
}
_K8S_DECIMAL = {"k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}


def docker_bytes(size: str | int) -> int:
    """A Docker/Compose memory size ('1g', '512m', '1024') in bytes."""
    match = _QUANTITY.match(str(size))
    assert match and match.group(2).lower() in _QUANTITY_UNITS, f"not a size: {size!r}"
    return int(float(match.group(1)) * _QUANTITY_UNITS[match.group(2).lower()])


def k8s_bytes(quantity: str | int) -> int:
    """A Kubernetes memory quantity ('1Gi', '256Mi', '1G', '500M') in bytes."""
    match = _QUANTITY.match(str(quantity))
    assert match, f"not a quantity: {quantity!r}"
    number, suffix = float(match.group(1)), match.group(2)
    if suffix in _K8S_DECIMAL:
        return int(number * _K8S_DECIMAL[suffix])
    assert suffix.lower() in ("", "ki", "mi", "gi", "ti"), f"not a memory quantity: {quantity!r}"
    return int(number * _QUANTITY_UNITS[suffix.lower()])


def env_map(environment: Any) -> dict[str, str]:
    """A Compose `environment` (a mapping or a list of KEY=VALUE) as a dict."""
    if environment is None:
        return {}
    if isinstance(environment, dict):
        return {k: "" if v is None else str(v) for k, v in environment.items()}
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)


def as_argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command or []]


# --- compose.yaml ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def test_compose_file_matches_the_compose_spec_schema(compose, compose_schema) -> None:
    assert compose_schema.get("title") == "Compose Specification"
    validator_cls = jsonschema.validators.validator_for(compose_schema)
    validator_cls.check_schema(compose_schema)
    validator = validator_cls(compose_schema, format_checker=validator_cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_schema_check_catches_a_misspelt_field(compose, compose_schema) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["stop_grace_periods"] = "30s"
    validator = jsonschema.validators.validator_for(compose_schema)(compose_schema)
    assert not validator.is_valid(broken)


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _builds_worker_image(service: dict[str, Any]) -> bool:
    build = service.get("build")
    return isinstance(build, dict) and Path(build.get("dockerfile", "")).as_posix() == "workers/Dockerfile"


def _runs_workers(service: dict[str, Any]) -> bool:
    """Runs job workers: the image's default command (supervisor --workers) or an explicit one."""
    if not _builds_worker_image(service) or "entrypoint" in service:
        return False
    argv = as_argv(service.get("command"))
    return not argv or argv[0].startswith("-") or "worker" in argv or "--workers" in argv


def _memory_limit(service: dict[str, Any]) -> int | None:
    deploy_limit = (service.get("deploy") or {}).get("resources", {}).get("limits", {}).get("memory")
    mem_limit = service.get("mem_limit")
    if deploy_limit is not None and mem_limit is not None:
        assert docker_bytes(deploy_limit) == docker_bytes(mem_limit), "mem_limit and deploy limit differ"
    limit = deploy_limit if deploy_limit is not None else mem_limit
    return None if limit is None else docker_bytes(limit)


def _is_one_shot(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "no")) == "no" and bool(service.get("profiles"))


def test_compose_has_redis_worker_supervisor_and_a_demo_profile(compose) -> None:
    services = _services(compose)
    assert {"redis", "worker", "supervisor"} <= set(services)
    workers = [name for name, s in services.items() if _runs_workers(s)]
    assert workers == ["worker"]
    assert as_argv(services["supervisor"].get("command")) == ["supervisor"]
    demo = [s for s in services.values() if "demo" in (s.get("profiles") or [])]
    assert demo, "no service in the `demo` profile"
    script = " ".join(as_argv(demo[0].get("entrypoint")) + as_argv(demo[0].get("command")))
    assert "resilient enqueue examples.squares.sum_squares" in script


def test_every_long_running_service_has_a_memory_limit(compose) -> None:
    for name, service in _services(compose).items():
        if not _is_one_shot(service):
            assert _memory_limit(service), f"service {name} has no memory limit"


def test_worker_service(compose) -> None:
    worker = _services(compose)["worker"]
    limit = _memory_limit(worker)
    assert limit and limit >= 256 * 1024**2
    if "memswap_limit" in worker:  # swap off: the governor's L is all the job can use
        assert docker_bytes(worker["memswap_limit"]) == limit
    assert worker["deploy"]["replicas"] >= 2
    assert worker["deploy"].get("mode") == "replicated", "podman-compose ignores replicas without mode: replicated"
    assert worker.get("restart") in ("always", "unless-stopped", "on-failure") or worker["deploy"].get(
        "restart_policy"
    )
    env = env_map(worker.get("environment"))
    assert env["REDIS_URL"] == "redis://redis:6379/0" or "REDIS_URL_FILE" in env
    assert env.get("RESILIENT_JOB_MODULES")
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    test = " ".join(as_argv(worker["healthcheck"]["test"]))
    assert "resilient health --live" in test and "resilient health --ready" in test


def test_workers_that_share_a_container_share_its_limit(compose) -> None:
    """N workers per container or pod form one limit group only under the container's own cgroup limit:
    RESILIENT_MEMORY_LIMIT would give each a cgroup of its own."""
    worker = _services(compose)["worker"]
    assert "RESILIENT_MEMORY_LIMIT" not in env_map(worker.get("environment"))
    (container,) = _deployment("worker")["spec"]["template"]["spec"]["containers"]
    assert "RESILIENT_MEMORY_LIMIT" not in {e["name"] for e in container.get("env", [])}


def test_stop_grace_period_is_longer_than_the_checkpoint_grace(compose) -> None:
    for name, service in _services(compose).items():
        if not _builds_worker_image(service) or _is_one_shot(service):
            continue
        grace = float(env_map(service.get("environment")).get("RESILIENT_SHUTDOWN_GRACE") or DEFAULT_GRACE)
        stop = seconds(service.get("stop_grace_period", "10s"))  # Docker's default is 10 s
        assert stop >= grace + 5, f"{name}: stop_grace_period {stop}s leaves no margin over the {grace}s grace"


def test_redis_service(compose) -> None:
    redis_service = _services(compose)["redis"]
    assert "ports" not in redis_service, "Redis must not be published on the host"
    argv = as_argv(redis_service["command"])
    flags = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert flags.get("--appendonly") == "yes"
    assert flags.get("--appendfsync") == "everysec"
    assert flags.get("--maxmemory-policy") == "noeviction"
    if "--maxmemory" in flags:
        assert docker_bytes(flags["--maxmemory"].removesuffix("b")) < _memory_limit(redis_service)
    assert as_argv(redis_service["healthcheck"]["test"])[-2:] == ["redis-cli", "ping"]
    volumes = [v.split(":") for v in redis_service["volumes"] if isinstance(v, str)]
    named = [src for src, dst, *_ in volumes if dst == "/data"]
    assert named and named[0] in (compose.get("volumes") or {}), "Redis data must be on a named volume"


# --- workers/Dockerfile and workers/entrypoint.sh ----------------------------------------------

def _dockerfile_instructions() -> list[tuple[str, str]]:
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.strip().split(None, 1) for line in joined.splitlines() if line.strip())
    ]


def test_dockerfile() -> None:
    instructions = _dockerfile_instructions()
    values = {}
    for key, value in instructions:
        values.setdefault(key, []).append(value)
    base = values["FROM"][-1]
    match = re.match(r"python:3\.(\d+)[-.\w]*-slim", base)
    assert match and int(match.group(1)) >= 11, base
    user = values["USER"][-1].split(":")[0]
    assert user not in ("root", "0"), "the image must not run as root"
    assert values["STOPSIGNAL"] == ["SIGTERM"]
    assert any("pip install ." in run for run in values["RUN"])
    assert any("tini" in run for run in values["RUN"])
    entrypoint = json.loads(values["ENTRYPOINT"][-1])
    assert entrypoint[:2] == ["tini", "--"]
    healthcheck = values["HEALTHCHECK"][-1]
    assert json.loads(healthcheck.split("CMD", 1)[1]) == ["resilient", "health", "--live"]


def _run_entrypoint(tmp_path: Path, *args: str, **env: str) -> list[str]:
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    fake = stub / "resilient"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RESILIENT_")}
    environ.update(env, PATH=f"{stub}{os.pathsep}{environ.get('PATH', '/usr/bin:/bin')}")
    out = subprocess.run(["sh", str(ENTRYPOINT), *args], env=environ, capture_output=True, text=True,
                         check=True, timeout=30, cwd=tmp_path)
    return out.stdout.splitlines()


def test_entrypoint_runs_a_supervisor_with_n_workers_by_default(tmp_path) -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    assert _run_entrypoint(tmp_path, RESILIENT_WORKERS="3", RESILIENT_JOB_MODULES="a.jobs  b.jobs *") == [
        "supervisor", "--workers", "3", "a.jobs", "b.jobs", "*"]
    assert _run_entrypoint(tmp_path) == ["supervisor", "--workers", "2", "examples.squares"]
    assert _run_entrypoint(tmp_path, "--lease-ttl", "20", RESILIENT_JOB_MODULES="m") == [
        "supervisor", "--workers", "2", "--lease-ttl", "20", "m"]


def test_entrypoint_passes_other_commands_to_resilient(tmp_path) -> None:
    assert _run_entrypoint(tmp_path, "supervisor") == ["supervisor"]
    assert _run_entrypoint(tmp_path, "enqueue", "examples.squares.sum_squares", "[200]") == [
        "enqueue", "examples.squares.sum_squares", "[200]"]
    assert _run_entrypoint(tmp_path, "resilient", "health", "--live") == ["health", "--live"]


# --- workers/k8s/ ------------------------------------------------------------------------------

def _manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _manifests() if doc["kind"] == kind]


def _deployment(component: str) -> dict[str, Any]:
    found = [d for d in _of_kind("Deployment")
             if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"expected one {component} Deployment"
    return found[0]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_match_the_kubernetes_schemas(version: str) -> None:
    manifests = _manifests()
    assert {doc["kind"] for _, doc in manifests} >= {"Deployment", "PodDisruptionBudget", "Secret"}
    for name, doc in manifests:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']} (k8s {exc.version}): "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}")


def test_k8s_schema_check_catches_a_misspelt_field() -> None:
    broken = json.loads(json.dumps(_deployment("worker")))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 40
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return deployment["spec"]["template"]["spec"]["containers"]


def test_k8s_memory_requests_equal_limits() -> None:
    for deployment in _of_kind("Deployment"):
        for container in _containers(deployment):
            resources_ = container["resources"]
            assert k8s_bytes(resources_["requests"]["memory"]) == k8s_bytes(resources_["limits"]["memory"]), (
                f"{deployment['metadata']['name']}/{container['name']}: memory requests != limits")


def test_k8s_termination_grace_is_longer_than_the_checkpoint_grace() -> None:
    for deployment in _of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            grace = float(env.get("RESILIENT_SHUTDOWN_GRACE") or DEFAULT_GRACE)
            assert pod.get("terminationGracePeriodSeconds", 30) >= grace + 5, deployment["metadata"]["name"]


def test_k8s_worker_deployment() -> None:
    worker = _deployment("worker")
    assert worker["spec"]["replicas"] >= 2
    pod = worker["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert not container.get("args") and not container.get("command"), "workers run the image's default"
    assert container["livenessProbe"]["exec"]["command"] == ["resilient", "health", "--live"]
    assert container["readinessProbe"]["exec"]["command"] == ["resilient", "health", "--ready"]
    if "startupProbe" in container:
        assert container["startupProbe"]["exec"]["command"][:2] == ["resilient", "health"]


def test_k8s_redis_url_comes_from_the_secret() -> None:
    (secret,) = _of_kind("Secret")
    data = secret.get("stringData") or secret.get("data")
    assert data and len(data) == 1
    (key,) = data
    for deployment in _of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        secret_volumes = {v["name"] for v in pod.get("volumes", [])
                          if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]}
        for container in pod["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            if "REDIS_URL" in env:
                ref = env["REDIS_URL"]["valueFrom"]["secretKeyRef"]
                assert (ref["name"], ref["key"]) == (secret["metadata"]["name"], key)
                continue
            url_file = env["REDIS_URL_FILE"]["value"]
            mounts = [m for m in container["volumeMounts"] if m["name"] in secret_volumes]
            assert any(url_file == f"{m['mountPath'].rstrip('/')}/{key}" for m in mounts), (
                f"{deployment['metadata']['name']}: REDIS_URL_FILE={url_file} is not the secret's {key!r}")


def test_k8s_pdb_covers_the_workers() -> None:
    (pdb,) = _of_kind("PodDisruptionBudget")
    labels = _deployment("worker")["spec"]["template"]["metadata"]["labels"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]


def test_k8s_supervisor_deployment() -> None:
    supervisor = _deployment("supervisor")
    (container,) = _containers(supervisor)
    assert container["args"] == ["supervisor"]
    assert container["image"] == _containers(_deployment("worker"))[0]["image"]
