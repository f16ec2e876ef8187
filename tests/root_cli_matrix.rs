//! Root test (VM guest): the CLI matrix of `cli_matrix.rs` for the commands that need
//! device-mapper — provision, status, shred, close, `bench --device` — as root, as
//! `nobody`, with a 64 KiB RLIMIT_MEMLOCK and as root without CAP_IPC_LOCK. Every run ends
//! in one line and a documented exit code, never a panic or an abort; root provisions even
//! without CAP_IPC_LOCK and with that small limit (the keys need a few pages). The guest
//! gets util-linux's `setpriv` and `prlimit` through scripts/vm-test's TOSSKEY_VM_TOOLS.

use std::path::Path;
use std::process::Stdio;

use crate::common::matrix::{check, command, contexts};
use tosskey_testkit::{virtio_disks, zero_range};

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn user_facing_device_commands_end_in_one_line_and_a_documented_code_as_any_user_and_under_low_limits(
) {
    for tool in ["setpriv", "prlimit"] {
        assert!(
            Path::new("/usr/sbin").join(tool).exists() || Path::new("/usr/bin").join(tool).exists(),
            "{tool} is not in the guest: scripts/vm-test's TOSSKEY_VM_TOOLS must include it"
        );
    }
    let disk = virtio_disks().unwrap().remove(3).path;
    let disk = disk.to_str().unwrap();
    let root_can = |context: &str| !context.contains("nobody");
    for context in contexts() {
        // `shred` removes the volume, so `close` is exercised on a name that does not exist.
        let cases: [(&str, &[i32]); 7] = [
            ("provision DISK --dry-run", &[0, 1, 3]),
            (
                "provision DISK --name t-mx --mkfs none --key-loading keyring",
                &[0, 1, 3],
            ),
            ("status", &[0, 1]),
            ("status t-mx --json", &[0, 1, 3]),
            ("shred t-mx", &[0, 1, 3]),
            // As nobody: the journal directory is root's (0700), so reading it fails (1).
            (
                "close x",
                if root_can(context.name) {
                    &[3]
                } else {
                    &[1, 3]
                },
            ),
            ("bench --device --millis 5", &[0, 1, 3]),
        ];
        for (line, allowed) in cases {
            let args: Vec<String> = line
                .replace("DISK", disk)
                .split(' ')
                .map(str::to_owned)
                .collect();
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = command(&context, &argv)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            check(&context, &args, allowed, &output);
            if root_can(context.name) && !line.starts_with("bench") && line != "close x" {
                assert!(
                    output.status.success(),
                    "{} [{line}]: {}",
                    context.name,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        // Whatever happened, leave the disk blank for the next context.
        let _ = crate::common::tosskey(&["close", "t-mx"]);
        zero_range(Path::new(disk), 0, 4 << 20).unwrap();
    }
}
