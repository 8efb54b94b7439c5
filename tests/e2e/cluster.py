"""The installed release as the e2e tests see it, through the `kubernetes` Python client.

Settings (environment): E2E_CONTEXT (kubeconfig context; default: the current one),
E2E_NAMESPACE and E2E_RELEASE (both default "cryptolens", what scripts/kind-up.sh installs),
E2E_URL (the dashboard through the ingress; default http://localhost/).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from dataclasses import dataclass

from kubernetes import client, config
from kubernetes.stream import portforward

NEEDS_CLUSTER = ("tests/e2e needs a Kubernetes cluster with CryptoLens installed: run `bash scripts/kind-up.sh` "
                 "(Docker, kind, kubectl, helm), or set KUBECONFIG/E2E_CONTEXT/E2E_NAMESPACE/E2E_RELEASE "
                 "for another cluster")


@dataclass
class Cluster:
    namespace: str
    release: str
    url: str
    core: client.CoreV1Api
    apps: client.AppsV1Api

    @classmethod
    def connect(cls) -> "Cluster":
        """The configured cluster, or an exception saying what is missing."""
        config.load_kube_config(context=os.environ.get("E2E_CONTEXT") or None)
        cluster = cls(os.environ.get("E2E_NAMESPACE", "cryptolens"), os.environ.get("E2E_RELEASE", "cryptolens"),
                      os.environ.get("E2E_URL", "http://localhost/"), client.CoreV1Api(), client.AppsV1Api())
        if not cluster.deployments():
            raise LookupError(f"no Deployments of release {cluster.release} in namespace {cluster.namespace}")
        return cluster

    def selector(self, component: str | None = None) -> str:
        labels = f"app.kubernetes.io/instance={self.release}"
        return labels + (f",app.kubernetes.io/component={component}" if component else "")

    def deployments(self) -> dict[str, client.V1Deployment]:
        items = self.apps.list_namespaced_deployment(self.namespace, label_selector=self.selector(),
                                                     _request_timeout=10).items
        return {d.metadata.labels["app.kubernetes.io/component"]: d for d in items}

    def pods(self, component: str) -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=self.selector(component),
                                             _request_timeout=10).items

    def ready_pods(self, component: str) -> list[client.V1Pod]:
        return [p for p in self.pods(component) if p.metadata.deletion_timestamp is None and any(
            c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]

    @contextlib.contextmanager
    def forward(self, pod: str, port: int):
        """A loopback port relaying each connection to ``pod:port`` over the API server."""
        listener = socket.create_server(("127.0.0.1", 0))
        stop = threading.Event()

        def relay(conn: socket.socket) -> None:
            pf = portforward(self.core.connect_get_namespaced_pod_portforward, pod, self.namespace, ports=str(port))
            remote = pf.socket(port)
            remote.setblocking(True)
            with conn, remote:
                while not stop.is_set():
                    readable, _, _ = select.select([conn, remote], [], [], 0.5)
                    for src in readable:
                        data = src.recv(65536)
                        if not data:
                            return
                        (remote if src is conn else conn).sendall(data)

        def accept() -> None:
            listener.settimeout(0.5)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=relay, args=(conn,), daemon=True).start()

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{listener.getsockname()[1]}"
        finally:
            stop.set()
            thread.join(timeout=2)
            listener.close()
