"""The Helm chart (helm/entrepot), rendered by the real `helm` and checked three ways: `helm
lint --strict`; every rendered object against the Kubernetes 1.33 schemas in strict mode (an
unknown or misspelt field fails); and what the chart must say (hooks, probes, secrets, the
ingress's streaming settings), read from the rendered objects. The upstream file the chart
renders is loaded by the mirror's own loader, so that the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from django.conf import settings

from mirror.config_file import FIELDS, load
from mirror.models import AlwaysWarm, Upstream
from tests.support import k8s_tools

CHART = Path(__file__).resolve().parent.parent / "helm" / "entrepot"
PRODUCTION = CHART / "values-production.yaml"
KUBERNETES = "1.33"
# Objects of the Prometheus Operator's CRD: not in the Kubernetes schemas (checked by hand).
CRD_GROUPS = ("monitoring.coreos.com/",)
# What the pods read from the release's own Secret with the default values.
RELEASE_SECRET_KEYS = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")
RELEASE_SECRET_KEYS += ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# Every optional object on, for the schema check.
EVERYTHING = {
    "devSecret": {"create": True, "data": dict.fromkeys(RELEASE_SECRET_KEYS, "trial")},
    "ingress": {"enabled": True, "tls": [{"secretName": "tls", "hosts": ["mirror.example.com"]}]},
    "web": {
        "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80},
        "podDisruptionBudget": {"enabled": True, "minAvailable": None, "maxUnavailable": 1},
        "spoolVolume": {
            "ephemeral": {
                "volumeClaimTemplate": {
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "50Gi"}},
                    }
                }
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
            }
        ],
    },
    "metrics": {
        "token": {"existingSecret": "metrics"},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    },
    "extraEnv": [{"name": "MIRROR_ACCESS_LOG", "value": "true"}],
    "extraEnvFrom": [{"secretRef": {"name": "more"}}],
    "mirror": {"rateLimit": "600/60", "settings": {"MIRROR_FILL_QUEUE_SECONDS": 15}},
}
VARIANTS = {"default": [], "production": [PRODUCTION]}

Manifests = list[dict[str, Any]]


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return k8s_tools.helm()
    except k8s_tools.ToolError as e:
        pytest.fail(str(e), pytrace=False)


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def render(helm: Path) -> Callable[..., Manifests]:
    """render(*values_files, **overrides) -> the objects `helm template` prints."""

    def render(*files: Path, **overrides: Any) -> Manifests:
        args = ["template", "entrepot", str(CHART), "--namespace", "mirror"]
        args += ["--kube-version", f"{KUBERNETES}.0"]
        for file in files:
            args += ["--values", str(file)]
        for key, value in overrides.items():
            args += ["--set-json", f"{key}={json.dumps(value)}"]
        proc = run_helm(helm, *args)
        assert proc.returncode == 0, proc.stderr
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]

    return render


def one(manifests: Manifests, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def deployment(manifests: Manifests, component: str) -> dict[str, Any]:
    return one(manifests, "Deployment", f"entrepot-{component}")


def containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict(helm: Path, variant: str) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", f"{KUBERNETES}.0"]
    for file in VARIANTS[variant]:
        args += ["--values", str(file)]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("variant", [*VARIANTS, "everything"])
def test_manifests_match_the_kubernetes_schemas(
    render: Callable[..., Manifests], variant: str
) -> None:
    manifests = render(**EVERYTHING) if variant == "everything" else render(*VARIANTS[variant])
    errors = []
    for manifest in manifests:
        if manifest["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(map(str, e.absolute_path))
            errors.append(f"{manifest['kind']}/{manifest['metadata']['name']} {path}: {e.message}")
    assert errors == []
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Job", "ConfigMap", "Service", "ServiceAccount"} <= kinds
    if variant == "everything":
        assert {"Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret"} <= kinds
        assert "ServiceMonitor" in kinds  # rendered, though not checked against a schema


def test_migrations_job_runs_before_the_release_as_a_hook(render: Callable[..., Manifests]) -> None:
    manifests = render(PRODUCTION)
    job = one(manifests, "Job")
    hooks = job["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    spec = job["spec"]["template"]["spec"]
    # The schema first (init container), then the upstream file into it.
    assert [c["command"] for c in spec["initContainers"]] == [
        ["python", "manage.py", "migrate", "--noinput"]
    ]
    assert [c["command"] for c in spec["containers"]] == [
        ["python", "manage.py", "load_mirror_config"]
    ]
    assert spec["restartPolicy"] == "Never"
    # Its upstream file is a hook too, created before it, with the release's file.
    files = [m for m in manifests if m["kind"] == "ConfigMap"]
    volume = next(v for v in spec["volumes"] if v["name"] == "upstreams")
    hook_file = one(files, "ConfigMap", volume["configMap"]["name"])
    assert hook_file["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hook_file["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        hooks["helm.sh/hook-weight"]
    )
    release_file = one(files, "ConfigMap", "entrepot-upstreams")
    assert hook_file["data"] == release_file["data"]


def test_pods_wait_for_migrations(render: Callable[..., Manifests]) -> None:
    manifests = render(PRODUCTION)
    for component in ("web", "worker", "beat"):
        spec = deployment(manifests, component)["spec"]["template"]["spec"]
        (wait,) = spec["initContainers"]
        assert "python manage.py migrate --check" in wait["command"][-1], component


def test_web_probes_rollout_and_shutdown(render: Callable[..., Manifests]) -> None:
    web = deployment(render(), "web")
    assert web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = web["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["command"][:3] == ["gunicorn", "--config", "config/gunicorn.py"]
    assert container["command"][-1] == "config.wsgi"
    graceful = int(container["command"][container["command"].index("--graceful-timeout") + 1])
    # Long downloads may finish after SIGTERM: the pod is not killed before gunicorn's timeout.
    assert pod["spec"]["terminationGracePeriodSeconds"] > graceful >= 300
    # Writable where the app writes; the rest of the filesystem is read-only, as non-root.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    env = env_of(container)
    assert {"/tmp", "/app/var/spool", env["PROMETHEUS_MULTIPROC_DIR"]["value"]} <= mounts
    # A change to the upstream file rolls the pods.
    assert re.fullmatch(r"[0-9a-f]{64}", pod["metadata"]["annotations"]["checksum/upstreams"])
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


def test_kubelet_and_prometheus_hosts_are_allowed(render: Callable[..., Manifests]) -> None:
    """Probes and scrapes send the pod's IP as Host: ALLOWED_HOSTS must take it."""
    (container,) = deployment(render(PRODUCTION), "web")["spec"]["template"]["spec"]["containers"]
    env = list(env_of(container))
    hosts = env_of(container)["ALLOWED_HOSTS"]["value"].split(",")
    assert hosts[0] == "mirror.corp.example"
    assert "$(POD_IP)" in hosts
    assert env.index("POD_IP") < env.index("ALLOWED_HOSTS")  # expansion needs it defined first


