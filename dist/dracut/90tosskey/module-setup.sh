#!/bin/bash
# dracut module: puts the static tosskey binary, its configuration and the kernel modules
# it needs into the initramfs, and runs it on every boot (a reboot leaves the old boot's
# ciphertext, a stop/start blank disks: both get a new volume; see dist/README.md).
# Install: cp -r 90tosskey /usr/lib/dracut/modules.d/ ; then
#   dracut -f --add tosskey        (or add_dracutmodules+=" tosskey " in /etc/dracut.conf.d/)
# No cryptsetup, dmsetup, mdadm, mke2fs or udev rules: tosskey is one static executable.

# The static binary: /usr/local/sbin/tosskey, where the other integrations install it
# (dracut resets PATH to /usr/sbin:/usr/bin:/sbin:/bin, so a PATH lookup alone misses it:
# scripts/dist-test's boot found that), else wherever PATH finds one. TOSSKEY_BINARY
# overrides it, as in the initramfs-tools hook.
tosskey_binary() {
    local binary=${TOSSKEY_BINARY:-/usr/local/sbin/tosskey}
    [ -x "$binary" ] || binary=$(command -v tosskey) || return 1
    echo "$binary"
}

# Only when asked for (--add tosskey / add_dracutmodules), and only if the binary exists.
check() {
    tosskey_binary >/dev/null || return 1
    return 255
}

depends() {
    return 0
}

# device-mapper, dm-crypt, md and its personalities, the default cipher (twofish-xts, with
# its AVX and AES-NI siblings when the kernel has them) and ext4 for the mount.
installkernel() {
    instmods dm_mod dm_crypt md_mod raid0 raid1 raid10 linear xts twofish_generic \
        twofish_avx_x86_64 aesni_intel ext4
}

install() {
    local config_dir=${TOSSKEY_CONFIG_DIR:-/etc/tosskey} key
    inst_binary "$(tosskey_binary)" /usr/sbin/tosskey
    # The hooks source initramfs.conf (without one they use the same defaults); an escrow
    # public key it names must be in the image too. Never a private key.
    if [ -f "$config_dir/initramfs.conf" ]; then
        inst_simple "$config_dir/initramfs.conf" /etc/tosskey/initramfs.conf
    fi
    for key in "$config_dir"/*.pub.pem; do
        if [ -f "$key" ]; then
            inst_simple "$key" "/etc/tosskey/${key##*/}"
        fi
    done
    # pre-mount: build the volume before the root is mounted (journal in /run/tosskey,
    # which the booted system inherits). pre-pivot: the root is mounted at $NEWROOT;
    # mount the volume below it so it arrives in the booted system already mounted.
    # moddir is set by dracut to this module's directory.
    # shellcheck disable=SC2154
    inst_hook pre-mount 50 "$moddir/tosskey-provision.sh"
    inst_hook pre-pivot 50 "$moddir/tosskey-mount.sh"
}
