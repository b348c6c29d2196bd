//! How records are laid out on disk: a format version byte, a CRC32 of the payload, the payload.
//!
//! Checked right after reading and built right before writing, so corrupt storage is reported
//! as corrupt (with what it was) instead of being decoded into garbage.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Bumped when the encoding of any stored record changes incompatibly.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before the payload: the version byte and the CRC32.
const HEADER_BYTES: usize = 1 + 4;

/// Encodes a record as `[version][crc32 LE][postcard payload]`.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let payload = postcard::to_stdvec(value).expect("postcard encoding into a Vec cannot fail");
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes a record written by [`encode`]; `what` names it in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let payload = check(bytes, what)?;
    postcard::from_bytes(payload).map_err(|err| Error::Corrupt {
        what: what.to_string(),
        detail: format!("checksum matches but the record does not decode: {err}"),
    })
}

/// Verifies version and checksum; returns the payload.
pub fn check<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8]> {
    let corrupt = |detail: String| Error::Corrupt {
        what: what.to_string(),
        detail,
    };
    if bytes.len() < HEADER_BYTES {
        return Err(corrupt(format!(
            "record is {} bytes, shorter than its header",
            bytes.len()
        )));
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {} is not {FORMAT_VERSION}; written by another golemw version?",
            bytes[0]
        )));
    }
    let stored = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER_BYTES..];
    let actual = crc32fast::hash(payload);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        )));
    }
    Ok(payload)
}

/// Wraps already-encoded bytes (e.g. compressed wasm) with the version byte and checksum.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_bit_is_reported_as_corrupt() {
        let mut bytes = encode(&("hello".to_string(), 42u64));
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let err = decode::<(String, u64)>(&bytes, "test record").unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn records_round_trip() {
        let bytes = encode(&vec![1u32, 2, 3]);
        assert_eq!(decode::<Vec<u32>>(&bytes, "t").unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn a_truncated_record_is_reported_as_corrupt() {
        let err = decode::<u64>(&[1, 2], "t").unwrap_err();
        assert!(err.to_string().contains("shorter than its header"));
    }
}
