#!/usr/bin/env python3
"""A discovery-only Kubernetes API server for `kubectl apply --dry-run=client`.

kubectl needs API discovery to map each document's apiVersion and kind to a resource
(and to know whether it is namespaced) even when nothing is sent. This serves exactly
that, for the kinds `sandboxctl export --to kube` writes: /version, /api, /api/v1,
/apis and the resource lists of apps/v1, networking.k8s.io/v1 and
agents.x-k8s.io/v1beta1. Every other GET (an object kubectl looks up before applying)
is 404 NotFound, so every object is "created"; any other method is refused with 405 and
recorded, so a client dry run that tried to write fails the check.

    apiserver-stub.py PORT_FILE REQUEST_LOG

Listens on 127.0.0.1 on a free port, writes the port to PORT_FILE once listening, and
appends one line per request ("METHOD PATH") to REQUEST_LOG. Runs until killed.
"""

import http.server
import json
import os
import sys


def resources(*items):
    """APIResource entries: (name, kind, namespaced)."""
    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
    return [
        {"name": n, "singularName": k.lower(), "kind": k, "namespaced": ns, "verbs": verbs}
        for n, k, ns in items
    ]


GROUPS = {
    "apps": ("v1", resources(("deployments", "Deployment", True))),
    "networking.k8s.io": ("v1", resources(("networkpolicies", "NetworkPolicy", True))),
    "agents.x-k8s.io": ("v1beta1", resources(("sandboxes", "Sandbox", True))),
}
CORE = resources(
    ("namespaces", "Namespace", False),
    ("pods", "Pod", True),
    ("persistentvolumeclaims", "PersistentVolumeClaim", True),
    ("secrets", "Secret", True),
    ("configmaps", "ConfigMap", True),
    ("services", "Service", True),
)


def discovery(path, address):
    if path == "/version":
        return {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"}
    if path == "/api":
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
        }
    if path == "/api/v1":
        return {"kind": "APIResourceList", "groupVersion": "v1", "resources": CORE}
    if path == "/apis":
        groups = []
        for name, (version, _) in GROUPS.items():
            gv = {"groupVersion": f"{name}/{version}", "version": version}
            groups.append({"name": name, "versions": [gv], "preferredVersion": gv})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    for name, (version, res) in GROUPS.items():
        if path == f"/apis/{name}/{version}":
            return {"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": f"{name}/{version}", "resources": res}
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *_):
        pass

    def record(self):
        with open(self.server.request_log, "a") as f:
            f.write(f"{self.command} {self.path}\n")

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def status(self, code, reason):
        self.reply(code, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Failure", "reason": reason, "code": code})

    def do_GET(self):
        self.record()
        body = discovery(self.path.split("?", 1)[0], f"127.0.0.1:{self.server.server_port}")
        if body is None:
            self.status(404, "NotFound")
        else:
            self.reply(200, body)

    def refuse(self):
        self.record()
        self.status(405, "MethodNotAllowed")

    do_POST = do_PUT = do_PATCH = do_DELETE = refuse


def main():
    port_file, request_log = sys.argv[1], sys.argv[2]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.request_log = request_log
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_port))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
