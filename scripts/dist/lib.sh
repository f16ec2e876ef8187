# shellcheck shell=bash
# Debian images and QEMU boots for scripts/dist-test. Source it; do not run.
#
# An image is a bookworm root filesystem made by mmdebstrap (minbase, no recommends, the
# packages one integration needs), cached as a tarball in $TOSSKEY_VM_CACHE/dist-images
# under a name that hashes what went into it (recipe, package list). Each boot unpacks the
# tarball, adds this checkout's binary, the dist/ files and the checker units, writes it
# into a raw ext4 disk with mke2fs -d and boots the image's own kernel and initramfs under
# QEMU/TCG. Instance disks are virtio-scsi disks that identify as GCP local SSDs (vendor
# "Google", model "EphemeralDisk"), so the integrations' unmodified `--discover any` finds
# them. The guest's checker prints "@@dist@@" lines on the serial console and powers off.

DIST_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIST_GUEST_DIR=$DIST_LIB_DIR/guest
DIST_CACHE=${TOSSKEY_VM_CACHE:-${XDG_CACHE_HOME:-${HOME:?set HOME or TOSSKEY_VM_CACHE}/.cache}/tosskey-vm}/dist-images
DIST_ACCEL=${TOSSKEY_VM_ACCEL:-tcg}
# Bumped when the recipe below changes in a way the package lists do not show.
DIST_RECIPE_VERSION=1

dist_log() { echo "[dist] $*" >&2; }
dist_die() {
    echo "[dist] ERROR: $*" >&2
    exit 1
}

# Everything the images need on the host, with the package to install.
dist_check_host_tools() {
    local tool package missing=()
    for tool in mmdebstrap:mmdebstrap qemu-system-x86_64:qemu-system-x86 mke2fs:e2fsprogs \
        debugfs:e2fsprogs mkfs.vfat:dosfstools mcopy:mtools python3:python3 \
        buildah:buildah umoci:umoci openssl:openssl; do
        package=${tool#*:}
        tool=${tool%%:*}
        PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] ||
        dist_die "missing host tools: apt-get install -y --no-install-recommends ${missing[*]}"
}

# Kernel modules the images keep: storage, md/dm, crypto, filesystems. The rest of
# drivers/, sound/ and net/ (two thirds of the package) is left out with dpkg path
# filters: a smaller image is a faster boot under TCG and nothing here needs a NIC or GPU.
DIST_KEPT_DRIVERS=(block md scsi virtio nvme firmware char)

# The packages of each image variant, on top of minbase.
#   systemd: the systemd unit and initramfs-tools cases
#   cloud-init: the same plus cloud-init (python3)
#   dracut: dracut instead of initramfs-tools
#   container: the same as systemd plus runc, the OCI runtime containerd uses
#   containerd: the same plus Debian's containerd, and mdadm and xfsprogs for the
#     nodeadm-style reference pipeline
dist_variant_packages() {
    local base=systemd-sysv,udev,linux-image-amd64,e2fsprogs,zstd
    case $1 in
    systemd) echo "$base,initramfs-tools" ;;
    cloud-init) echo "$base,initramfs-tools,cloud-init" ;;
    dracut) echo "$base,dracut" ;;
    container) echo "$base,initramfs-tools,runc" ;;
    containerd) echo "$base,initramfs-tools,runc,containerd,mdadm,xfsprogs" ;;
    *) dist_die "unknown image variant $1" ;;
    esac
}

