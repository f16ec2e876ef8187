//! The TPM 2.0 wire format of the three commands tosskey sends, as pure functions over bytes.
//!
//! References are to the TCG "Trusted Platform Module Library" specification, Family 2.0,
//! Part 2 (Structures) and Part 3 (Commands). Everything on the wire is big-endian. A command
//! is a header (`tag` u16, `commandSize` u32, `commandCode` u32; Part 1 §18), the handles, an
//! authorization area when `tag` is `TPM_ST_SESSIONS`, then the parameters. A response is a
//! header (`tag`, `responseSize`, `responseCode` u32), then — only on success — the handles, a
//! `parameterSize` u32 when `tag` is `TPM_ST_SESSIONS`, the parameters and the session area.
//!
//! Nothing here does I/O, so the encoders and decoders are tested byte for byte on the host.

use std::fmt;

/// `TPM_ST_NO_SESSIONS` (Part 2 §6.9): no authorization area.
pub const TPM_ST_NO_SESSIONS: u16 = 0x8001;
/// `TPM_ST_SESSIONS` (Part 2 §6.9): an authorization area follows the handles.
pub const TPM_ST_SESSIONS: u16 = 0x8002;

/// `TPM_CC_GetCapability` (Part 2 §6.5.2, Part 3 §30.2).
pub const TPM_CC_GET_CAPABILITY: u32 = 0x0000_017A;
/// `TPM_CC_PCR_Read` (Part 3 §22.4).
pub const TPM_CC_PCR_READ: u32 = 0x0000_017E;
/// `TPM_CC_PCR_Extend` (Part 3 §22.2).
pub const TPM_CC_PCR_EXTEND: u32 = 0x0000_0182;

/// `TPM_CAP_PCRS` (Part 2 §6.12): the current PCR allocation, a `TPML_PCR_SELECTION`.
pub const TPM_CAP_PCRS: u32 = 0x0000_0005;

/// `TPM_RS_PW` (Part 2 §7.4): the password "session", authorizing with a plain auth value.
/// PCRs 0-15 of a stock platform have an empty auth value.
pub const TPM_RS_PW: u32 = 0x4000_0009;

/// Size of the `pcrSelect` bitmap we send: `PCR_SELECT_MIN` for the 24 PCRs every PC-client
/// TPM has (Part 2 §10.6.1; the PC Client Platform TPM Profile fixes 24 PCRs).
pub const PCR_SELECT_BYTES: u8 = 3;
/// PCR indices this crate addresses: 0..=23.
pub const PCR_COUNT: u32 = 24;

/// Responses never exceed the kernel's `TPM_BUFSIZE` (drivers/char/tpm/tpm.h).
pub const MAX_RESPONSE: usize = 4096;

/// Header size of commands and responses: tag u16, size u32, code u32.
const HEADER_LEN: usize = 10;

/// A hash algorithm identifier, `TPM_ALG_ID` (Part 2 §6.3), of the banks this crate can
/// compute digests for. Other banks (SM3, SHA3) are reported by their raw id and left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// All supported algorithms, in the order banks are extended and listed.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    /// `TPM_ALG_SHA1` 0x0004, `TPM_ALG_SHA256` 0x000B, `TPM_ALG_SHA384` 0x000C,
    /// `TPM_ALG_SHA512` 0x000D.
    pub fn id(self) -> u16 {
        match self {
            HashAlg::Sha1 => 0x0004,
            HashAlg::Sha256 => 0x000B,
            HashAlg::Sha384 => 0x000C,
            HashAlg::Sha512 => 0x000D,
        }
    }

    pub fn from_id(id: u16) -> Option<HashAlg> {
        HashAlg::ALL.into_iter().find(|alg| alg.id() == id)
    }

    /// The name tpm2-tools, the kernel's sysfs (`pcr-sha256`) and systemd's event log use.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    pub fn from_name(name: &str) -> Option<HashAlg> {
        HashAlg::ALL
            .into_iter()
            .find(|alg| alg.name().eq_ignore_ascii_case(name))
    }

    /// Digest size in bytes (`TPMU_HA` member size).
    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `TPMS_PCR_SELECTION` of a `TPM_CAP_PCRS` answer: a bank and the PCRs allocated in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBank {
    /// The raw `TPM_ALG_ID`.
    pub alg_id: u16,
    /// Bit n set: PCR n is allocated in this bank (only PCRs 0..=31 are represented).
    pub pcrs: u32,
}

