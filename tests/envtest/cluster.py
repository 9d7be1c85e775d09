"""A real Kubernetes API server (etcd + kube-apiserver on loopback) for tests, envtest-style.

Binaries come from $KUBEBUILDER_ASSETS (controller-runtime's convention: a directory holding
`kube-apiserver` and `etcd`); `.ci/provision-envtest.sh` builds and caches them from Debian sources.

    with Cluster.start() as cluster:          # or the session fixture `envtest`
        api = cluster.admin_client()          # kubernetes.client.ApiClient, system:masters
        op = cluster.operator_client()        # token auth as the operator's ServiceAccount user

No controllers run (no kube-controller-manager, no Knative): objects are stored and validated by the
API server, status is whatever the test writes through the status subresource, and namespaces that
are deleted stay Terminating.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from . import knative_crds

REPO_ROOT = knative_crds.REPO_ROOT
MANIFESTS = REPO_ROOT / "manifests"
#: Project manifests installed, in order, when they exist (the Deployment is never applied: no kubelet).
PROJECT_MANIFESTS = ("namespace.yaml", "crd.yaml", "rbac.yaml", "peering.yaml")

OPERATOR_NAMESPACE = "kpilot-system"
OPERATOR_SERVICEACCOUNT = "kpilot-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICEACCOUNT}"
OPERATOR_GROUPS = ("system:serviceaccounts", f"system:serviceaccounts:{OPERATOR_NAMESPACE}",
                   "system:authenticated")
ADMIN_USER = "envtest-admin"


class EnvtestUnavailable(RuntimeError):
    """KUBEBUILDER_ASSETS is unset: the API-server tier is not asked for, its tests skip."""


class EnvtestMisconfigured(RuntimeError):
    """KUBEBUILDER_ASSETS is set (the tier is asked for) but cannot run: its tests fail."""


def assets_dir() -> Path:
    raw = os.environ.get("KUBEBUILDER_ASSETS", "").strip()
    if not raw:
        raise EnvtestUnavailable(
            "KUBEBUILDER_ASSETS is not set: no kube-apiserver/etcd to run a real API server. "
            "Run `export KUBEBUILDER_ASSETS=$(bash .ci/provision-envtest.sh | tail -1)` (builds them "
            "from Debian's sources, ~5 minutes once, cached).")
    path = Path(raw)
    missing = [b for b in ("kube-apiserver", "etcd") if not os.access(path / b, os.X_OK)]
    if missing:
        raise EnvtestMisconfigured(f"KUBEBUILDER_ASSETS={raw} lacks executable {', '.join(missing)}")
    return path


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _popen(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a server in its own process group. From the main thread, via `setpriv --pdeathsig
    KILL` (util-linux) when available: if the Python process dies without cleaning up (SIGKILL,
    crash), the kernel kills the server too, so nothing is orphaned. (PDEATHSIG follows the thread
    that forked, hence main thread only.)"""
    setpriv = shutil.which("setpriv")
    if setpriv and threading.current_thread() is threading.main_thread():
        args = [setpriv, "--pdeathsig", "KILL", "--", *args]
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)


def _sweep_stale_workdirs(base: Path) -> None:
    """Remove work directories left by test processes that were killed (their owner is gone)."""
    for d in base.glob("kpilot-envtest-*"):
        try:
            pid = int((d / "owner.pid").read_text())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (OSError, ValueError):
            pass


