//! `EscrowFile::parse` on arbitrary bytes: it must never panic, and whatever it accepts must
//! survive `to_json` → `parse` unchanged (the printer and the parser agree).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tosskey_crypto::EscrowFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = EscrowFile::parse(data) {
        let json = file.to_json();
        let again = EscrowFile::parse(json.as_bytes()).expect("printed escrow file must parse");
        assert_eq!(again, file);
    }
});