impl PcrBank {
    /// The algorithm, when this crate can compute its digests.
    pub fn alg(&self) -> Option<HashAlg> {
        HashAlg::from_id(self.alg_id)
    }

    pub fn has_pcr(&self, pcr: u32) -> bool {
        pcr < 32 && self.pcrs & (1 << pcr) != 0
    }
}

/// What went wrong decoding a response; the device layer adds the device and command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The TPM answered with a non-zero response code.
    Tpm(ResponseCode),
    /// The bytes do not follow the structure of the command's response.
    Malformed(String),
}

/// Builds a command: header first, size patched in by [`CommandBuilder::finish`].
struct CommandBuilder {
    bytes: Vec<u8>,
}

impl CommandBuilder {
    fn new(tag: u16, code: u32) -> CommandBuilder {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&tag.to_be_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&code.to_be_bytes());
        CommandBuilder { bytes }
    }

    fn u8(&mut self, value: u8) -> &mut Self {
        self.bytes.push(value);
        self
    }

    fn u16(&mut self, value: u16) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    fn raw(&mut self, value: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(value);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let size = u32::try_from(self.bytes.len()).expect("commands are a few hundred bytes");
        self.bytes[2..6].copy_from_slice(&size.to_be_bytes());
        self.bytes
    }
}

/// Reads a response front to back; every read checks the remaining length.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < len {
            return Err(DecodeError::Malformed(format!(
                "{} ends early: {len} more bytes expected, {} left",
                self.what,
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A `TPM2B_*`: u16 size, then that many bytes.
    fn sized(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(format!(
                "{} has {} unexpected trailing bytes",
                self.what,
                self.bytes.len()
            )))
        }
    }
}

/// Checks the response header; on success returns a reader positioned after it.
fn response_body<'a>(response: &'a [u8], what: &'static str) -> Result<Reader<'a>, DecodeError> {
    let mut reader = Reader {
        bytes: response,
        what,
    };
    let tag = reader.u16()?;
    let size = reader.u32()?;
    let code = reader.u32()?;
    if usize::try_from(size).ok() != Some(response.len()) {
        return Err(DecodeError::Malformed(format!(
            "{what} header says {size} bytes but {} arrived",
            response.len()
        )));
    }
    if tag != TPM_ST_NO_SESSIONS && tag != TPM_ST_SESSIONS {
        return Err(DecodeError::Malformed(format!(
            "{what} has tag {tag:#06x}, not a TPM 2.0 response tag"
        )));
    }
    if code != 0 {
        return Err(DecodeError::Tpm(ResponseCode(code)));
    }
    debug_assert_eq!(response.len() - reader.bytes.len(), HEADER_LEN);
    Ok(reader)
}

/// The response code of a response, without judging the rest (retry decisions).
pub fn response_code(response: &[u8]) -> Option<ResponseCode> {
    let bytes: [u8; 4] = response.get(6..HEADER_LEN)?.try_into().ok()?;
    Some(ResponseCode(u32::from_be_bytes(bytes)))
}

/// `TPM2_GetCapability(capability = TPM_CAP_PCRS, property = 0, propertyCount = 1)` (Part 3
/// §30.2): the TPM ignores property and count for `TPM_CAP_PCRS` and returns its whole
/// allocation.
pub fn encode_get_capability_pcrs() -> Vec<u8> {
    let mut command = CommandBuilder::new(TPM_ST_NO_SESSIONS, TPM_CC_GET_CAPABILITY);
    command.u32(TPM_CAP_PCRS).u32(0).u32(1);
    command.finish()
}

