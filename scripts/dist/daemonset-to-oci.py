#!/usr/bin/env python3
"""Turn an OCI runtime bundle's config.json into the runtime spec a kubelet and containerd
would give the DaemonSet's provisioning init container.

    daemonset-to-oci.py DAEMONSET_YAML CONTAINER_NAME BUNDLE_CONFIG_JSON

Used by scripts/dist-test's container case: umoci unpacks the image built from
dist/container/Dockerfile (its config.json runs the image's ENTRYPOINT and CMD); this
rewrites that spec from the DaemonSet, so that runc in the guest runs what a node would:

  - the container's args after the image's ENTRYPOINT (args replace CMD, as in Kubernetes);
  - privileged: every capability, no seccomp, no masked or read-only kernel paths, /sys
    read-write (what containerd's CRI plugin does for privileged containers);
  - readOnlyRootFilesystem: a read-only root;
  - each volumeMount of a hostPath volume as an rbind mount, with Bidirectional as
    "rshared" (and the root's propagation rshared, as containerd sets it) and
    HostToContainer as "rslave"; hostPath types Directory/DirectoryOrCreate are checked or
    created by the guest script beforehand, like kubelet does;
  - its own PID, IPC, UTS and network namespaces (no hostPID/hostNetwork/hostIPC).

What this does not model: the pod sandbox (pause), cgroup limits, the CRI's default
mounts (/etc/hosts, resolv.conf, termination log) and image pulling.
Exits non-zero, naming the problem, if the DaemonSet lacks what provisioning needs.
"""

import json
import sys

import yaml

ALL_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]
PROPAGATION = {"Bidirectional": "rshared", "HostToContainer": "rslave", "None": "rprivate"}


def fail(message):
    sys.exit(f"container: {message}")


def main():
    daemonset_path, container_name, config_path = sys.argv[1:4]
    with open(daemonset_path) as f:
        documents = [d for d in yaml.safe_load_all(f) if d]
    daemonsets = [d for d in documents if d.get("kind") == "DaemonSet"]
    if len(daemonsets) != 1:
        fail(f"{daemonset_path} has {len(daemonsets)} DaemonSets, expected 1")
    pod = daemonsets[0]["spec"]["template"]["spec"]
    containers = pod.get("initContainers", []) + pod.get("containers", [])
    matches = [c for c in containers if c["name"] == container_name]
    if not matches:
        fail(f"the DaemonSet has no container named {container_name}")
    container = matches[0]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}

    with open(config_path) as f:
        spec = json.load(f)
    entrypoint = spec["process"]["args"][:1]
    if container.get("command"):
        entrypoint = container["command"]
    spec["process"]["args"] = entrypoint + [str(a) for a in container.get("args", [])]
    spec["process"]["terminal"] = False
    security = container.get("securityContext", {})
    if not security.get("privileged"):
        fail(f"init container {container_name} is not privileged: device-mapper and md need it")
    caps = spec["process"].setdefault("capabilities", {})
    for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        caps[kind] = list(ALL_CAPABILITIES)
    spec["process"]["noNewPrivileges"] = False
    spec["root"]["readonly"] = bool(security.get("readOnlyRootFilesystem"))
    linux = spec.setdefault("linux", {})
    linux.pop("seccomp", None)
    linux["maskedPaths"] = []
    linux["readonlyPaths"] = []
    linux["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")]
    linux.pop("uidMappings", None)
    linux.pop("gidMappings", None)
    # A privileged container sees the host's devices (the CRI adds them all); the hostPath
    # /dev mount below is what tosskey's /dev/mapper nodes go through.
    linux.pop("devices", None)
    linux.setdefault("resources", {})["devices"] = [{"allow": True, "access": "rwm"}]

    mounts = [m for m in spec.get("mounts", []) if m["destination"] not in ("/sys", "/dev")]
    mounts.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                   "options": ["nosuid", "noexec", "nodev", "rw"]})
    bidirectional = False
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None or "hostPath" not in volume:
            fail(f"volumeMount {mount['name']} is not a hostPath volume")
        propagation = mount.get("mountPropagation", "None")
        bidirectional |= propagation == "Bidirectional"
        mounts = [m for m in mounts if m["destination"] != mount["mountPath"]]
        mounts.append({
            "destination": mount["mountPath"],
            "type": "bind",
            "source": volume["hostPath"]["path"],
            "options": ["rbind", PROPAGATION[propagation],
                        "ro" if mount.get("readOnly") else "rw"],
        })
    spec["mounts"] = mounts
    if bidirectional:
        # What containerd's CRI plugin sets when a mount is Bidirectional.
        linux["rootfsPropagation"] = "rshared"
    with open(config_path, "w") as f:
        json.dump(spec, f, indent=2)
    # The hostPath volumes and their types, for the guest to prepare like kubelet.
    for mount in container.get("volumeMounts", []):
        host_path = volumes[mount["name"]]["hostPath"]
        print(host_path["path"], host_path.get("type", ""))


if __name__ == "__main__":
    main()
