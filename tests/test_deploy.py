"""deploy/: checked as far as this machine allows (no container engine, no cluster).

The Containerfile is parsed and the exact ENTRYPOINT + CMD it declares is run here with its ENV (paths
under the image's data and policy directories mapped to temporary ones) until ``/readyz`` answers, writing
nothing outside the data directory. The compose file and the Kubernetes manifests are parsed and their key
fields checked against each other and against the settings; the systemd unit goes through
``systemd-analyze verify`` when available and its ExecStart is run the same way.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.policy.load import load_policy
from gateway.settings import PREFIX, Settings
from tests.web.harness import wait_for

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
IMAGE_DATA = "/var/lib/consent-gateway"
IMAGE_POLICIES = "/etc/consent-gateway/policies"


# --- Containerfile -------------------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    return [(item.split(None, 1)[0].upper(), item.split(None, 1)[1]) for item in logical]


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in steps:
        if op == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def exec_form(steps: list[tuple[str, str]], op: str) -> list[str]:
    (args,) = [a for o, a in steps if o == op]
    value = json.loads(args)
    assert isinstance(value, list), f"{op} must use the exec (JSON) form so signals reach the gateway"
    return [str(v) for v in value]


def test_image_runs_as_non_root_with_data_in_a_volume() -> None:
    """The final stage runs as uid 10001, keeps state in the declared volume and never writes bytecode."""
    steps = final_stage(DEPLOY / "Containerfile")
    (user,) = [a for o, a in steps if o == "USER"]
    assert user.split(":")[0] not in ("0", "root") and int(user.split(":")[0]) >= 10000
    assert json.loads(next(a for o, a in steps if o == "VOLUME")) == [IMAGE_DATA]
    env = env_of(steps)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["CONSENT_GATEWAY_DATABASE"] == f"sqlite:///{IMAGE_DATA}/consent-gateway.db"
    assert next(a for o, a in steps if o == "WORKDIR") == IMAGE_DATA
    assert exec_form(steps, "ENTRYPOINT") + exec_form(steps, "CMD") == ["consent-gateway", "serve"]
    assert next(a for o, a in steps if o == "STOPSIGNAL") == "SIGTERM"


def test_image_env_names_only_real_settings() -> None:
    """Every CONSENT_GATEWAY_* variable the image sets is a settings field."""
    env = env_of(final_stage(DEPLOY / "Containerfile"))
    for name in (n for n in env if n.startswith(PREFIX)):
        assert name.removeprefix(PREFIX).lower() in Settings.model_fields, name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def ready(url: str, http: aiohttp.ClientSession) -> bool:
    try:
        async with http.get(url) as resp:
            return resp.status == 200
    except aiohttp.ClientConnectionError:
        return False


def mapped(env: dict[str, str], data: Path) -> dict[str, str]:
    """The image's environment with its data and policy directories mapped to local ones."""
    out = {
        k: v.replace(IMAGE_DATA, str(data)).replace(IMAGE_POLICIES, str(ROOT / "policies"))
        for k, v in env.items()
    }
    out.pop("PATH", None)
    return out