def test_ingress_streams_large_bodies(render: Callable[..., Manifests]) -> None:
    manifests = render(PRODUCTION)
    ingress = one(manifests, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"][0]["hosts"] == ["mirror.corp.example"]
    # Behind it, the mirror believes X-Forwarded-Proto (https:// in its token challenges).
    (container,) = deployment(manifests, "web")["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["MIRROR_TRUSTED_PROXIES"]["value"] == "1"


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_beat_whatever_the_scale(render: Callable[..., Manifests], variant: str) -> None:
    manifests = render(*VARIANTS[variant])
    beat = deployment(manifests, "beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = beat["spec"]["template"]["spec"]["containers"]
    assert container["command"][:4] == ["celery", "-A", "config", "beat"]
    (worker,) = deployment(manifests, "worker")["spec"]["template"]["spec"]["containers"]
    assert worker["command"][:4] == ["celery", "-A", "config", "worker"]
    assert "--beat" not in worker["command"]


def test_production_references_secrets_and_inlines_none(render: Callable[..., Manifests]) -> None:
    manifests = render(PRODUCTION)
    assert not [m for m in manifests if m["kind"] == "Secret"]
    credentials = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "AWS_ACCESS_KEY_ID"}
    credentials |= {"AWS_SECRET_ACCESS_KEY", "HARBOR_USER", "HARBOR_TOKEN"}
    credentials |= {"CORP_GO_USER", "CORP_GO_TOKEN"}
    pods = [m["spec"]["template"]["spec"] for m in manifests if m["kind"] in ("Deployment", "Job")]
    assert len(pods) == 4
    for spec in pods:
        for container in containers(spec):
            env = env_of(container)
            assert credentials <= set(env), container["name"]
            for name in credentials:
                assert "value" not in env[name]
                assert env[name]["valueFrom"]["secretKeyRef"]["name"].startswith("entrepot-")
    (web,) = deployment(manifests, "web")["spec"]["template"]["spec"]["containers"]
    assert env_of(web)["MIRROR_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "entrepot-app",
        "key": "metrics-token",
    }
    # Nothing like a URL with a password anywhere in what would be applied.
    assert not re.search(r"://[^/\s@]*:[^/\s@]+@", yaml.safe_dump_all(manifests))


def test_hpa_and_pdb_only_when_enabled(render: Callable[..., Manifests]) -> None:
    default = render()
    assert not {"HorizontalPodAutoscaler", "PodDisruptionBudget"} & {m["kind"] for m in default}
    assert deployment(default, "web")["spec"]["replicas"] == 2
    production = render(PRODUCTION)
    hpa = one(production, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "entrepot-web"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 8)
    assert "replicas" not in deployment(production, "web")["spec"]  # the HPA owns it
    pdb = one(production, "PodDisruptionBudget")
    web_labels = deployment(production, "web")["spec"]["selector"]["matchLabels"]
    assert pdb["spec"] == {"minAvailable": 2, "selector": {"matchLabels": web_labels}}


def test_dev_secret_exists_before_the_migrations_job(render: Callable[..., Manifests]) -> None:
    data = {key: f"trial {key}" for key in RELEASE_SECRET_KEYS}
    manifests = render(devSecret={"create": True, "data": data})
    secret = one(manifests, "Secret")
    job = one(manifests, "Job")
    assert secret["stringData"] == data
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    weight = int(secret["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert weight < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "entrepot"


def test_service_monitor_sends_the_metrics_token(render: Callable[..., Manifests]) -> None:
    manifests = render(
        metrics={"token": {"existingSecret": "metrics"}, "serviceMonitor": {"enabled": True}}
    )
    monitor = one(manifests, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert endpoint["authorization"]["credentials"] == {"name": "metrics", "key": "metrics-token"}
    service = one(manifests, "Service")
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    (container,) = deployment(manifests, "web")["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["MIRROR_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "metrics",
        "key": "metrics-token",
    }


def test_an_upstream_credential_nobody_provides_fails_the_render(helm: Path) -> None:
    upstreams = [
        {"name": "corp", "kind": "oci", "url": "https://corp.example", "password_env": "CORP_PW"}
    ]
    proc = run_helm(
        helm, "template", "entrepot", str(CHART), "--set-json", f"upstreams={json.dumps(upstreams)}"
    )
    assert proc.returncode != 0
    assert "password_env CORP_PW is not set by upstreamCredentials" in proc.stderr


def test_a_dev_secret_without_a_key_the_pods_read_fails_the_render(helm: Path) -> None:
    data = {"DATABASE_URL": "postgres://x", "REDIS_URL": "redis://x", "SECRET_KEY": "x"}
    devsecret = json.dumps({"create": True, "data": data})
    proc = run_helm(
        helm, "template", "entrepot", str(CHART), "--set-json", f"devSecret={devsecret}"
    )
    assert proc.returncode != 0
    assert "devSecret.data has no AWS_ACCESS_KEY_ID" in proc.stderr


def test_values_schema_knows_the_loaders_fields(helm: Path) -> None:
    """The chart's schema for an upstream entry is the loader's list of fields, no more."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    upstream = schema["properties"]["upstreams"]["items"]
    assert set(upstream["properties"]) == set(FIELDS)
    assert upstream["additionalProperties"] is False
    bad = [{"name": "x", "kind": "oci", "url": "https://x.example", "prefixx": "x"}]
    proc = run_helm(
        helm, "template", "entrepot", str(CHART), "--set-json", f"upstreams={json.dumps(bad)}"
    )
    assert proc.returncode != 0
    assert "prefixx" in proc.stderr


@pytest.mark.django_db
def test_rendered_upstream_file_loads(render: Callable[..., Manifests], tmp_path: Path) -> None:
    """The production upstream file, as the chart renders it, is what the loader accepts."""
    manifests = render(PRODUCTION)
    text = one(manifests, "ConfigMap", "entrepot-upstreams")["data"]["upstreams.yaml"]
    path = tmp_path / "upstreams.yaml"
    path.write_text(text)
    loaded = load(path)
    values = yaml.safe_load(PRODUCTION.read_text())
    assert [u.name for u in loaded.upstreams] == [u["name"] for u in values["upstreams"]]
    assert loaded.warnings == []
    harbor = Upstream.objects.get(name="harbor")
    assert (harbor.private, harbor.username_env, harbor.password_env) == (
        True,
        "HARBOR_USER",
        "HARBOR_TOKEN",
    )
    assert Upstream.objects.get(name="dockerhub").max_bytes == 1 << 40
    assert Upstream.objects.get(name="corp").modules == ["corp.example.com/*", "github.com/corp/*"]
    warm = {(row.kind, row.reference): row.platforms for row in AlwaysWarm.objects.all()}
    assert warm == {
        ("image", "alpine:3.19"): ["linux/amd64", "linux/arm64"],
        ("image", "golang:1.22"): [],
        ("module", "golang.org/x/mod@latest"): [],
    }


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments left out."""
    lines = text.replace("\\\n", " ").splitlines()
    return [
        (line.split(None, 1)[0], line.split(None, 1)[1].strip())
        for line in lines
        if line.strip() and not line.startswith("#")
    ]


def test_the_image_has_what_the_chart_runs(render: Callable[..., Manifests]) -> None:
    """The Dockerfile (no Docker engine here to build it) against what the chart assumes."""
    root = CHART.parent.parent
    instructions = dockerfile_instructions((root / "Dockerfile").read_text())
    found = dict(instructions)  # the last of each kind
    assert found["FROM"].startswith("python:3.11")
    assert found["WORKDIR"] == "/app"  # the chart's commands name config/gunicorn.py, manage.py
    copied = {rest.split()[0] for word, rest in instructions if word == "COPY"}
    local_apps = {app for app in settings.INSTALLED_APPS if (root / app).is_dir()}
    assert {"manage.py", "config", "requirements.txt"} | local_apps <= copied
    assert any("collectstatic" in rest for word, rest in instructions if word == "RUN")
    data_dir = re.search(r"MIRROR_DATA_DIR=(\S+)", found["ENV"]).group(1)
    requirements = (root / "requirements.txt").read_text()
    assert re.search(r"^gunicorn==", requirements, re.M)
    assert re.search(r"^celery\[redis\]==", requirements, re.M)
    pod = deployment(render(), "web")["spec"]["template"]["spec"]
    assert (
        found["USER"]
        == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    )
    (web,) = pod["containers"]
    spool = next(m for m in web["volumeMounts"] if m["name"] == "spool")
    assert spool["mountPath"] == f"{data_dir}/spool"  # where mirror/filler.py spools
    assert json.loads(found["CMD"]) == web["command"][:3] + web["command"][-1:]