def _stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """Stop a process we started in its own process group: SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class Cluster:
    """A running etcd + kube-apiserver pair. Build with `Cluster.start()`; stop with `.stop()`."""

    workdir: Path
    url: str
    ca_path: Path
    admin_token: str
    operator_token: str
    admin_kubeconfig: Path
    operator_kubeconfig: Path
    etcd_url: str
    knative_crd_changes: list[str] = field(default_factory=list)
    installed_manifests: list[str] = field(default_factory=list)
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, *, install_knative: bool = True, install_project: bool = True,
              knative_release_version: str | None = knative_crds.KNATIVE_RELEASE_VERSION,
              timeout: float = 60.0) -> "Cluster":
        assets = assets_dir()
        # tmpfs makes etcd's fsyncs free; KPILOT_ENVTEST_TMPDIR overrides (each cluster uses ~130 MB).
        base = os.environ.get("KPILOT_ENVTEST_TMPDIR") or (
            "/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
        _sweep_stale_workdirs(Path(base or tempfile.gettempdir()))
        for attempt in range(3):  # free ports are picked before binding: retry a lost race
            workdir = Path(tempfile.mkdtemp(prefix="kpilot-envtest-", dir=base))
            (workdir / "owner.pid").write_text(str(os.getpid()))
            procs: list[subprocess.Popen] = []
            try:
                cluster = cls._launch(assets, workdir, procs, timeout)
                break
            except BaseException as e:
                for p in reversed(procs):
                    _stop(p)
                if not os.environ.get("KPILOT_ENVTEST_KEEP"):
                    shutil.rmtree(workdir, ignore_errors=True)
                if attempt < 2 and isinstance(e, RuntimeError) and "address already in use" in str(e):
                    continue
                raise
        atexit.register(cluster.stop)
        try:
            if install_knative:
                cluster.install_knative_crds(release_version=knative_release_version)
            if install_project:
                cluster.install_project_manifests()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @classmethod
    def _launch(cls, assets: Path, workdir: Path, procs: list, timeout: float) -> "Cluster":
        etcd_port, peer_port, api_port = _free_ports(3)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "KUBECONFIG"))}
        etcd_log = workdir / "etcd.log"
        procs.append(_popen(
            [str(assets / "etcd"), "--name=envtest", f"--data-dir={workdir / 'etcd'}",
             f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
             f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
             f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
             f"--initial-cluster=envtest=http://127.0.0.1:{peer_port}",
             "--log-level=warn"], etcd_log, env))

        # Credentials: static tokens, a service-account signing key, serving certs made by the server.
        admin_token, operator_token = secrets.token_hex(16), secrets.token_hex(16)
        tokens = workdir / "tokens.csv"
        tokens.write_text(
            f'{admin_token},{ADMIN_USER},{uuid.uuid4()},"system:masters,system:authenticated"\n'
            f'{operator_token},{OPERATOR_USER},{uuid.uuid4()},"{",".join(OPERATOR_GROUPS)}"\n')
        sa_key = workdir / "sa.key"
        subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True,
                       capture_output=True)
        cert_dir = workdir / "certs"
        cert_dir.mkdir()
        api_log = workdir / "kube-apiserver.log"
        procs.append(_popen(
            [str(assets / "kube-apiserver"),
             f"--etcd-servers={etcd_url}",
             "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
             f"--secure-port={api_port}", "--insecure-port=0",
             f"--cert-dir={cert_dir}",
             f"--token-auth-file={tokens}",
             "--authorization-mode=RBAC",
             f"--service-account-key-file={sa_key}",
             f"--service-account-signing-key-file={sa_key}",
             "--service-account-issuer=https://kubernetes.default.svc",
             "--api-audiences=https://kubernetes.default.svc",
             "--service-cluster-ip-range=10.0.0.0/24",
             "--disable-admission-plugins=ServiceAccount",
             "--enable-priority-and-fairness=false",
             "--allow-privileged=true",
             "--profiling=false",
             "--v=1"], api_log, env))

        url = f"https://127.0.0.1:{api_port}"
        crt = cert_dir / "apiserver.crt"
        deadline = time.monotonic() + timeout
        last = "not started"
        while True:
            for what, proc, log in (("etcd", procs[0], etcd_log), ("kube-apiserver", procs[1], api_log)):
                if proc.poll() is not None:
                    raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kube-apiserver not ready after {timeout}s ({last}):\n"
                                   f"{_tail(api_log)}")
            if crt.exists():
                try:
                    ctx = ssl.create_default_context(cafile=str(crt))
                    req = urllib.request.Request(f"{url}/readyz",
                                                 headers={"Authorization": f"Bearer {admin_token}"})
                    with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                        if resp.status == 200:
                            break
                except (OSError, ssl.SSLError, urllib.error.URLError) as e:
                    last = str(e)
            time.sleep(0.1)

        # apiserver.crt is the serving certificate followed by the self-signed CA that issued it.
        ca_path = workdir / "ca.crt"
        pem = crt.read_text()
        marker = "-----BEGIN CERTIFICATE-----"
        blocks = [marker + b for b in pem.split(marker)[1:]]
        ca_path.write_text(blocks[-1] if blocks else pem)

        def kubeconfig(path: Path, user: str, token: str) -> Path:
            path.write_text(yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config",
                "clusters": [{"name": "envtest", "cluster": {
                    "server": url, "certificate-authority": str(ca_path)}}],
                "users": [{"name": user, "user": {"token": token}}],
                "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": user}}],
                "current-context": "envtest"}))
            return path

        return cls(workdir=workdir, url=url, ca_path=ca_path, admin_token=admin_token,
                   operator_token=operator_token,
                   admin_kubeconfig=kubeconfig(workdir / "admin.kubeconfig", ADMIN_USER, admin_token),
                   operator_kubeconfig=kubeconfig(workdir / "operator.kubeconfig", OPERATOR_USER,
                                                  operator_token),
                   etcd_url=etcd_url, _procs=list(procs))

    def stop(self) -> None:
        """Stop kube-apiserver then etcd and remove the work directory (KPILOT_ENVTEST_KEEP=1 keeps it)."""
        for p in reversed(self._procs):
            _stop(p)
        if not self._procs:
            return
        self._procs.clear()
        atexit.unregister(self.stop)
        if not os.environ.get("KPILOT_ENVTEST_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    def logs(self, lines: int = 60) -> str:
        return "\n".join(f"--- {n}\n{_tail(self.workdir / n, lines)}"
                         for n in ("etcd.log", "kube-apiserver.log"))

    # ------------------------------------------------------------------ clients
    def client_configuration(self, token: str | None = None):
        from kubernetes import client
        cfg = client.Configuration()
        cfg.host = self.url
        cfg.ssl_ca_cert = str(self.ca_path)
        cfg.verify_ssl = True
        cfg.api_key = {"authorization": token or self.admin_token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return cfg

    def admin_client(self):
        """A kubernetes.client.ApiClient authenticated as a system:masters user."""
        from kubernetes import client
        return client.ApiClient(self.client_configuration(self.admin_token))

    def operator_client(self):
        """A kubernetes.client.ApiClient authenticated as the operator's ServiceAccount user."""
        from kubernetes import client
        return client.ApiClient(self.client_configuration(self.operator_token))

    def request(self, path: str, method: str = "GET", body: Any = None, token: str | None = None
                ) -> tuple[int, bytes]:
        """A raw HTTPS request (default: as admin); returns (status, body). For /readyz, /version,
        or reading objects exactly as stored, independent of the kubernetes client's version."""
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.admin_token}",
            "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def kopf_connection(self, user: str = "operator"):
        """kopf.ConnectionInfo for this server, to return from a `@kopf.on.login()` handler when
        running the operator in-process (or set KUBECONFIG=self.env(user)["KUBECONFIG"])."""
        import kopf
        token = self.operator_token if user == "operator" else self.admin_token
        return kopf.ConnectionInfo(server=self.url, ca_path=str(self.ca_path), token=token,
                                   scheme="Bearer")

    def env(self, user: str = "operator") -> dict[str, str]:
        """Environment for a subprocess (e.g. `kpilot operator run`) using the given kubeconfig."""
        path = self.operator_kubeconfig if user == "operator" else self.admin_kubeconfig
        return {**os.environ, "KUBECONFIG": str(path)}

    # ------------------------------------------------------------------ installing things
    def apply_objects(self, docs: Iterable[dict[str, Any]], default_namespace: str | None = None
                      ) -> list[str]:
        """Create each object (or replace it if it exists) as admin; returns 'Kind/name' for each."""
        from kubernetes import dynamic
        from kubernetes.client.exceptions import ApiException
        done = []
        with self.admin_client() as api:
            dyn = dynamic.DynamicClient(api)
            for doc in docs:
                if not doc:
                    continue
                res = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
                ns = None
                if res.namespaced:
                    ns = doc["metadata"].get("namespace") or default_namespace or "default"
                    doc = {**doc, "metadata": {**doc["metadata"], "namespace": ns}}
                try:
                    res.create(body=doc, namespace=ns)
                except ApiException as e:
                    if e.status != 409:
                        raise
                    cur = res.get(name=doc["metadata"]["name"], namespace=ns)
                    doc["metadata"]["resourceVersion"] = cur.metadata.resourceVersion
                    res.replace(body=doc, namespace=ns)
                done.append(f"{doc['kind']}/{doc['metadata']['name']}")
                if doc["kind"] == "CustomResourceDefinition":
                    self.wait_crd_established(doc["metadata"]["name"])
                    dyn.resources.invalidate_cache()
        return done

    def apply_file(self, path: Path | str, default_namespace: str | None = None) -> list[str]:
        with open(path) as f:
            return self.apply_objects(list(yaml.safe_load_all(f)), default_namespace)

    def install_knative_crds(self, release_version: str | None = knative_crds.KNATIVE_RELEASE_VERSION
                             ) -> list[str]:
        """Install the five Knative Serving 1.23 CRDs from the reference directory.

        Each goes in verbatim (bar the release-version label) when the server accepts it, which the
        binaries from .ci/provision-envtest.sh do; an unpatched Go>=1.19 build of 1.20 rejects
        `default: ""`, and then `knative_crds.strip_empty_string_defaults` is applied. Every edit
        is listed in `self.knative_crd_changes`."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        names = []
        with self.admin_client() as api:
            ext = client.ApiextensionsV1Api(api)
            for ref in knative_crds.load_reference_crds():
                crd, changes = knative_crds.set_release_version(ref, release_version)
                try:
                    ext.create_custom_resource_definition(crd)
                except ApiException as e:
                    if e.status != 422 or 'must be of type string: \\"null\\"' not in (e.body or ""):
                        raise
                    crd, more = knative_crds.strip_empty_string_defaults(crd)
                    changes += more
                    ext.create_custom_resource_definition(crd)
                self.knative_crd_changes.extend(changes)
                names.append(crd["metadata"]["name"])
        for name in names:
            self.wait_crd_established(name)
        return names

    def install_project_manifests(self, directory: Path = MANIFESTS) -> list[str]:
        """Apply manifests/{namespace,crd,rbac,peering}.yaml, those that exist, in that order."""
        namespace = OPERATOR_NAMESPACE
        kustomization = directory / "kustomization.yaml"
        if kustomization.exists():
            namespace = (yaml.safe_load(kustomization.read_text()) or {}).get("namespace") or namespace
        for name in PROJECT_MANIFESTS:
            path = directory / name
            if path.exists():
                self.installed_manifests.extend(self.apply_file(path, default_namespace=namespace))
        if (directory / "rbac.yaml").exists():   # tests act as the operator at once: let its Role land
            self.wait_allowed(OPERATOR_USER, OPERATOR_GROUPS, "list", "services", "default",
                              "serving.knative.dev")
        return self.installed_manifests

    def allowed(self, user: str, groups: tuple[str, ...] | list[str], verb: str, resource: str,
                namespace: str, group: str = "") -> bool:
        """What a SubjectAccessReview answers for `user` (in `groups`) doing `verb` on `resource`."""
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": user, "groups": list(groups),
                           "resourceAttributes": {"group": group, "resource": resource, "verb": verb,
                                                  "namespace": namespace}}}
        status, body = self.request("/apis/authorization.k8s.io/v1/subjectaccessreviews", "POST", review)
        if status != 201:
            raise RuntimeError(f"SubjectAccessReview answered {status}: {body[:300]!r}")
        return bool(json.loads(body)["status"].get("allowed"))

    def wait_allowed(self, user: str, groups: tuple[str, ...] | list[str], verb: str, resource: str,
                     namespace: str, group: str = "", timeout: float = 15.0) -> None:
        """Wait until RBAC just applied takes effect: the apiserver's authorizer reads Roles and
        bindings from an informer cache, so a review right after the write may still say no."""
        deadline = time.monotonic() + timeout
        while not self.allowed(user, groups, verb, resource, namespace, group):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{user} still may not {verb} {group or 'core'}/{resource} "
                                   f"in {namespace} after {timeout:g} s")
            time.sleep(0.05)

    def wait_crd_established(self, name: str, timeout: float = 30.0) -> None:
        from kubernetes import client
        deadline = time.monotonic() + timeout
        with self.admin_client() as api:
            ext = client.ApiextensionsV1Api(api)
            while True:
                crd = ext.read_custom_resource_definition(name)
                conds = {c.type: c for c in (crd.status.conditions or [])} if crd.status else {}
                est = conds.get("Established")
                if est is not None and est.status == "True":
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"CRD {name} not Established: "
                                       f"{[(c.type, c.status, c.message) for c in conds.values()]}")
                time.sleep(0.05)

    def set_knative_version(self, version: str) -> None:
        """Relabel the installed Knative CRDs (app.kubernetes.io/version), e.g. "1.20.0" to exercise
        the PodAutoscaler write path; the release asset carries the version in this label."""
        from kubernetes import client
        with self.admin_client() as api:
            ext = client.ApiextensionsV1Api(api)
            for crd in ext.list_custom_resource_definition(
                    label_selector="app.kubernetes.io/name=knative-serving").items:
                ext.patch_custom_resource_definition(
                    crd.metadata.name, {"metadata": {"labels": {"app.kubernetes.io/version": version}}})

    # ------------------------------------------------------------------ namespaces
    def create_namespace(self, prefix: str = "t") -> str:
        """A fresh namespace named <prefix>-<random>; returns its name."""
        from kubernetes import client
        name = f"{prefix}-{secrets.token_hex(3)}"
        with self.admin_client() as api:
            client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
        return name

    # ------------------------------------------------------------------ Knative objects
    # No Knative controllers run: these helpers create objects shaped the way Knative Serving 1.23
    # would, then write their status through the status subresource.
    def _co(self):
        from kubernetes import client
        return client.CustomObjectsApi(self.admin_client())

    def set_status(self, group: str, version: str, plural: str, namespace: str, name: str,
                   status: dict[str, Any]) -> dict:
        """Merge-patch .status through the status subresource."""
        co = self._co()
        with co.api_client:
            return co.patch_namespaced_custom_object_status(
                group, version, namespace, plural, name, {"status": status})

    def create_revision(self, namespace: str, name: str, service: str | None = None, *,
                        generation: int = 1, annotations: dict[str, str] | None = None,
                        labels: dict[str, str] | None = None, image: str = "ghcr.io/example/app:1",
                        container_concurrency: int = 0, ready: bool = True,
                        replicas: int = 1) -> dict:
        """A serving.knative.dev/v1 Revision of `service` (its Configuration has the same name)."""
        service = service or name.rsplit("-", 1)[0]
        lab = {"serving.knative.dev/service": service,
               "serving.knative.dev/configuration": service,
               "serving.knative.dev/configurationGeneration": str(generation),
               "serving.knative.dev/routingState": "active",
               **(labels or {})}
        body = {
            "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
            "metadata": {"name": name, "namespace": namespace, "labels": lab,
                         "annotations": dict(annotations or {})},
            "spec": {"containerConcurrency": container_concurrency, "timeoutSeconds": 300,
                     "containers": [{"image": image, "name": "user-container",
                                     "ports": [{"containerPort": 8080}]}]},
        }
        co = self._co()
        with co.api_client:
            co.create_namespaced_custom_object("serving.knative.dev", "v1", namespace, "revisions", body)
        return self.set_status("serving.knative.dev", "v1", "revisions", namespace, name, {
            "observedGeneration": 1,
            "conditions": [_cond(t, ready) for t in ("Ready", "ContainerHealthy", "ResourcesAvailable")],
            "actualReplicas": replicas if ready else 0, "desiredReplicas": replicas,
        })

    def create_service(self, namespace: str, name: str, *, traffic: list[dict] | None = None,
                       revision: str | None = None, annotations: dict[str, str] | None = None,
                       labels: dict[str, str] | None = None,
                       template_annotations: dict[str, str] | None = None,
                       image: str = "ghcr.io/example/app:1") -> dict:
        """A serving.knative.dev/v1 Service whose status.traffic routes to `revision` (default
        <name>-00001) at 100%, or to the given `traffic` entries ({revisionName, percent, ...})."""
        revision = revision or f"{name}-00001"
        traffic = traffic or [{"revisionName": revision, "percent": 100, "latestRevision": True}]
        body = {
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {}),
                         "annotations": dict(annotations or {})},
            "spec": {"template": {
                "metadata": {"annotations": dict(template_annotations or {})},
                "spec": {"containers": [{"image": image}]}}},
        }
        co = self._co()
        with co.api_client:
            co.create_namespaced_custom_object("serving.knative.dev", "v1", namespace, "services", body)
        return self.set_service_traffic(namespace, name, traffic)

    def set_service_traffic(self, namespace: str, name: str, traffic: list[dict]) -> dict:
        """Write status.traffic (and the latest*RevisionName fields Knative keeps alongside)."""
        latest = next((t["revisionName"] for t in traffic if t.get("latestRevision")),
                      traffic[-1]["revisionName"] if traffic else None)
        status = {"observedGeneration": 1, "traffic": traffic,
                  "conditions": [_cond(t, True) for t in ("Ready", "ConfigurationsReady", "RoutesReady")],
                  "url": f"http://{name}.{namespace}.example.com"}
        if latest:
            status["latestCreatedRevisionName"] = latest
            status["latestReadyRevisionName"] = latest
        return self.set_status("serving.knative.dev", "v1", "services", namespace, name, status)

    def create_podautoscaler(self, namespace: str, revision: str, *, service: str | None = None,
                             annotations: dict[str, str] | None = None, desired_scale: int = 1,
                             actual_scale: int = 1, metric: str = "concurrency",
                             container_concurrency: int = 0) -> dict:
        """The autoscaling.internal.knative.dev/v1alpha1 PodAutoscaler Knative makes for a Revision
        (same name), with status desiredScale/actualScale."""
        service = service or revision.rsplit("-", 1)[0]
        ann = {"autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
               "autoscaling.knative.dev/metric": metric, **(annotations or {})}
        body = {
            "apiVersion": "autoscaling.internal.knative.dev/v1alpha1", "kind": "PodAutoscaler",
            "metadata": {"name": revision, "namespace": namespace, "annotations": ann,
                         "labels": {"serving.knative.dev/revision": revision,
                                    "serving.knative.dev/service": service,
                                    "serving.knative.dev/configuration": service,
                                    "app": revision}},
            "spec": {"containerConcurrency": container_concurrency, "protocolType": "http1",
                     "reachability": "Reachable",
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": f"{revision}-deployment"}},
        }
        co = self._co()
        with co.api_client:
            co.create_namespaced_custom_object("autoscaling.internal.knative.dev", "v1alpha1",
                                               namespace, "podautoscalers", body)
        return self.set_status("autoscaling.internal.knative.dev", "v1alpha1", "podautoscalers",
                               namespace, revision, {
                                   "observedGeneration": 1, "desiredScale": desired_scale,
                                   "serviceName": f"{revision}-private",
                                   "metricsServiceName": f"{revision}-private",
                                   "actualScale": actual_scale,
                                   "conditions": [_cond(t, True) for t in
                                                  ("Ready", "Active", "ScaleTargetInitialized")]})

    def create_knative_app(self, namespace: str, name: str, *, revisions: int = 1,
                           revision_annotations: dict[str, str] | None = None,
                           service_labels: dict[str, str] | None = None,
                           podautoscalers: bool = True) -> dict[str, Any]:
        """A Service with `revisions` Revisions (<name>-00001...), a PodAutoscaler per Revision, and
        100% of traffic on the newest; returns {'service': ..., 'revisions': [...], 'podautoscalers': [...]}."""
        revs, pas = [], []
        for i in range(1, revisions + 1):
            rname = f"{name}-{i:05d}"
            revs.append(self.create_revision(namespace, rname, name, generation=i,
                                             annotations=revision_annotations))
            if podautoscalers:
                pas.append(self.create_podautoscaler(namespace, rname, service=name,
                                                     annotations=revision_annotations))
        svc = self.create_service(namespace, name, revision=f"{name}-{revisions:05d}",
                                  labels=service_labels)
        return {"service": svc, "revisions": revs, "podautoscalers": pas}


def _cond(kind: str, ok: bool) -> dict[str, str]:
    return {"type": kind, "status": "True" if ok else "False",
            "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


__all__ = ["Cluster", "EnvtestUnavailable", "EnvtestMisconfigured", "assets_dir", "OPERATOR_USER", "OPERATOR_NAMESPACE",
           "OPERATOR_SERVICEACCOUNT", "OPERATOR_GROUPS", "ADMIN_USER"]