/// Decodes `moreData` (`TPMI_YES_NO`) and `TPMS_CAPABILITY_DATA` holding a
/// `TPML_PCR_SELECTION` (Part 2 §10.9.7): u32 count, then per bank `TPMS_PCR_SELECTION`
/// `{hash u16, sizeofSelect u8, pcrSelect[sizeofSelect]}` with PCR n at bit n%8 of byte n/8.
pub fn decode_get_capability_pcrs(response: &[u8]) -> Result<Vec<PcrBank>, DecodeError> {
    let mut reader = response_body(response, "TPM2_GetCapability(TPM_CAP_PCRS) response")?;
    let _more_data = reader.u8()?;
    let capability = reader.u32()?;
    if capability != TPM_CAP_PCRS {
        return Err(DecodeError::Malformed(format!(
            "TPM2_GetCapability answered capability {capability:#x}, not TPM_CAP_PCRS"
        )));
    }
    let selections = read_pcr_selections(&mut reader)?;
    reader.finish()?;
    Ok(selections
        .into_iter()
        .map(|(alg_id, select)| PcrBank {
            alg_id,
            pcrs: select_mask(&select),
        })
        .collect())
}

/// A `TPML_PCR_SELECTION` as (algorithm id, pcrSelect bytes) pairs.
fn read_pcr_selections(reader: &mut Reader<'_>) -> Result<Vec<(u16, Vec<u8>)>, DecodeError> {
    let count = reader.u32()?;
    // HASH_COUNT is at most a handful; a larger count is garbage, not a reason to allocate.
    if count > 16 {
        return Err(DecodeError::Malformed(format!(
            "TPML_PCR_SELECTION count {count} is implausible"
        )));
    }
    let mut selections = Vec::new();
    for _ in 0..count {
        let alg_id = reader.u16()?;
        let size = reader.u8()?;
        selections.push((alg_id, reader.take(usize::from(size))?.to_vec()));
    }
    Ok(selections)
}

/// The PCRs 0..=31 a `pcrSelect` bitmap names, as a mask.
fn select_mask(select: &[u8]) -> u32 {
    select
        .iter()
        .take(4)
        .enumerate()
        .fold(0, |mask, (index, byte)| {
            mask | (u32::from(*byte) << (8 * index))
        })
}

fn select_bytes(pcr: u32) -> [u8; PCR_SELECT_BYTES as usize] {
    let mut select = [0; PCR_SELECT_BYTES as usize];
    select[(pcr / 8) as usize] = 1 << (pcr % 8);
    select
}

/// `TPM2_PCR_Read` of one PCR in each of `algs` (Part 3 §22.4): a `TPML_PCR_SELECTION` with
/// one `TPMS_PCR_SELECTION` per bank.
pub fn encode_pcr_read(pcr: u32, algs: &[HashAlg]) -> Vec<u8> {
    assert!(pcr < PCR_COUNT, "PCR index is checked by the caller");
    let mut command = CommandBuilder::new(TPM_ST_NO_SESSIONS, TPM_CC_PCR_READ);
    command.u32(u32::try_from(algs.len()).expect("at most four banks"));
    for alg in algs {
        command
            .u16(alg.id())
            .u8(PCR_SELECT_BYTES)
            .raw(&select_bytes(pcr));
    }
    command.finish()
}

/// One PCR value of a `TPM2_PCR_Read` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrReading {
    pub alg: HashAlg,
    pub pcr: u32,
    pub digest: Vec<u8>,
}

