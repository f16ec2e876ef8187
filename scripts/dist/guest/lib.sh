# shellcheck shell=bash
# Shared by the checkers scripts/dist-test installs in its guests (as
# /usr/local/lib/tosskey-dist/lib.sh). Results go to the serial console as "@@dist@@"
# lines, which the host reads; nothing here writes to the root disk.

# shellcheck disable=SC2034  # used by the checkers that source this file
DIST_RUN=/run/tosskey-dist
# shellcheck disable=SC2034
DIST_UNIT=tosskey-ephemeral.service
DIST_VOLUME=/dev/mapper/ephemeral-encrypted
DIST_MOUNT=/mnt/ephemeral
dist_failures=0
mkdir -p "$DIST_RUN"

dist_say() { echo "@@dist@@ $*" >/dev/ttyS0; }
ok() { dist_say "ok   $DIST_CASE: $*"; }
fail() {
    dist_say "FAIL $DIST_CASE: $*"
    dist_failures=$((dist_failures + 1))
}
note() { dist_say "note $DIST_CASE: $*"; }

# Ends the run: the END line tells the host the checker finished, then power off.
dist_finish() {
    dist_say "END $DIST_CASE failures=$dist_failures"
    systemctl poweroff --no-block
    exit 0
}

# The block device whose virtio serial is $1, e.g. dist-seed.
disk_by_serial() {
    local serial
    for serial in /sys/block/*/serial /sys/block/*/device/serial; do
        [ -f "$serial" ] || continue
        if [ "$(tr -d ' \n' <"$serial")" = "$1" ]; then
            serial=${serial#/sys/block/}
            echo "/dev/${serial%%/*}"
            return 0
        fi
    done
    return 1
}

# A field (phase, token) of the seed disk the host wrote for this boot.
seed() {
    local disk
    disk=$(disk_by_serial dist-seed) || return 1
    head -c 4096 "$disk" | tr -d '\0' | sed -n "s/^$1=//p"
}

# 1 MiB of recognisable data: TOKEN (and an optional prefix) line after line. The host
# looks for the token on the disks after power-off.
#   token_data TOKEN [PREFIX]
token_data() {
    head -c 1048576 < <(yes "${2:+$2 }$1" 2>/dev/null)
}

# Writes 1 MiB of TOKEN to the volume and flushes it to the instance disks (where the host
# then looks for it in plaintext).
write_token_file() {
    # Never into the bare mount point on the root disk (check_volume_mounted failed already).
    mountpoint -q "$DIST_MOUNT" || return 0
    if ! token_data "$1" >"$DIST_MOUNT/data" || ! sync "$DIST_MOUNT/data"; then
        fail "writing to $DIST_MOUNT failed"
    fi
}

# The /sys/block directory name (dm-0, md127, sda) of a block device node.
sysfs_name() {
    local numbers
    numbers=$(stat -L -c '%t %T' "$1") || return 1
    # shellcheck disable=SC2086
    basename "$(readlink -f "/sys/dev/block/$(printf '%d:%d' 0x${numbers% *} 0x${numbers#* })")"
}

# One property of a unit.
prop() { systemctl show -P "$2" "$1"; }

# Waits (up to $2 seconds) until unit $1 is no longer starting or waiting to restart.
wait_settled() {
    local unit=$1 deadline=$((SECONDS + $2)) state
    while [ $SECONDS -lt $deadline ]; do
        state=$(prop "$unit" ActiveState)/$(prop "$unit" SubState)
        case $state in
        activating/* | */auto-restart | reloading/*) sleep 1 ;;
        *) return 0 ;;
        esac
    done
    return 1
}

# The instance disks the host attached (SCSI, vendor Google, model EphemeralDisk).
instance_disks() {
    local model
    for model in /sys/block/sd*/device/model; do
        [ -f "$model" ] || continue
        if [ "$(tr -d ' \n' <"$model")" = EphemeralDisk ]; then
            model=${model#/sys/block/}
            echo "/dev/${model%%/*}"
        fi
    done
}

# The facts every booted case checks once the volume should be there: mounted from the
# dm-crypt mapping over the instance disks, and `tosskey status` sees it.
check_volume_mounted() {
    local source fstype dm slaves disk
    source=$(findmnt -n -o SOURCE "$DIST_MOUNT" 2>/dev/null || true)
    fstype=$(findmnt -n -o FSTYPE "$DIST_MOUNT" 2>/dev/null || true)
    if [ "$source" = "$DIST_VOLUME" ] && [ "$fstype" = ext4 ]; then
        ok "$DIST_MOUNT is mounted from $DIST_VOLUME (ext4)"
    else
        fail "$DIST_MOUNT should be mounted from $DIST_VOLUME (ext4), found '${source:-nothing}' (${fstype:-no filesystem})"
        return
    fi
    dm=$(sysfs_name "$DIST_VOLUME")
    if [ -z "$(cat "/sys/block/$dm/dm/uuid" 2>/dev/null)" ]; then
        fail "$DIST_VOLUME ($dm) has no dm uuid in sysfs"
    fi
    # The chain down to the instance disks: the mapping's slaves, through md if striped.
    slaves=$(find /sys/block/"$dm"/slaves /sys/block/"$dm"/slaves/*/slaves -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null |
        sort | tr '\n' ' ')
    local expected=""
    for disk in $(instance_disks); do
        expected+="${disk#/dev/} "
    done
    if [ -n "$expected" ] && [ -z "$(comm -13 <(echo "$slaves" | tr ' ' '\n' | sort) <(echo "$expected" | tr ' ' '\n' | sort) | tr -d '\n')" ]; then
        ok "the mapping sits on the instance disk(s) $expected(chain: $slaves)"
    else
        fail "the mapping's chain ($slaves) does not include every instance disk ($expected)"
    fi
    if /usr/local/sbin/tosskey status >"$DIST_RUN/status" 2>&1 && grep -q ephemeral-encrypted "$DIST_RUN/status"; then
        ok "tosskey status in the booted system sees the volume: $(head -n1 "$DIST_RUN/status")"
    else
        fail "tosskey status in the booted system does not see ephemeral-encrypted: $(head -n3 "$DIST_RUN/status" | tr '\n' ' ')"
    fi
}

# First boot: leave a 1 MiB canary (of the checker's $token) on the volume and remember,
# in $STATE on the root disk, where its ciphertext is on the instance disk (single disk,
# plain dm-crypt: no header, volume offset = disk offset).
record_canary() {
    local disk offset
    mountpoint -q "$DIST_MOUNT" || return 0
    disk=$(instance_disks | head -n1)
    token_data "$token" canary >"$DIST_MOUNT/canary"
    sync "$DIST_MOUNT/canary"
    # filefrag -e: " 0: 0.. 255: PHYSICAL.. END: LENGTH:" in 4 KiB blocks.
    read -r offset length < <(filefrag -e -b4096 "$DIST_MOUNT/canary" | awk -F'[:. ]+' '$2 == "0" {print $5, $7; exit}')
    if [ -z "${offset:-}" ] || [ "${length:-0}" -lt 256 ]; then
        fail "the canary file is not one 1 MiB extent (filefrag: $(filefrag -e -b4096 "$DIST_MOUNT/canary" | tail -n +3 | head -n2 | tr '\n' ' '))"
        return
    fi
    mkdir -p "$STATE"
    {
        echo "offset=$offset"
        echo "plain=$(sha256sum <"$DIST_MOUNT/canary" | cut -d' ' -f1)"
        echo "raw=$(dd if="$disk" bs=4096 skip="$offset" count=256 iflag=direct status=none | sha256sum | cut -d' ' -f1)"
    } >"$STATE/canary"
    sync "$STATE/canary"
    ok "recorded the first boot's canary at block $offset of $disk"
}

# Second boot: the first boot's ciphertext is still on the disk, and the new mapping does
# not decrypt it to the canary, so the key is new (and no --force was needed).
check_new_key() {
    local disk offset plain raw now_raw now_plain
    disk=$(instance_disks | head -n1)
    if [ ! -f "$STATE/canary" ]; then
        fail "no record of the first boot's canary in $STATE/canary"
        return
    fi
    if [ ! -b "$DIST_VOLUME" ]; then
        fail "there is no $DIST_VOLUME in this boot: cannot tell the key changed"
        return
    fi
    offset=$(sed -n 's/^offset=//p' "$STATE/canary")
    plain=$(sed -n 's/^plain=//p' "$STATE/canary")
    raw=$(sed -n 's/^raw=//p' "$STATE/canary")
    now_raw=$(dd if="$disk" bs=4096 skip="$offset" count=256 iflag=direct status=none | sha256sum | cut -d' ' -f1)
    now_plain=$(dd if="$DIST_VOLUME" bs=4096 skip="$offset" count=256 iflag=direct status=none | sha256sum | cut -d' ' -f1)
    if [ "$now_raw" != "$raw" ]; then
        fail "the first boot's canary ciphertext at block $offset of $disk was overwritten: cannot tell the key changed"
    elif [ "$now_plain" = "$plain" ]; then
        fail "the second boot's volume decrypts the first boot's canary: the key did not change"
    else
        ok "the first boot's ciphertext is still on $disk, and the new volume does not decrypt it: new key, no --force"
    fi
}

# The integration under test (systemd, cloud-init, ...), as the host's seed disk says.
DIST_CASE=$(seed case)
DIST_CASE=${DIST_CASE:-unknown}
