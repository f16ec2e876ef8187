#!/bin/sh
# dracut pre-mount hook (sourced by dracut): tosskey provision, before the root is mounted.
# A failure is reported and the boot goes on without the volume; tosskey-mount.sh then
# mounts nothing and services that require the volume do not start.
command -v warn >/dev/null || . /lib/dracut-lib.sh

TOSSKEY_PROVISION_ARGS="--discover any"
[ -f /etc/tosskey/initramfs.conf ] && . /etc/tosskey/initramfs.conf

for tosskey_module in dm_mod dm_crypt md_mod raid0 xts twofish_generic; do
    modprobe -q "$tosskey_module" || warn "tosskey: modprobe $tosskey_module failed"
done
unset tosskey_module

info "tosskey: encrypting the ephemeral disks"
# Word splitting of the arguments is intended.
# shellcheck disable=SC2086
/usr/sbin/tosskey provision $TOSSKEY_PROVISION_ARGS ||
    warn "tosskey provision failed (exit $?): no encrypted ephemeral volume this boot"