/// Decodes `pcrUpdateCounter` u32, `pcrSelectionOut` (`TPML_PCR_SELECTION`) and `pcrValues`
/// (`TPML_DIGEST`: u32 count, `TPM2B_DIGEST` each). The digests follow the selection: bank by
/// bank, PCRs in ascending order. The TPM may return fewer than asked (at most 8 digests per
/// answer); the selection says which.
pub fn decode_pcr_read(response: &[u8]) -> Result<(u32, Vec<PcrReading>), DecodeError> {
    let mut reader = response_body(response, "TPM2_PCR_Read response")?;
    let update_counter = reader.u32()?;
    let selections = read_pcr_selections(&mut reader)?;
    let count = reader.u32()?;
    if count > 8 {
        return Err(DecodeError::Malformed(format!(
            "TPML_DIGEST count {count} exceeds 8"
        )));
    }
    let mut digests = Vec::new();
    for _ in 0..count {
        digests.push(reader.sized()?.to_vec());
    }
    reader.finish()?;

    let mut readings = Vec::new();
    let mut digests = digests.into_iter();
    for (alg_id, select) in selections {
        let mask = select_mask(&select);
        for pcr in (0..32).filter(|pcr| mask & (1 << pcr) != 0) {
            let alg = HashAlg::from_id(alg_id).ok_or_else(|| {
                DecodeError::Malformed(format!(
                    "TPM2_PCR_Read answered for unrequested bank {alg_id:#06x}"
                ))
            })?;
            let digest = digests.next().ok_or_else(|| {
                DecodeError::Malformed(
                    "TPM2_PCR_Read selection names more PCRs than digests".into(),
                )
            })?;
            if digest.len() != alg.digest_len() {
                return Err(DecodeError::Malformed(format!(
                    "TPM2_PCR_Read returned a {}-byte {alg} digest",
                    digest.len()
                )));
            }
            readings.push(PcrReading { alg, pcr, digest });
        }
    }
    if digests.next().is_some() {
        return Err(DecodeError::Malformed(
            "TPM2_PCR_Read returned more digests than its selection names".into(),
        ));
    }
    Ok((update_counter, readings))
}

/// `TPM2_PCR_Extend` (Part 3 §22.2): handle `pcrHandle` (PCR n is handle n), an
/// authorization area with one `TPMS_AUTH_COMMAND` for `TPM_RS_PW` with an empty nonce, no
/// session attributes and an empty password, then `TPML_DIGEST_VALUES`: u32 count, per bank
/// `TPMT_HA` {hashAlg u16, digest (no size prefix, the algorithm fixes it)}.
pub fn encode_pcr_extend(pcr: u32, digests: &[(HashAlg, &[u8])]) -> Vec<u8> {
    assert!(pcr < PCR_COUNT, "PCR index is checked by the caller");
    let mut command = CommandBuilder::new(TPM_ST_SESSIONS, TPM_CC_PCR_EXTEND);
    command.u32(pcr);
    // authorizationSize, then TPMS_AUTH_COMMAND: sessionHandle u32, nonceCaller TPM2B (empty),
    // sessionAttributes u8, hmac TPM2B (the password: empty).
    command
        .u32(4 + 2 + 1 + 2)
        .u32(TPM_RS_PW)
        .u16(0)
        .u8(0)
        .u16(0);
    command.u32(u32::try_from(digests.len()).expect("at most four banks"));
    for (alg, digest) in digests {
        assert_eq!(
            digest.len(),
            alg.digest_len(),
            "digests are computed for their algorithm"
        );
        command.u16(alg.id()).raw(digest);
    }
    command.finish()
}

/// A successful `TPM2_PCR_Extend` answer: `TPM_ST_SESSIONS`, `parameterSize` 0 (no response
/// parameters), then one `TPMS_AUTH_RESPONSE` {nonceTPM TPM2B, sessionAttributes u8, hmac
/// TPM2B}, all empty for a password session.
pub fn decode_pcr_extend(response: &[u8]) -> Result<(), DecodeError> {
    let mut reader = response_body(response, "TPM2_PCR_Extend response")?;
    let parameter_size = reader.u32()?;
    if parameter_size != 0 {
        return Err(DecodeError::Malformed(format!(
            "TPM2_PCR_Extend response has {parameter_size} parameter bytes, expected none"
        )));
    }
    let _nonce = reader.sized()?;
    let _attributes = reader.u8()?;
    let _hmac = reader.sized()?;
    reader.finish()
}

