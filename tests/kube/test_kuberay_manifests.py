"""deploy/ as `kubectl apply -k deploy/` installs it: CRDs, RBAC, the RayCluster and the RayJob.

Two halves. The files: the kustomization is expanded here the way kustomize does (no kubectl
on this machine), and the KubeRay objects are checked for what the server cannot see - one
pinned speaker per node, and rules KubeRay's own operator enforces (from its source,
ray-operator/controllers/ray/utils/validation.go and common/pod.go). The server: KubeRay's
CRDs (../shared/data/kuberay) are installed into the test API server, then every document is
created with dryRun=All and fieldValidation=Strict, and nothing may be rejected; a broken
manifest shows that the same call does reject.
"""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from ray._private.label_utils import parse_node_labels_from_yaml_file, parse_node_labels_string

from raylb.cluster.kube import manifests
from raylb.cluster.localkube.controlplane import REPO
from raylb.speakergroup import BASE_TOLERATIONS, parse_group_ref

DEPLOY = REPO / "deploy"
KUBERAY_CRDS = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml")
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
#: The kustomization fields this expander implements; anything else would change the output.
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources"}
#: Kubernetes label values (also Ray's rule for node labels): <= 63 characters, alphanumeric at
#: both ends, '-', '_' and '.' inside.
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
SPEAKER_CAPABILITIES = {"NET_RAW"}
#: Ray's default raylet wait for a lost head (RAY_gcs_rpc_server_reconnect_timeout_s).
RAY_DEFAULT_RECONNECT_S = 60


# --- the kustomization, expanded ----------------------------------------------------------------


def kustomization_file(directory: Path) -> Path:
    found = [directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file()]
    assert len(found) == 1, f"{directory}: kustomize wants exactly one of {KUSTOMIZATION_FILES}, found {found}"
    return found[0]


def expand(directory: Path, *, root: Path = DEPLOY) -> list[Path]:
    """The files a kustomization's `resources` name, in order, following nested kustomizations
    (kustomize's default load restrictor keeps them all below `root`)."""
    spec = yaml.safe_load(kustomization_file(directory).read_text())
    assert spec.get("apiVersion") == "kustomize.config.k8s.io/v1beta1" and spec.get("kind") == "Kustomization", spec
    assert set(spec) <= KUSTOMIZE_FIELDS, f"{directory}: fields {sorted(set(spec) - KUSTOMIZE_FIELDS)} not expanded here"
    files: list[Path] = []
    for entry in spec.get("resources") or []:
        assert "://" not in entry and not Path(entry).is_absolute(), f"{directory}: remote/absolute resource {entry!r}"
        path = (directory / entry).resolve()
        assert path.is_relative_to(root), f"{entry!r} leaves {root} (kustomize's load restrictor refuses it)"
        if path.is_dir():
            files += expand(path, root=root)  # kustomize reads a directory only through its kustomization
        else:
            assert path.is_file(), f"{directory}: resource {entry!r} does not exist"
            files.append(path)
    assert len(files) == len(set(files)), f"{directory}: a file is listed twice (kustomize rejects duplicate ids)"
    return files


def deploy_documents() -> list[dict[str, Any]]:
    return manifests.load_documents(expand(DEPLOY))


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in deploy_documents() if d["kind"] == kind]
    return doc


