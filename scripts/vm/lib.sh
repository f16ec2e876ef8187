# shellcheck shell=bash
# Shared guest-building logic for scripts/vm-test and scripts/demo. Source it; do not run.
#
# The guest is Debian's stock kernel (linux-image-amd64) plus an initramfs holding
# busybox, the kernel modules tosskey needs, a few host tools and our binaries. It boots
# under QEMU/TCG because the development hosts' kernels have neither device-mapper nor md
# and their /dev/kvm cannot boot a stock kernel.
#
# Environment knobs:
#   TOSSKEY_VM_CACHE  where unpacked kernels are kept (default ~/.cache/tosskey-vm)
#   TOSSKEY_VM_TOOLS  host programs copied into the guest's /usr/sbin with their shared
#                     libraries (default: none; scripts/vm-test sets the root tests' list)
#   TOSSKEY_VM_ACCEL  QEMU accelerator (default tcg; set kvm only where it is proven)
#   VM_HOT_DISK       set by scripts/vm-test --hot-disk: a blank image vm_boot hands to
#                     run-qemu.py, which hot-adds it when a test asks (HOT-DISK-ADD)
#   VM_TPM_STATE      set by scripts/vm-test --tpm: vm_boot attaches a swtpm TPM 2.0 whose
#                     state lives in this directory

VM_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_CACHE=${TOSSKEY_VM_CACHE:-${XDG_CACHE_HOME:-${HOME:?set HOME or TOSSKEY_VM_CACHE}/.cache}/tosskey-vm}
VM_TOOLS=${TOSSKEY_VM_TOOLS-}
VM_ACCEL=${TOSSKEY_VM_ACCEL:-tcg}
# preload: the init loads every module below before the payload. on-demand (scripts/vm-test
# --modules on-demand): the init loads only VM_BOOT_MODULES; the others sit in a real
# /lib/modules/<release> tree (modules.dep etc. made by depmod) with busybox modprobe as
# the kernel's module helper, so tosskey must bring them up itself.
VM_MODULE_MODE=${VM_MODULE_MODE:-preload}
VM_BOOT_MODULES=" virtio_pci virtio_blk loop brd "

# Kernel modules loaded by the guest init, in this order (their dependencies first, as
# resolved by modprobe). "required" ones must load or the run fails before any test;
# "optional" ones may legitimately fail (twofish-avx needs AVX, which TCG may lack).
# brd: 4 RAM disks of 64 MiB (rd_size is in KiB) for tests that want a second kind of
# block device without touching the virtio disks.
# dm-raid and dm-zero: the stock tools' recipe for a raid10 volume (a dm raid mapping with
# zero-target metadata devices, tests/root_mirrors.rs).
# overlay: an overlayfs upper directory on a tosskey XFS volume (tests/root_xfs.rs).
VM_MODULES=(
    "required virtio_pci"
    "required virtio_blk"
    "required loop"
    "required brd rd_nr=4 rd_size=65536"
    "required dm-mod"
    "required dm-crypt"
    "required dm-integrity"
    "required dm-raid"
    "required dm-zero"
    "required md-mod"
    "required linear"
    "required raid0"
    "required raid1"
    "required raid10"
    "required xts"
    "required twofish_generic"
    "required aesni-intel"
    "required af_alg"
    "required algif_skcipher"
    "required ext4"
    "required xfs"
    "required overlay"
    "required crc32c_generic"
    "optional raid456"
    "optional twofish-avx-x86_64"
    "optional crc32c-intel"
)

vm_log() { echo "[vm] $*" >&2; }
vm_die() {
    echo "[vm] ERROR: $*" >&2
    exit 1
}

# Installs Debian packages with apt-get (through sudo when not root), waiting for the dpkg
# lock rather than failing when another install holds it. Recommends are left out: they
# would add audio, speech and GUI packages the headless guest never uses.
vm_apt_install() {
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    vm_log "installing $*"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=900 update -q >&2 &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "$@" >&2 ||
        vm_die "apt-get install $* failed"
}