async def run_until_ready(argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Start ``argv`` with ``env`` on a free port, wait for /readyz, stop it with SIGTERM; its readiness."""
    port = free_port()
    env = {**os.environ, **env, "CONSENT_GATEWAY_PORT": str(port), "CONSENT_GATEWAY_HOST": "127.0.0.1"}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/readyz"
            await wait_for(lambda: ready(url, http), "the gateway to be ready", limit=20)
            async with http.get(url) as resp:
                doc: dict[str, Any] = await resp.json()
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        assert proc.returncode == 0
        return doc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_image_command_starts_a_ready_gateway(tmp_path: Path) -> None:
    """ENTRYPOINT + CMD with the image's ENV serves /readyz; files appear only in the data directory."""
    steps = final_stage(DEPLOY / "Containerfile")
    data, cwd = tmp_path / "data", tmp_path / "cwd"
    data.mkdir(mode=0o700)
    cwd.mkdir()
    argv = exec_form(steps, "ENTRYPOINT") + exec_form(steps, "CMD")
    assert shutil.which(argv[0], path=str(BIN)), f"{argv[0]} is not installed in the environment"
    doc = await run_until_ready(argv, mapped(env_of(steps), data), cwd)
    assert doc == {"ready": True, "checks": {"storage": "ok", "policy": "ok", "workers": "ok"}}
    assert list(cwd.iterdir()) == []
    assert {p.name for p in data.iterdir()} >= {"consent-gateway.db", "secrets.json"}
    assert (data / "secrets.json").stat().st_mode & 0o077 == 0


# --- compose -------------------------------------------------------------------------------------------


def test_compose_runs_gateway_read_only_beside_postgres() -> None:
    """The compose file builds this Containerfile, runs it read-only as 10001 with the data volume, and
    includes PostgreSQL with a health check and a password from a secret file."""
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    gateway, postgres = doc["services"]["gateway"], doc["services"]["postgres"]
    assert gateway["build"] == {"context": "..", "dockerfile": "deploy/Containerfile"}
    assert gateway["read_only"] is True and gateway["user"] == "10001:10001"
    assert f"gateway-data:{IMAGE_DATA}" in gateway["volumes"]
    assert gateway["environment"]["CONSENT_GATEWAY_DATABASE"].startswith(f"sqlite:///{IMAGE_DATA}/")
    assert "/readyz" in " ".join(gateway["healthcheck"]["test"])
    assert postgres["image"].startswith("docker.io/library/postgres:")
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert set(doc["volumes"]) == {"gateway-data", "postgres-data"}


# --- Kubernetes ----------------------------------------------------------------------------------------


def manifests() -> dict[str, dict[str, Any]]:
    """The kustomization's resources by kind (rendered by ``kubectl kustomize`` when kubectl exists)."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run(  # noqa: S603 -- fixed argv, local file
            [kubectl, "kustomize", str(DEPLOY / "kubernetes")], capture_output=True, text=True, check=True
        ).stdout
        docs = list(yaml.safe_load_all(out))
    else:
        kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
        docs = [yaml.safe_load((DEPLOY / "kubernetes" / r).read_text()) for r in kustomization["resources"]]
    return {d["kind"]: d for d in docs}


def test_kubernetes_deployment_probes_security_and_references() -> None:
    """Probes hit /healthz and /readyz on the container port; the pod is non-root with a read-only root;
    every mount names a volume, the ConfigMap and PVC exist, secrets come from one named Secret."""
    k = manifests()
    assert set(k) == {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"}
    deploy = k["Deployment"]
    assert deploy["apiVersion"] == "apps/v1" and deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    pod = deploy["spec"]["template"]["spec"]
    assert (
        deploy["spec"]["selector"]["matchLabels"].items()
        <= deploy["spec"]["template"]["metadata"]["labels"].items()
    )
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = {e["name"]: e for e in container["env"]}
    assert int(env["CONSENT_GATEWAY_PORT"]["value"]) == ports["http"]
    for name in env:
        assert name.removeprefix(PREFIX).lower() in Settings.model_fields, name
    secret_refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in env.values() if "valueFrom" in e}
    assert secret_refs == {"consent-gateway-secrets"}
    example = yaml.safe_load((DEPLOY / "kubernetes" / "secret.example.yaml").read_text())
    keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in env.values() if "valueFrom" in e}
    assert example["metadata"]["name"] == "consent-gateway-secrets" and keys <= set(example["stringData"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts.values()) == set(volumes)
    assert (
        volumes[mounts[IMAGE_DATA]]["persistentVolumeClaim"]["claimName"]
        == k["PersistentVolumeClaim"]["metadata"]["name"]
    )
    assert volumes[mounts[IMAGE_POLICIES]]["configMap"]["name"] == k["ConfigMap"]["metadata"]["name"]
    assert env["CONSENT_GATEWAY_POLICIES"]["value"].startswith(IMAGE_POLICIES + "/")
    assert pod["terminationGracePeriodSeconds"] > 15
    service = k["Service"]
    assert service["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_kubernetes_policy_configmap_is_the_default_policy_and_loads(tmp_path: Path) -> None:
    """The ConfigMap's policy file is byte-for-byte policies/default.yaml, and it loads."""
    configmap = manifests()["ConfigMap"]
    for name, text in configmap["data"].items():
        assert text == (ROOT / "policies" / name).read_text()
        (tmp_path / name).write_text(text)
        load_policy(tmp_path / name)


# --- systemd -------------------------------------------------------------------------------------------


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / "consent-gateway.service")
    return parser


def unit_env() -> dict[str, str]:
    env = {}
    for line in (DEPLOY / "systemd" / "consent-gateway.service").read_text().splitlines():
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").partition("=")
            env[key] = value
    return env


def test_systemd_unit_is_hardened() -> None:
    """The unit runs as a dynamic user with a state directory, reloads with SIGHUP, and is sandboxed."""
    service = unit()["Service"]
    expected = {
        "DynamicUser": "yes", "StateDirectory": "consent-gateway", "NoNewPrivileges": "yes",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "ExecReload": "/bin/kill -HUP $MAINPID", "KillSignal": "SIGTERM", "UMask": "0077",
    }  # fmt: skip
    for key, value in expected.items():
        assert service[key] == value, key
    assert unit_env()["CONSENT_GATEWAY_DATABASE"] == f"sqlite:///{IMAGE_DATA}/consent-gateway.db"


def test_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    """``systemd-analyze verify`` accepts the unit (ExecStart pointed at this environment's binary)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (DEPLOY / "systemd" / "consent-gateway.service").read_text()
    copy = tmp_path / "consent-gateway.service"
    copy.write_text(text.replace("/opt/consent-gateway/bin/", f"{BIN}/"))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, check=False)  # noqa: S603
    problems = [line for line in result.stderr.splitlines() if "consent-gateway.service" in line]
    assert result.returncode == 0 and problems == [], result.stderr


async def test_systemd_execstart_starts_a_ready_gateway(tmp_path: Path) -> None:
    """The unit's ExecStart with its Environment= lines serves /readyz from a temporary state directory."""
    argv = shlex.split(unit()["Service"]["ExecStart"])
    argv[0] = str(BIN / Path(argv[0]).name)
    data = tmp_path / "state"
    data.mkdir(mode=0o700)
    doc = await run_until_ready(argv, mapped(unit_env(), data), data)
    assert doc["ready"] is True