# mmdebstrap's options for a variant (also what the cache key hashes).
dist_mmdebstrap_args() {
    local variant=$1 driver
    local args=(
        --variant=minbase
        --include="$(dist_variant_packages "$variant")"
        --aptopt='APT::Install-Recommends "false"'
        --dpkgopt='path-exclude=/usr/share/doc/*'
        --dpkgopt='path-exclude=/usr/share/man/*'
        --dpkgopt='path-exclude=/usr/share/locale/*'
        --dpkgopt='path-exclude=/usr/share/info/*'
        --dpkgopt='path-exclude=/lib/modules/*/kernel/sound/*'
        --dpkgopt='path-exclude=/lib/modules/*/kernel/net/*'
        --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/*'
    )
    for driver in "${DIST_KEPT_DRIVERS[@]}"; do
        args+=(--dpkgopt="path-include=/lib/modules/*/kernel/drivers/$driver/*")
    done
    printf '%s\n' "${args[@]}"
}

# Sets DIST_IMAGE (the cached tarball) and DIST_IMAGE_KERNEL (its kernel as an ELF for
# QEMU's PVH entry: TCG spends 8-14 s decompressing a bzImage) for VARIANT, building them
# when missing. Concurrent runs build in private temporary files and rename atomically.
dist_image() {
    local variant=$1 key args
    mapfile -t args < <(dist_mmdebstrap_args "$variant")
    key=$({
        echo "recipe $DIST_RECIPE_VERSION bookworm"
        printf '%s\n' "${args[@]}"
        cat "$DIST_LIB_DIR/image-setup"
    } | sha256sum | cut -c1-16)
    DIST_IMAGE=$DIST_CACHE/$variant-$key.tar
    DIST_IMAGE_KERNEL=$DIST_CACHE/$variant-$key.vmlinux
    if [ -f "$DIST_IMAGE" ] && [ -f "$DIST_IMAGE_KERNEL" ]; then
        return 0
    fi
    mkdir -p "$DIST_CACHE"
    local started=$SECONDS partial log
    partial=$(mktemp -d "$DIST_CACHE/.build-$variant.XXXXXX")
    # For an interrupted run's cleanup (scripts/dist-test removes it on exit).
    DIST_PARTIAL=$partial
    log=$partial/mmdebstrap.log
    dist_log "building image $variant ($(dist_variant_packages "$variant")): mmdebstrap, log $log"
    # image-setup runs before the kernel's postinst builds the first initramfs (its
    # content, not its path, is in the key). The container image boots like the systemd one.
    local setup=$variant
    case $variant in container | containerd) setup=systemd ;; esac
    if ! mmdebstrap "${args[@]}" --essential-hook="\"$DIST_LIB_DIR/image-setup\" $setup \"\$1\"" bookworm "$partial/image.tar" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -rf "$partial"
        dist_die "image $variant: mmdebstrap failed (see above)"
    fi
    # The kernel, extracted once per image: the tarball holds exactly one.
    local vmlinuz
    vmlinuz=$(tar -tf "$partial/image.tar" | grep -E '^\./boot/vmlinuz-' | head -n1)
    [ -n "$vmlinuz" ] || { rm -rf "$partial"; dist_die "image $variant has no /boot/vmlinuz-*"; }
    tar -C "$partial" -xf "$partial/image.tar" "$vmlinuz"
    python3 "$DIST_LIB_DIR/../vm/extract-vmlinux.py" "$partial/$vmlinuz" "$partial/vmlinux" ||
        cp "$partial/$vmlinuz" "$partial/vmlinux"
    mv -f "$partial/vmlinux" "$DIST_IMAGE_KERNEL"
    mv -f "$partial/image.tar" "$DIST_IMAGE"
    rm -rf "$partial"
    # shellcheck disable=SC2034  # read by scripts/dist-test's cleanup
    DIST_PARTIAL=
    dist_log "image $variant built in $((SECONDS - started))s: $(du -h "$DIST_IMAGE" | cut -f1)"
}

# Unpacks the current image into DIR (a fresh directory).
dist_unpack() {
    local dir=$1
    mkdir -p "$dir"
    tar -C "$dir" --numeric-owner -xpf "$DIST_IMAGE"
}

# Runs a command inside the unpacked image (update-initramfs, systemctl enable, dracut).
# /proc, /sys and /dev are bound for the duration and unmounted afterwards.
dist_chroot() {
    local dir=$1 status=0 mount
    shift
    mount -t proc proc "$dir/proc"
    mount --rbind /sys "$dir/sys"
    mount --rbind /dev "$dir/dev"
    chroot "$dir" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@" || status=$?
    for mount in dev sys proc; do
        umount -R "$dir/$mount" || umount -lR "$dir/$mount"
    done
    return "$status"
}

# The files every case installs: the binary, the checker unit and scripts (the case
# enables the unit). guest/check-CHECKER becomes /usr/local/lib/tosskey-dist/check.
#   dist_install_common DIR BINARY CHECKER
dist_install_common() {
    local dir=$1 binary=$2 checker=$3
    install -D -m 0755 "$binary" "$dir/usr/local/sbin/tosskey"
    install -d "$dir/usr/local/lib/tosskey-dist" "$dir/mnt/ephemeral"
    install -m 0644 "$DIST_GUEST_DIR/lib.sh" "$dir/usr/local/lib/tosskey-dist/lib.sh"
    install -m 0755 "$DIST_GUEST_DIR/check-$checker" "$dir/usr/local/lib/tosskey-dist/check"
    install -m 0644 "$DIST_GUEST_DIR/tosskey-dist-check.service" "$dir/etc/systemd/system/"
    ln -sf /lib/systemd/system/multi-user.target "$dir/etc/systemd/system/default.target"
    # The root filesystem by UUID (dist_root_disk gives every root disk this one).
    echo "UUID=$DIST_ROOT_UUID / ext4 errors=remount-ro 0 0" >"$dir/etc/fstab"
    echo tosskey-dist >"$dir/etc/hostname"
    # No login prompt on the console: the checker owns it.
    ln -sf /dev/null "$dir/etc/systemd/system/serial-getty@ttyS0.service"
    ln -sf /dev/null "$dir/etc/systemd/system/getty@tty1.service"
}

DIST_ROOT_UUID=5e1f7a3c-7055-4b3e-9d1a-d15700000001

# Writes DIR into a sparse raw ext4 disk FILE (no partition table: the kernel gets
# root=UUID=...). Sized to the tree plus 256 MiB of room.
dist_root_disk() {
    local dir=$1 file=$2 kib
    kib=$(du -sk "$dir" | cut -f1)
    rm -f "$file"
    mke2fs -q -t ext4 -F -U "$DIST_ROOT_UUID" -L dist-root -d "$dir" "$file" "$((kib + 262144))k" >/dev/null ||
        dist_die "mke2fs -d $dir failed"
}

# The image's initramfs, copied out of DIR: the one its own update-initramfs/dracut made.
dist_initrd_of() {
    local dir=$1 initrd
    initrd=$(find "$dir/boot" -maxdepth 1 -name 'initrd.img-*' | head -n1)
    [ -n "$initrd" ] || dist_die "the image has no /boot/initrd.img-* (its initramfs tool did not run)"
    echo "$initrd"
}

# A small disk carrying the run's parameters (the case, the phase and a random token),
# found by the guest by its serial dist-seed. The token is what the guest writes to the
# volume: the host greps disks for it, and it is never on the root disk unless plaintext
# leaked there.
#   dist_seed_disk FILE CASE PHASE TOKEN
dist_seed_disk() {
    local file=$1 case=$2 phase=$3 token=$4
    rm -f "$file"
    truncate -s 1M "$file"
    printf 'case=%s\nphase=%s\ntoken=%s\n' "$case" "$phase" "$token" | dd of="$file" conv=notrunc status=none
}

# Boots a root disk and judges the console.
#   dist_boot NAME TIMEOUT LOG KERNEL INITRD ROOT_DISK [--seed FILE] [--instance FILE]...
#              [--cidata FILE] [--nodeadm FILE]...
# --nodeadm disks are plain virtio disks (serial dist-nodeadm-N) that --discover does not take.
# Returns 0 when the checker printed END with no FAIL line; prints the checker's lines.
# no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can miss its
# ticks and panic ("IO-APIC + timer doesn't work!"); the emulated timer is known to work.
# shellcheck disable=SC2054  # the commas are inside QEMU option values
dist_boot() {
    local name=$1 timeout=$2 log=$3 kernel=$4 initrd=$5 root=$6
    shift 6
    local args=(
        -accel "$DIST_ACCEL" -cpu max -smp 2 -m 1536
        -display none -monitor none -serial "file:$log" -nic none -no-reboot
        -kernel "$kernel" -initrd "$initrd"
        -append "root=UUID=$DIST_ROOT_UUID ro console=ttyS0 quiet panic=-1 no_timer_check ${DIST_APPEND:-}"
        -drive "file=$root,format=raw,if=none,id=root,cache=unsafe"
        -device virtio-blk-pci,drive=root,serial=dist-root
        -device virtio-scsi-pci,id=scsi0
    )
    local index=0 nodeadm=0
    while [ $# -gt 0 ]; do
        case $1 in
        --seed)
            args+=(-drive "file=$2,format=raw,if=none,id=seed,cache=unsafe"
                -device virtio-blk-pci,drive=seed,serial=dist-seed)
            ;;
        --cidata)
            args+=(-drive "file=$2,format=raw,if=none,id=cidata,cache=unsafe"
                -device virtio-blk-pci,drive=cidata,serial=dist-cidata)
            ;;
        --nodeadm)
            args+=(-drive "file=$2,format=raw,if=none,id=nodeadm$nodeadm,cache=unsafe"
                -device "virtio-blk-pci,drive=nodeadm$nodeadm,serial=dist-nodeadm-$nodeadm")
            nodeadm=$((nodeadm + 1))
            ;;
        --instance)
            # GCP's local SSD identity (tosskey's discover.rs): vendor Google, model EphemeralDisk.
            args+=(-drive "file=$2,format=raw,if=none,id=inst$index,cache=unsafe"
                -device "scsi-hd,bus=scsi0.0,drive=inst$index,vendor=Google,product=EphemeralDisk,serial=dist-instance-$index")
            index=$((index + 1))
            ;;
        *) dist_die "dist_boot: unknown argument $1" ;;
        esac
        shift 2
    done
    local started=$SECONDS status=0
    dist_log "$name: booting ($index instance disk(s)), console in $log"
    # --foreground: QEMU stays in our process group, so an interrupt stops it too.
    timeout --foreground --kill-after=10 "$timeout" qemu-system-x86_64 "${args[@]}" </dev/null || status=$?
    local seconds=$((SECONDS - started))
    grep -a '@@dist@@' "$log" | sed 's/^.*@@dist@@ /    /' >&2 || true
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        DIST_FAILURE="$name: the guest did not power off within ${timeout}s"
    elif grep -aqE 'Kernel panic - not syncing|kernel BUG at|Oops: [0-9a-f]{4} ' "$log"; then
        DIST_FAILURE="$name: the guest kernel crashed: $(grep -aEm1 'Kernel panic|kernel BUG|Oops:' "$log")"
    elif grep -aq '@@dist@@ FAIL' "$log"; then
        DIST_FAILURE="$name: $(grep -ac '@@dist@@ FAIL' "$log") assertion(s) failed in the guest"
    elif ! grep -aq '@@dist@@ END' "$log"; then
        DIST_FAILURE="$name: the guest's checker never finished (no END line; QEMU exit status $status)"
    else
        dist_log "$name: passed in ${seconds}s"
        return 0
    fi
    dist_log "$name: last console lines:"
    grep -av '@@dist@@' "$log" | tail -n 40 | sed 's/^/    | /' >&2
    dist_log "FAILED $DIST_FAILURE (${seconds}s)"
    return 1
}
