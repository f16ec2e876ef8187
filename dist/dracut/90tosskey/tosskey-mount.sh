#!/bin/sh
# dracut pre-pivot hook (sourced by dracut): the root filesystem is mounted at $NEWROOT;
# mounts the volume tosskey-provision.sh built at ${NEWROOT}${TOSSKEY_MOUNT}.
command -v warn >/dev/null || . /lib/dracut-lib.sh

TOSSKEY_MOUNT="/mnt/ephemeral"
TOSSKEY_NAME="ephemeral-encrypted"
[ -f /etc/tosskey/initramfs.conf ] && . /etc/tosskey/initramfs.conf

if [ -z "$TOSSKEY_MOUNT" ]; then
    :
elif [ ! -b "/dev/mapper/$TOSSKEY_NAME" ]; then
    warn "tosskey: /dev/mapper/$TOSSKEY_NAME does not exist (provision failed?): not mounting $TOSSKEY_MOUNT"
elif [ ! -d "${NEWROOT}${TOSSKEY_MOUNT}" ]; then
    warn "tosskey: $TOSSKEY_MOUNT does not exist in the root filesystem (create it in the image): not mounted"
else
    mount -t ext4 -o nodev,nosuid "/dev/mapper/$TOSSKEY_NAME" "${NEWROOT}${TOSSKEY_MOUNT}" ||
        warn "tosskey: mounting /dev/mapper/$TOSSKEY_NAME at $TOSSKEY_MOUNT failed"
fi