# The guest is built from host tools: installs the packages that provide them when one is
# missing (a brand-new machine has none of them), so scripts/demo and scripts/vm-test run
# from nothing.
vm_check_host_tools() {
    local tool missing=()
    for tool in qemu-system-x86_64 busybox cpio modprobe depmod apt-get dpkg-deb python3 ldd; do
        PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null || missing+=("$tool")
    done
    # The guest has no libc: busybox must be the static build.
    if [ ${#missing[@]} -gt 0 ] || ldd "$(command -v busybox)" >/dev/null 2>&1; then
        command -v apt-get >/dev/null || vm_die "missing ${missing[*]} and no apt-get to install them"
        vm_apt_install qemu-system-x86 busybox-static cpio kmod
        hash -r
        if ldd "$(command -v busybox)" >/dev/null 2>&1; then
            vm_die "$(command -v busybox) is dynamically linked even after installing busybox-static"
        fi
    fi
}

# Sets VM_KERNEL_RELEASE, VM_KERNEL_ROOT (the unpacked package) and VM_KERNEL_IMAGE.
#
# The cache holds one directory per kernel release, e.g. ~/.cache/tosskey-vm/6.1.0-56-amd64,
# with a .complete stamp. It is filled in a private temporary directory and renamed into
# place atomically, so concurrent runs never see a half-unpacked kernel; if two runs race,
# the loser's rename fails and it uses the winner's copy.
vm_fetch_kernel() {
    mkdir -p "$VM_CACHE"
    local download image_package
    download=$(mktemp -d "$VM_CACHE/.download.XXXXXX")
    # apt's download sandbox user (_apt) must be able to write here.
    chmod 0755 "$download"
    if (cd "$download" && apt-get download -q linux-image-amd64 >/dev/null 2>&1); then
        # The meta package depends on exactly one versioned image package.
        image_package=$(dpkg-deb -f "$download"/linux-image-amd64_*.deb Depends | awk '{print $1}')
        VM_KERNEL_RELEASE=${image_package#linux-image-}
    else
        # Offline: fall back to the newest kernel already in the cache.
        VM_KERNEL_RELEASE=$(find "$VM_CACHE" -mindepth 2 -maxdepth 2 -name .complete -printf '%h\n' |
            xargs -r -n1 basename | sort -V | tail -n1)
        [ -n "$VM_KERNEL_RELEASE" ] ||
            { rm -rf "$download"; vm_die "apt-get download linux-image-amd64 failed and $VM_CACHE is empty (run apt-get update?)"; }
        vm_log "apt-get download failed; using cached kernel $VM_KERNEL_RELEASE"
    fi
    VM_KERNEL_ROOT=$VM_CACHE/$VM_KERNEL_RELEASE
    if [ ! -e "$VM_KERNEL_ROOT/.complete" ]; then
        vm_log "fetching $image_package into $VM_KERNEL_ROOT"
        (cd "$download" && apt-get download -q "$image_package" >/dev/null 2>&1) ||
            { rm -rf "$download"; vm_die "apt-get download $image_package failed"; }
        dpkg-deb -x "$download/${image_package}"_*.deb "$download/root"
        # The package ships no modules.dep (its postinst makes it); modprobe needs one.
        depmod -b "$download/root" "$VM_KERNEL_RELEASE"
        touch "$download/root/.complete"
        mv -T "$download/root" "$VM_KERNEL_ROOT" 2>/dev/null ||
            vm_log "another run unpacked $VM_KERNEL_RELEASE first; using its copy"
    fi
    rm -rf "$download"
    [ -e "$VM_KERNEL_ROOT/.complete" ] ||
        vm_die "kernel cache $VM_KERNEL_ROOT is incomplete; delete it and retry"
    # Boot the uncompressed ELF through the PVH entry point when possible: under TCG the
    # bzImage's xz decompressor alone takes 8-14 s of every boot. Extracted once per
    # cache entry, via a temporary file and an atomic rename (concurrent runs).
    local bzimage=$VM_KERNEL_ROOT/boot/vmlinuz-$VM_KERNEL_RELEASE
    local vmlinux=$VM_KERNEL_ROOT/boot/vmlinux-$VM_KERNEL_RELEASE
    if [ ! -f "$vmlinux" ] && grep -qx CONFIG_PVH=y "$VM_KERNEL_ROOT/boot/config-$VM_KERNEL_RELEASE"; then
        local partial
        partial=$(mktemp "$vmlinux.XXXXXX")
        if python3 "$VM_SCRIPTS_DIR/extract-vmlinux.py" "$bzimage" "$partial"; then
            mv -f "$partial" "$vmlinux"
        else
            rm -f "$partial"
        fi
    fi
    if [ -f "$vmlinux" ]; then
        VM_KERNEL_IMAGE=$vmlinux
    else
        VM_KERNEL_IMAGE=$bzimage
    fi
}

# Copies a host file to the same or another absolute path inside the initramfs tree.
#   vm_install ROOT HOST_PATH [GUEST_PATH]
vm_install() {
    local root=$1 source=$2 target=${3:-$2}
    mkdir -p "$root$(dirname "$target")"
    cp -L "$source" "$root$target"
}

# Copies a dynamically linked host program into the guest's /usr/sbin together with the
# shared libraries and ELF interpreter ldd names, at their host paths.
vm_install_tool() {
    local root=$1 tool=$2 path library
    path=$(PATH=$PATH:/usr/sbin:/sbin command -v "$tool") ||
        vm_die "tool $tool (from TOSSKEY_VM_TOOLS) is not installed on the host"
    vm_install "$root" "$path" "/usr/sbin/$tool"
    # ldd prints "libx.so => /path (addr)" and "/lib64/ld-linux-x86-64.so.2 (addr)";
    # a static program makes it fail, and then there is nothing to copy.
    for library in $(ldd "$path" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        [ -e "$root$library" ] || vm_install "$root" "$library"
    done
}

# Copies the modules and their dependencies into ROOT/lib/modules (flat, uncompressed,
# since busybox insmod cannot read .ko.xz/.ko.zst) and writes ROOT/etc/tosskey/modules,
# the ordered list the guest init loads. In on-demand mode the modules outside
# VM_BOOT_MODULES go to ROOT/lib/modules/<release>/<their path> instead, indexed by depmod.
vm_install_modules() {
    local root=$1 spec need name params line ko file
    local tree=$root/lib/modules/$VM_KERNEL_RELEASE source_tree=$VM_KERNEL_ROOT/lib/modules/$VM_KERNEL_RELEASE
    local -A listed=()
    mkdir -p "$root/lib/modules" "$root/etc/tosskey"
    : >"$root/etc/tosskey/modules"
    echo "$VM_MODULE_MODE" >"$root/etc/tosskey/module-mode"
    for spec in "${VM_MODULES[@]}"; do
        read -r need name params <<<"$spec"
        local depends
        # --config=/dev/null: the host's /etc/modprobe.d (e.g. mdadm's "options md_mod
        # start_ro=1") must not leak into the guest.
        if ! depends=$(modprobe -d "$VM_KERNEL_ROOT" -S "$VM_KERNEL_RELEASE" --config=/dev/null \
            --show-depends "$name" 2>&1); then
            [ "$need" = optional ] || vm_die "module $name: $depends"
            vm_log "optional module $name is not in $VM_KERNEL_RELEASE; skipped"
            continue
        fi
        # Lines look like "insmod /path/dep.ko " ... "insmod /path/name.ko"; modules
        # built into the kernel show as "builtin name" and need nothing.
        while read -r line; do
            [[ $line == insmod\ * ]] || continue
            ko=$(awk '{print $2}' <<<"$line")
            if [ "$VM_MODULE_MODE" = on-demand ] && [[ $VM_BOOT_MODULES != *" $name "* ]]; then
                mkdir -p "$(dirname "$tree/${ko#"$source_tree/"}")"
                cp "$ko" "$tree/${ko#"$source_tree/"}"
                continue
            fi
            file=$(basename "$ko")
            file=${file%.xz}
            file=${file%.zst}
            file=${file%.gz}
            [ -z "${listed[$file]:-}" ] || continue
            listed[$file]=1
            case $ko in
            *.xz) xz -dc "$ko" >"$root/lib/modules/$file" ;;
            *.zst) zstd -qdc "$ko" >"$root/lib/modules/$file" ;;
            *.gz) gzip -dc "$ko" >"$root/lib/modules/$file" ;;
            *) cp "$ko" "$root/lib/modules/$file" ;;
            esac
            # Parameters belong to the requested module only, not to its dependencies.
            if [ "$(basename "$file" .ko | tr - _)" = "$(tr - _ <<<"$name")" ]; then
                echo "$need $file $params" >>"$root/etc/tosskey/modules"
            else
                echo "$need $file" >>"$root/etc/tosskey/modules"
            fi
        done <<<"$depends"
    done
    if [ "$VM_MODULE_MODE" = on-demand ]; then
        cp "$source_tree"/modules.{builtin,builtin.modinfo,order} "$tree/"
        depmod -b "$root" "$VM_KERNEL_RELEASE" || vm_die "depmod of the guest module tree failed"
    fi
}

# Creates the initramfs tree in ROOT: busybox with all applet links, the init, the
# modules, the extra tools, and PAYLOAD as /etc/tosskey/payload (the script init runs).
vm_initramfs_tree() {
    local root=$1 payload=$2 applet tool
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/tosskey,proc,sys,dev,tmp,run,root}
    cp "$(command -v busybox)" "$root/bin/busybox"
    for applet in $(busybox --list); do
        [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    cp "$VM_SCRIPTS_DIR/init" "$root/init"
    cp "$payload" "$root/etc/tosskey/payload"
    chmod 0755 "$root/init"
    vm_install_modules "$root"
    for tool in $VM_TOOLS; do
        vm_install_tool "$root" "$tool"
    done
}

# Packs ROOT into an uncompressed newc cpio (the kernel unpacks it fastest; compressing
# would cost more host time than it saves).
vm_initramfs_pack() {
    local root=$1 output=$2
    (cd "$root" && find . -print0 | cpio --null --create --format=newc --owner=0:0 --quiet) >"$output"
}

# Creates COUNT sparse blank disk images of SIZE (truncate syntax: 256M, 1G) in DIR and
# prints their paths.
vm_make_disks() {
    local dir=$1 count=$2 size=$3 index
    for ((index = 0; index < count; index++)); do
        truncate -s "$size" "$dir/disk$index.img" || vm_die "bad disk size $size"
        echo "$dir/disk$index.img"
    done
}

# Boots the guest and streams its console; returns run-qemu.py's verdict.
#   vm_boot INITRD TIMEOUT MODE DISK...
vm_boot() {
    local initrd=$1 timeout=$2 mode=$3 disk
    shift 3
    local args=(--kernel "$VM_KERNEL_IMAGE" --initrd "$initrd" --timeout "$timeout" --mode "$mode" --accel "$VM_ACCEL")
    [ -z "${VM_TPM_STATE:-}" ] || args+=(--tpm-state "$VM_TPM_STATE")
    [ -z "${VM_HOT_DISK:-}" ] || args+=(--hot-disk "$VM_HOT_DISK")
    for disk in "$@"; do
        args+=(--disk "$disk")
    done
    python3 "$VM_SCRIPTS_DIR/run-qemu.py" "${args[@]}"
}