/// A `TPM_RC` (Part 2 §6.6), decoded for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCode(pub u32);

/// `RC_FMT1` (bit 7): format-one codes carry a parameter, handle or session number.
const RC_FMT1: u32 = 0x080;
/// `RC_VER1` (bit 8): a TPM 2.0 format-zero code (clear: a TPM 1.2 code).
const RC_VER1: u32 = 0x100;
/// `RC_WARN` (bit 11 with `RC_VER1`): a warning, the command may succeed if retried.
const RC_WARN: u32 = 0x900;

impl ResponseCode {
    /// The part of a response code that names the condition, without the parameter, handle
    /// or session number of format-one codes (Part 2 §6.6.3).
    pub fn base(self) -> u32 {
        let rc = self.0;
        if rc & RC_FMT1 != 0 {
            RC_FMT1 | (rc & 0x3F)
        } else {
            // Format zero has no number fields: E (bits 0-6), version, vendor and severity
            // bits together name the condition.
            rc
        }
    }

    /// `TPM_RC_RETRY`, `TPM_RC_YIELDED`, `TPM_RC_TESTING`: the TPM asks to send the command
    /// again (Part 2 §6.6.3 "warnings").
    pub fn is_retry(self) -> bool {
        matches!(self.0, 0x922 | 0x908 | 0x90A)
    }