def test_the_kustomization_installs_every_manifest_of_crds_rbac_and_kuberay() -> None:
    listed = set(expand(DEPLOY))
    on_disk = {p.resolve() for folder in ("crds", "rbac", "kuberay") for p in (DEPLOY / folder).glob("*.yaml")}
    assert on_disk - listed == set(), "add these to deploy/kustomization.yaml"
    assert listed - on_disk == set(), "deploy/kustomization.yaml lists files outside crds/, rbac/, kuberay/"
    docs = deploy_documents()
    ids = [(d["apiVersion"].split("/")[0], d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(ids) == len(set(ids)), "kustomize refuses two objects with one id"
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "RayCluster", "RayJob"} <= kinds


def test_the_expander_follows_nested_kustomizations_and_refuses_what_it_cannot_expand(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    (tmp_path / "sub" / "b.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n")
    head = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
    (tmp_path / "sub" / "kustomization.yaml").write_text(head + "resources: [b.yaml]\n")
    (tmp_path / "kustomization.yaml").write_text(head + "resources: [a.yaml, sub]\n")
    root = tmp_path.resolve()
    assert expand(root, root=root) == [root / "a.yaml", root / "sub" / "b.yaml"]
    for body, refusal in [
        ("namespace: other\nresources: [a.yaml]\n", "not expanded here"),
        ("resources: [sub/b.yaml, a.yaml, a.yaml]\n", "listed twice"),
        ("resources: [sub/missing.yaml]\n", "does not exist"),
        ("resources: [../elsewhere.yaml]\n", "load restrictor"),
    ]:
        (root / "kustomization.yaml").write_text(head + body)
        with pytest.raises(AssertionError, match=refusal):
            expand(root, root=root)


# --- what KubeRay and the speakers need from the files ---------------------------------------


def workers() -> dict[str, Any]:
    (group,) = by_kind("RayCluster")["spec"]["workerGroupSpecs"]
    return group


def container(group: dict[str, Any]) -> dict[str, Any]:
    return group["template"]["spec"]["containers"][0]  # KubeRay's Ray container is the first


def test_every_ray_pod_runs_the_ray_version_raylb_is_built_with() -> None:
    cluster = by_kind("RayCluster")
    assert cluster["spec"]["rayVersion"] == ray.__version__
    dockerfile = (DEPLOY / "kuberay" / "Dockerfile").read_text()
    # The users' default base; the lab passes its own with --build-arg BASE=...
    base = re.search(r"^ARG BASE=(\S+)$", dockerfile, re.M)
    assert base and base.group(1).startswith(f"rayproject/ray:{ray.__version__}"), base
    assert re.search(r"^FROM \$\{BASE\}$", dockerfile, re.M), "FROM must use the BASE argument"
    images = {container(g)["image"] for g in (cluster["spec"]["headGroupSpec"], workers())}
    assert images == {"raylb:0.1.0"}, "the Dockerfile's documented tag"


def test_speakers_run_one_per_node_on_the_node_network_with_raw_sockets() -> None:
    group = workers()
    pod = group["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    own = group["template"]["metadata"]["labels"]
    assert term["labelSelector"]["matchLabels"].items() <= own.items(), "the anti-affinity must select the group itself"
    # The operator sizes the group; it starts empty, so KubeRay reports the head alone Ready.
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 0
    # The operator keeps these and appends speakerTolerations: the manifest starts with them.
    assert pod["tolerations"] == [dict(t) for t in BASE_TOLERATIONS]
    context = container(group)["securityContext"]
    assert set(context["capabilities"]["add"]) == SPEAKER_CAPABILITIES and context["capabilities"]["drop"] == ["ALL"]
    assert context["runAsUser"] == 0, "capabilities.add gives a non-root process nothing (no ambient capabilities)"


def test_a_speaker_worker_declares_the_ports_it_takes_on_the_node() -> None:
    group = workers()
    params, ray = group["rayStartParams"], container(group)
    (metrics,) = [p for p in ray["ports"] if p["name"] == "metrics"]  # KubeRay adds 8080 only without one
    assert metrics["containerPort"] == int(params["metrics-export-port"]) != 8080
    agent = params["dashboard-agent-listen-port"]
    assert int(agent) != 52365
    for probe in ("readinessProbe", "livenessProbe"):  # KubeRay's own probes would ask 52365
        assert f"http://localhost:{agent}/api/local_raylet_healthz" in " ".join(ray[probe]["exec"]["command"])
    fixed = [int(params[k]) for k in ("node-manager-port", "object-manager-port", "metrics-export-port",
                                      "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port")]
    workers_range = range(int(params["min-worker-port"]), int(params["max-worker-port"]) + 1)
    assert len(set(fixed)) == len(fixed) and not set(fixed) & set(workers_range)
    assert max([*fixed, *workers_range]) < 32768, "below Linux's ephemeral port range"


def test_the_operator_namespace_admits_privileged_pods() -> None:
    labels = by_kind("Namespace")["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "privileged"


def test_each_speaker_tells_ray_its_kubernetes_node_name() -> None:
    group = workers()
    env = {e["name"]: e for e in container(group)["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert int(env["RAY_gcs_rpc_server_reconnect_timeout_s"]["value"]) > RAY_DEFAULT_RECONNECT_S
    params = group["rayStartParams"]
    # KubeRay refuses rayStartParams["labels"] (validateRayGroupLabels); group labels are fixed.
    assert "labels" not in params and group["labels"] == {"raylb.io/role": "node"}
    assert "labels-file" in params
    # KubeRay appends its `ray start` only to a command that has none, and only without the
    # overwrite annotation (BuildPod in common/pod.go).
    assert not any("ray start" in part for part in container(group).get("command", []) + container(group)["args"])
    assert "ray.io/overwrite-container-cmd" not in (group["template"]["metadata"].get("annotations") or {})


def test_head_runs_the_operator_as_its_serviceaccount_on_the_control_node() -> None:
    cluster = by_kind("RayCluster")
    head = cluster["spec"]["headGroupSpec"]
    assert head["labels"] == {"raylb.io/node": "control", "raylb.io/role": "control"}
    assert "labels" not in head["rayStartParams"]
    account = by_kind("ServiceAccount")
    assert head["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert cluster["metadata"]["namespace"] == account["metadata"]["namespace"] == "metallb-system"
    for group in (head, workers()):
        for key, value in group["labels"].items():  # KubeRay also puts them on the Pod
            assert LABEL_VALUE_RE.match(value) and len(key) <= 253, (key, value)


def test_every_ray_container_and_the_submitter_hold_the_token_from_the_secret() -> None:
    """KubeRay v1.5.0 has no authOptions: token auth is RAY_AUTH_MODE=token plus the token in
    each Ray container's environment, from one Secret (issue 12, finding 4)."""
    cluster, job = by_kind("RayCluster"), by_kind("RayJob")
    pods = {
        "head": cluster["spec"]["headGroupSpec"]["template"],
        "speakers": workers()["template"],
        "submitter": job["spec"]["submitterPodTemplate"],
    }
    for where, template in pods.items():
        env = {e["name"]: e for e in template["spec"]["containers"][0].get("env", [])}
        assert env["RAY_AUTH_MODE"].get("value") == "token", where
        assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "raylb-ray-token", "key": "token"}}, where
        assert "value" not in env["RAY_AUTH_TOKEN"], f"{where}: a token written into the manifest is no secret"


def test_the_head_keeps_the_cluster_in_redis_so_a_new_head_is_the_same_cluster() -> None:
    """GCS fault tolerance with a Redis the user provides (issue 12, finding 3): the password from
    a Secret, a storage namespace that outlives the RayCluster object's UID, and raylets that
    wait for the head longer than KubeRay's FT default."""
    cluster = by_kind("RayCluster")
    options = cluster["spec"]["gcsFaultToleranceOptions"]
    assert options["redisAddress"]
    assert options["redisPassword"] == {"valueFrom": {"secretKeyRef": {"name": "raylb-redis", "key": "password"}}}
    assert options["externalStorageNamespace"]
    # KubeRay refuses the old annotation and raw Redis flags next to gcsFaultToleranceOptions.
    assert "ray.io/ft-enabled" not in (cluster["metadata"].get("annotations") or {})
    params = cluster["spec"]["headGroupSpec"]["rayStartParams"]
    assert not {"redis-password", "redis-username"} & set(params)


def test_the_rayjob_starts_raylb_on_that_cluster_and_leaves_it_running() -> None:
    job, cluster = by_kind("RayJob"), by_kind("RayCluster")
    assert job["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert job["spec"]["entrypoint"] == "python -m raylb run --speaker-group raylb/speakers"
    ref = parse_group_ref(job["spec"]["entrypoint"].rsplit(" ", 1)[1])
    assert ref.cluster == cluster["metadata"]["name"] and ref.group == workers()["groupName"]
    assert "rayClusterSpec" not in job["spec"] and not job["spec"].get("shutdownAfterJobFinishes")


@pytest.mark.parametrize("node_name", ["worker-1", "123", "ip-10-0-0-7.ec2.internal"])
def test_the_worker_command_writes_the_label_ray_reads(tmp_path: Path, node_name: str) -> None:
    group = workers()
    path = group["rayStartParams"]["labels-file"]
    (command,) = container(group)["args"]
    here = tmp_path / "labels.yaml"
    result = subprocess.run(
        ["bash", "-c", command.replace(path, str(here))], env={"NODE_NAME": node_name, "PATH": "/usr/bin:/bin"}, check=False
    )
    assert result.returncode == 0
    # `ray start` merges --labels (KubeRay writes the group labels there) over --labels-file.
    fixed = parse_node_labels_string(",".join(f"{k}={v}" for k, v in group["labels"].items()))
    assert {**parse_node_labels_from_yaml_file(str(here)), **fixed} == {"raylb.io/node": node_name, "raylb.io/role": "node"}


def test_the_worker_command_fails_without_a_node_name(tmp_path: Path) -> None:
    """With what KubeRay appends (BuildPod in common/pod.go: `CMD && ulimit -n 65536; ray start ...`);
    tests/kube/test_kuberay_worker_pod.py runs the command the real operator generates."""
    group = workers()
    (command,) = container(group)["args"]
    here = tmp_path / "labels.yaml"
    script = command.replace(group["rayStartParams"]["labels-file"], str(here)) + " && ulimit -n 1024; echo RAY-START"
    result = subprocess.run(["bash", "-c", script], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode != 0 and not here.exists(), result
    assert "RAY-START" not in result.stdout, "KubeRay's `; ray start` must not run"


# --- server side: dry run against the real API server -----------------------------------------


DRY_RUN = [("dryRun", "All"), ("fieldValidation", "Strict")]


def dry_run_create(api: client.ApiClient, doc: dict[str, Any]) -> dict[str, Any]:
    """`kubectl create --dry-run=server --validate=strict` of one document; for an object that
    already exists (the session's API server is shared), `kubectl replace` of it, dry-run too."""
    path = manifests.object_path(api, doc)
    try:
        return manifests.request(api, "POST", path.rsplit("/", 1)[0], body=doc, query=DRY_RUN)
    except ApiException as exc:
        if exc.status != 409:
            raise
    current = manifests.request(api, "GET", path)
    replacement = copy.deepcopy(doc)
    replacement["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    return manifests.request(api, "PUT", path, body=replacement, query=DRY_RUN)


def install_crds(api: client.ApiClient, paths: list[Path]) -> None:
    """Create the CRDs (if missing) and wait until established; namespace metallb-system too."""
    docs = manifests.load_documents(paths)
    for doc in docs:
        try:  # create, not apply: these CRDs are ~1 MB, and apply would only add field-manager data
            manifests.request(api, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=doc)
        except ApiException as exc:
            if exc.status != 409:  # already there from an earlier module or session
                raise
    manifests.wait_crds_established(api, [d["metadata"]["name"] for d in docs], timeout_s=60)
    # Namespaced objects can only be dry-run into a namespace that exists (NamespaceLifecycle).
    manifests.apply_paths(api, [DEPLOY / "rbac" / "namespace.yaml"])


def dry_run_rejections(api: client.ApiClient, docs: list[dict[str, Any]]) -> list[str]:
    """Every document dry-run created; what the server refused, one line each."""
    rejected = []
    for doc in docs:
        try:
            answer = dry_run_create(api, doc)
        except ApiException as exc:
            rejected.append(f"{doc['kind']} {doc['metadata']['name']}: HTTP {exc.status} {exc.body}")
            continue
        assert answer["kind"] == doc["kind"] and answer["metadata"]["name"] == doc["metadata"]["name"]
    return rejected


@pytest.fixture(scope="module")
def kuberay_api(admin_api: client.ApiClient, shared_data: Path) -> Iterator[client.ApiClient]:
    """The test API server with KubeRay's CRDs installed and namespace metallb-system present."""
    install_crds(admin_api, [shared_data / "kuberay" / name for name in KUBERAY_CRDS])
    yield admin_api


@pytest.mark.kube
def test_every_manifest_passes_server_side_dry_run(kuberay_api: client.ApiClient) -> None:
    rejected = dry_run_rejections(kuberay_api, deploy_documents())
    assert not rejected, "\n".join(rejected)
    # A dry run stores nothing.
    with pytest.raises(ApiException) as missing:
        manifests.request(kuberay_api, "GET", manifests.object_path(kuberay_api, by_kind("RayCluster")))
    assert missing.value.status == 404


def _broken(edit: str) -> dict[str, Any]:
    doc = copy.deepcopy(by_kind("RayCluster"))
    group = doc["spec"]["workerGroupSpecs"][0]
    if edit == "no groupName":
        del group["groupName"]
    elif edit == "replicas not a number":
        group["replicas"] = "three"
    elif edit == "unknown field":
        group["hostNetwork"] = True  # belongs in the Pod template, not the group
    elif edit == "no head template":
        del doc["spec"]["headGroupSpec"]["template"]
    return doc


@pytest.mark.kube
@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ("no groupName", "groupName"),
        ("replicas not a number", "replicas"),
        ("unknown field", "hostNetwork"),
        ("no head template", "template"),
    ],
)
def test_the_dry_run_rejects_a_broken_raycluster(kuberay_api: client.ApiClient, edit: str, field: str) -> None:
    with pytest.raises(ApiException) as rejected:
        dry_run_create(kuberay_api, _broken(edit))
    assert rejected.value.status in (400, 422) and field in str(rejected.value.body), rejected.value.body
