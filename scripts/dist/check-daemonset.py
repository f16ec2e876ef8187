#!/usr/bin/env python3
"""Check that dist/kubernetes/daemonset.yaml keeps the design that closes the plaintext
window before the volume is mounted (dist/README.md, "Kubernetes").

    check-daemonset.py DAEMONSET_YAML

Prints one "ok" line per fact; on the first violated one prints
"kubernetes: <what is wrong>" as its last line and exits 1.
"""

import sys

import yaml

TAINT = "tosskey.io/unprovisioned"
RUNTIME_DIRECTORIES = {"/var/lib/kubelet", "/var/lib/containerd", "/var/log/pods",
                       "/var/lib/soci-snapshotter-grpc", "/var/lib/docker", "/var/lib/ecs",
                       "/var/log/ecs"}


def fail(message):
    print(f"kubernetes: {message}")
    sys.exit(1)


def ok(message):
    print(f"ok   kubernetes: {message}")


def main():
    with open(sys.argv[1]) as f:
        documents = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for document in documents:
        by_kind.setdefault(document["kind"], []).append(document)
    if len(by_kind.get("DaemonSet", [])) != 1:
        fail("expected exactly one DaemonSet")
    daemonset = by_kind["DaemonSet"][0]
    pod = daemonset["spec"]["template"]["spec"]
    init = {c["name"]: c for c in pod.get("initContainers", [])}
    names = [c["name"] for c in pod.get("initContainers", [])]
    if names[:2] != ["provision", "untaint"]:
        fail(f"init containers are {names}: provision must run first, then untaint")
    ok("init containers run provision, then untaint (only after provision succeeded)")

    tolerations = pod.get("tolerations", [])
    if not any(t.get("operator") == "Exists" and not t.get("key") or t.get("key") == TAINT
               for t in tolerations):
        fail(f"the DaemonSet does not tolerate the startup taint {TAINT}")
    ok(f"the DaemonSet tolerates the startup taint {TAINT}")

    untaint = init["untaint"]
    script = " ".join(untaint.get("command", []) + untaint.get("args", []))
    if f"{TAINT}-" not in script or "$NODE_NAME" not in script:
        fail(f"the untaint container does not remove {TAINT} from $NODE_NAME: {script}")
    env = {e["name"]: e for e in untaint.get("env", [])}
    if env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
        fail("NODE_NAME of the untaint container is not the pod's spec.nodeName")
    ok(f"the untaint container removes {TAINT} from its own node (spec.nodeName)")

    if pod.get("automountServiceAccountToken") is not False:
        fail("the pod mounts an API token into every container (automountServiceAccountToken)")
    token_volumes = {v["name"] for v in pod.get("volumes", [])
                     if any("serviceAccountToken" in s for s in v.get("projected", {}).get("sources", []))}
    holders = [c["name"] for c in pod.get("initContainers", []) + pod.get("containers", [])
               if any(m["name"] in token_volumes for m in c.get("volumeMounts", []))]
    if holders != ["untaint"]:
        fail(f"the API token is mounted into {holders}, expected only untaint")
    if init["provision"]["securityContext"].get("privileged") is not True:
        fail("the provision container is not privileged")
    if untaint.get("securityContext", {}).get("privileged"):
        fail("the untaint container is privileged; it only talks to the API")
    ok("only the unprivileged untaint container holds an API token")

    rules = [r for role in by_kind.get("ClusterRole", []) for r in role.get("rules", [])]
    granted = {(resource, verb) for r in rules for resource in r["resources"] for verb in r["verbs"]}
    if granted != {("nodes", "get"), ("nodes", "patch")}:
        fail(f"the ClusterRole grants {sorted(granted)}, expected nodes get and patch only")
    ok("RBAC grants nodes get and patch, nothing else")

    comments = open(sys.argv[1]).read()
    for needle in ("chattr +i /mnt/ephemeral", "type: Directory", "mountPropagation: HostToContainer"):
        if needle not in comments:
            fail(f"the manifest no longer tells workloads/nodes '{needle}' (the reboot window)")
    ok("the manifest documents the immutable mount point and the workloads' hostPath settings")

    # A DaemonSet runs under containerd and kubelet: moving their directories (or pod logs,
    # Docker's, ECS's) under them while they run would copy live state and hide what they
    # keep writing. Those binds belong in the node image's unit, ordered before them.
    args = init["provision"].get("args", [])
    held = [args[i + 1] for i, a in enumerate(args[:-1])
            if a == "--bind" and args[i + 1] in RUNTIME_DIRECTORIES]
    if held:
        fail(f"the provision container binds {held}, which the running node holds: "
             "use dist/systemd/tosskey-kubernetes.service for those")
    if "tosskey-kubernetes.service" not in comments:
        fail("the manifest does not send node-runtime binds to dist/systemd/tosskey-kubernetes.service")
    ok("the DaemonSet binds no directory the running containerd, kubelet or agent holds")


if __name__ == "__main__":
    main()