    /// The specification's name of the condition, when it is one of the defined codes.
    pub fn name(self) -> Option<&'static str> {
        let name = match self.base() {
            0x100 => "TPM_RC_INITIALIZE: TPM not initialized by TPM2_Startup",
            0x101 => "TPM_RC_FAILURE: the TPM is in failure mode",
            0x103 => "TPM_RC_SEQUENCE: improper use of a sequence handle",
            0x10B => "TPM_RC_PRIVATE",
            0x119 => "TPM_RC_HMAC",
            0x120 => "TPM_RC_DISABLED: the command is disabled",
            0x121 => "TPM_RC_EXCLUSIVE: command failed because audit sequence required exclusivity",
            0x124 => "TPM_RC_AUTH_TYPE: authorization handle is not correct for command",
            0x125 => "TPM_RC_AUTH_MISSING: command requires an authorization session",
            0x126 => "TPM_RC_POLICY: policy failure in math operation or an invalid authPolicy value",
            0x127 => "TPM_RC_PCR: PCR check fail",
            0x128 => "TPM_RC_PCR_CHANGED: PCR have changed since checked",
            0x12D => "TPM_RC_UPGRADE: the TPM is in field upgrade mode",
            0x12E => "TPM_RC_TOO_MANY_CONTEXTS: context ID counter is at maximum",
            0x12F => "TPM_RC_AUTH_UNAVAILABLE: authValue or authPolicy is not available",
            0x130 => "TPM_RC_REBOOT: a _TPM_Init and Startup(CLEAR) is required",
            0x131 => "TPM_RC_UNBALANCED",
            0x142 => "TPM_RC_COMMAND_SIZE: command size inconsistent with the bytes sent",
            0x143 => "TPM_RC_COMMAND_CODE: command code not supported",
            0x144 => "TPM_RC_AUTHSIZE: the authorization size is out of range",
            0x145 => "TPM_RC_AUTH_CONTEXT: use of an authorization session with a context command",
            0x146 => "TPM_RC_NV_RANGE",
            0x147 => "TPM_RC_NV_SIZE",
            0x148 => "TPM_RC_NV_LOCKED",
            0x149 => "TPM_RC_NV_AUTHORIZATION",
            0x14A => "TPM_RC_NV_UNINITIALIZED",
            0x14B => "TPM_RC_NV_SPACE",
            0x14C => "TPM_RC_NV_DEFINED",
            0x150 => "TPM_RC_BAD_CONTEXT",
            0x151 => "TPM_RC_CPHASH",
            0x152 => "TPM_RC_PARENT",
            0x153 => "TPM_RC_NEEDS_TEST",
            0x154 => "TPM_RC_NO_RESULT",
            0x155 => "TPM_RC_SENSITIVE",
            0x081 => "TPM_RC_ASYMMETRIC",
            0x082 => "TPM_RC_ATTRIBUTES",
            0x083 => "TPM_RC_HASH: hash algorithm not supported or not appropriate",
            0x084 => "TPM_RC_VALUE: value is out of range or is not correct for the context",
            0x085 => "TPM_RC_HIERARCHY: hierarchy is not enabled or is not correct for the use",
            0x087 => "TPM_RC_KEY_SIZE",
            0x088 => "TPM_RC_MGF",
            0x089 => "TPM_RC_MODE",
            0x08A => "TPM_RC_TYPE",
            0x08B => "TPM_RC_HANDLE: the handle is not correct for the use",
            0x08C => "TPM_RC_KDF",
            0x08D => "TPM_RC_RANGE: value was out of allowed range",
            0x08E => "TPM_RC_AUTH_FAIL: the authorization HMAC check failed",
            0x08F => "TPM_RC_NONCE",
            0x090 => "TPM_RC_PP: authorization requires assertion of physical presence",
            0x092 => "TPM_RC_SCHEME",
            0x095 => "TPM_RC_SIZE: structure is the wrong size",
            0x096 => "TPM_RC_SYMMETRIC",
            0x097 => "TPM_RC_TAG: incorrect structure tag",
            0x098 => "TPM_RC_SELECTOR: union selector is incorrect",
            0x09A => "TPM_RC_INSUFFICIENT: the TPM was unable to unmarshal a value",
            0x09B => "TPM_RC_SIGNATURE",
            0x09C => "TPM_RC_KEY",
            0x09D => "TPM_RC_POLICY_FAIL",
            0x09F => "TPM_RC_INTEGRITY",
            0x0A0 => "TPM_RC_TICKET",
            0x0A1 => "TPM_RC_RESERVED_BITS: reserved bits not set to zero as required",
            0x0A2 => "TPM_RC_BAD_AUTH: authorization failure without DA implications",
            0x0A3 => "TPM_RC_EXPIRED",
            0x0A4 => "TPM_RC_POLICY_CC",
            0x0A5 => "TPM_RC_BINDING",
            0x0A6 => "TPM_RC_CURVE",
            0x0A7 => "TPM_RC_ECC_POINT",
            0x901 => "TPM_RC_CONTEXT_GAP",
            0x902 => "TPM_RC_OBJECT_MEMORY: out of memory for object contexts",
            0x903 => "TPM_RC_SESSION_MEMORY: out of memory for session contexts",
            0x904 => "TPM_RC_MEMORY: out of shared object/session memory",
            0x905 => "TPM_RC_SESSION_HANDLES: out of session handles",
            0x906 => "TPM_RC_OBJECT_HANDLES: out of object handles",
            0x907 => "TPM_RC_LOCALITY: bad locality",
            0x908 => "TPM_RC_YIELDED: the TPM has suspended operation on the command",
            0x909 => "TPM_RC_CANCELED: the command was canceled",
            0x90A => "TPM_RC_TESTING: TPM is performing self-tests",
            0x910..=0x916 => "TPM_RC_REFERENCE_Hn: a handle references a transient object that is not loaded",
            0x918..=0x91E => "TPM_RC_REFERENCE_Sn: a handle references a session that is not loaded",
            0x920 => "TPM_RC_NV_RATE: the TPM is rate-limiting accesses to prevent wearout of NV",
            0x921 => "TPM_RC_LOCKOUT: authorizations for objects subject to DA protection are not allowed",
            0x922 => "TPM_RC_RETRY: the TPM was not able to start the command",
            0x923 => "TPM_RC_NV_UNAVAILABLE: the command may require writing of NV and NV is not accessible",
            _ => return None,
        };
        Some(name)
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rc = self.0;
        match self.name() {
            Some(name) => write!(f, "{name} (response code {rc:#x})")?,
            None if rc & (RC_FMT1 | RC_VER1) == 0 => {
                write!(f, "TPM 1.2 or vendor response code {rc:#x}")?
            }
            None => write!(f, "response code {rc:#x}")?,
        }
        if rc & RC_FMT1 != 0 {
            let number = (rc >> 8) & 0xF;
            if rc & 0x40 != 0 {
                write!(f, " in parameter {number}")?;
            } else if number & 0x7 != 0 {
                let kind = if rc & 0x800 != 0 { "session" } else { "handle" };
                write!(f, " in {kind} {}", number & 0x7)?;
            }
        } else if rc & RC_WARN == RC_WARN && self.name().is_some() {
            f.write_str(", a warning")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(hex: &str) -> Vec<u8> {
        hex::decode(hex.replace(' ', "")).unwrap()
    }

    // Part 3 §30.2 TPM2_GetCapability: tag, size 22, TPM_CC_GetCapability, capability
    // TPM_CAP_PCRS, property 0, propertyCount 1.
    #[test]
    fn get_capability_pcrs_command_is_byte_exact() {
        assert_eq!(
            encode_get_capability_pcrs(),
            bytes("8001 00000016 0000017a 00000005 00000000 00000001")
        );
    }

    #[test]
    fn get_capability_pcrs_response_lists_banks_and_their_pcrs() {
        // moreData NO, TPM_CAP_PCRS, TPML_PCR_SELECTION of 3: sha1 with no PCR allocated,
        // sha256 with PCRs 0-23, SM3 (0x0012) with PCRs 0-7 and 15.
        let response = bytes(
            "8001 00000025 00000000 00 00000005 00000003 \
             0004 03 000000 000b 03 ffffff 0012 03 ff8000",
        );
        let banks = decode_get_capability_pcrs(&response).unwrap();
        assert_eq!(
            banks,
            vec![
                PcrBank {
                    alg_id: 0x0004,
                    pcrs: 0
                },
                PcrBank {
                    alg_id: 0x000b,
                    pcrs: 0x00ff_ffff
                },
                PcrBank {
                    alg_id: 0x0012,
                    pcrs: 0x80ff
                },
            ]
        );
        assert_eq!(banks[1].alg(), Some(HashAlg::Sha256));
        assert_eq!(banks[2].alg(), None);
        assert!(banks[2].has_pcr(15) && !banks[2].has_pcr(16) && !banks[0].has_pcr(15));
    }

    // Part 3 §22.4 TPM2_PCR_Read: one TPMS_PCR_SELECTION per bank, PCR 15 = bit 7 of byte 1.
    #[test]
    fn pcr_read_command_selects_one_pcr_per_bank() {
        assert_eq!(
            encode_pcr_read(15, &[HashAlg::Sha256, HashAlg::Sha384]),
            bytes("8001 0000001a 0000017e 00000002 000b 03 008000 000c 03 008000")
        );
        assert_eq!(
            encode_pcr_read(0, &[HashAlg::Sha1]),
            bytes("8001 00000014 0000017e 00000001 0004 03 010000")
        );
    }

    #[test]
    fn pcr_read_response_maps_digests_to_banks_in_selection_order() {
        let sha1 = "11".repeat(20);
        let sha256 = "22".repeat(32);
        let response = bytes(&format!(
            "8001 0000005a 00000000 0000002a 00000002 0004 03 008000 000b 03 008000 \
             00000002 0014 {sha1} 0020 {sha256}"
        ));
        let (counter, readings) = decode_pcr_read(&response).unwrap();
        assert_eq!(counter, 42);
        assert_eq!(
            readings,
            vec![
                PcrReading {
                    alg: HashAlg::Sha1,
                    pcr: 15,
                    digest: vec![0x11; 20]
                },
                PcrReading {
                    alg: HashAlg::Sha256,
                    pcr: 15,
                    digest: vec![0x22; 32]
                },
            ]
        );
    }

    #[test]
    fn pcr_read_responses_that_do_not_add_up_are_refused() {
        // One PCR selected, no digest.
        let missing = bytes("8001 0000001c 00000000 00000001 00000001 000b 03 008000 00000000");
        assert!(matches!(
            decode_pcr_read(&missing),
            Err(DecodeError::Malformed(_))
        ));
        // A 20-byte digest for the sha256 bank.
        let short = bytes(&format!(
            "8001 00000034 00000000 00000001 00000001 000b 03 008000 00000001 0014 {}",
            "00".repeat(20)
        ));
        assert!(matches!(
            decode_pcr_read(&short),
            Err(DecodeError::Malformed(_))
        ));
        // Truncated: the header's size is more than arrived.
        let truncated = bytes("8001 00000030 00000000 00000001");
        assert!(matches!(
            decode_pcr_read(&truncated),
            Err(DecodeError::Malformed(_))
        ));
    }

    // Part 3 §22.2 TPM2_PCR_Extend: TPM_ST_SESSIONS, pcrHandle 15, authorizationSize 9,
    // TPMS_AUTH_COMMAND {TPM_RS_PW, empty nonce, attributes 0, empty hmac}, TPML_DIGEST_VALUES
    // of one TPMT_HA {TPM_ALG_SHA256, 32 bytes}.
    #[test]
    fn pcr_extend_command_is_byte_exact() {
        let digest = [0xab; 32];
        assert_eq!(
            encode_pcr_extend(15, &[(HashAlg::Sha256, &digest)]),
            bytes(&format!(
                "8002 00000041 00000182 0000000f 00000009 40000009 0000 00 0000 00000001 000b {}",
                "ab".repeat(32)
            ))
        );
    }

    #[test]
    fn pcr_extend_response_success_and_failure() {
        // parameterSize 0, TPMS_AUTH_RESPONSE {empty nonce, continueSession, empty hmac}.
        assert_eq!(
            decode_pcr_extend(&bytes("8002 00000013 00000000 00000000 0000 01 0000")),
            Ok(())
        );
        // Errors come back as a bare header with TPM_ST_NO_SESSIONS.
        assert_eq!(
            decode_pcr_extend(&bytes("8001 0000000a 00000125")),
            Err(DecodeError::Tpm(ResponseCode(0x125)))
        );
        assert!(matches!(
            decode_pcr_extend(&bytes("8002 00000014 00000000 00000000 0000 01 0000 00")),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_pcr_extend(&bytes("c400 0000000a 00000000")),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn response_codes_are_decoded_for_people() {
        // Format one: TPM_RC_VALUE (E=4) in handle 1; TPM_RC_INSUFFICIENT (E=0x1a) in parameter 1.
        assert_eq!(
            ResponseCode(0x184).to_string(),
            "TPM_RC_VALUE: value is out of range or is not correct for the context (response code 0x184) in handle 1"
        );
        assert_eq!(ResponseCode(0x1da).base(), 0x09a);
        assert!(ResponseCode(0x1da).to_string().ends_with("in parameter 1"));
        assert!(ResponseCode(0x98e)
            .to_string()
            .starts_with("TPM_RC_AUTH_FAIL"));
        assert!(ResponseCode(0x98e).to_string().ends_with("in session 1"));
        // Format zero: an error, a warning, an unknown vendor code and a TPM 1.2 code.
        assert!(ResponseCode(0x125)
            .to_string()
            .starts_with("TPM_RC_AUTH_MISSING"));
        assert!(ResponseCode(0x907).to_string().ends_with("a warning"));
        assert_eq!(ResponseCode(0x57f).to_string(), "response code 0x57f");
        assert_eq!(
            ResponseCode(0x26).to_string(),
            "TPM 1.2 or vendor response code 0x26"
        );
        assert!(
            ResponseCode(0x922).is_retry()
                && ResponseCode(0x908).is_retry()
                && !ResponseCode(0x101).is_retry()
        );
    }
}
