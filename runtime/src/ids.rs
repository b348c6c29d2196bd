//! Identifiers: components, workers, oplog indexes, and the worker URI form of the spec.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Position in a worker's oplog. The first entry (`create`) has index 1, as in Golem.
pub type OplogIndex = u64;

/// A component version: 0 for the first upload, +1 per update.
pub type ComponentVersion = u64;

/// A component is identified by a UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ComponentId(pub Uuid);

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A worker: a named instance of a component.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId {
    /// The component the worker runs.
    pub component_id: ComponentId,
    /// The worker's name, unique within the component.
    pub worker_name: String,
}

impl WorkerId {
    /// `urn:worker:<component-uuid>/<url-encoded worker name>`.
    pub fn uri(&self) -> String {
        format!(
            "urn:worker:{}/{}",
            self.component_id,
            url_encode(&self.worker_name)
        )
    }

    /// The key of this worker in the workers table: component uuid, then the name bytes.
    pub fn storage_key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(16 + self.worker_name.len());
        key.extend_from_slice(self.component_id.0.as_bytes());
        key.extend_from_slice(self.worker_name.as_bytes());
        key
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.component_id, self.worker_name)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Validates a worker name: non-empty, at most `WORKER_NAME_BYTES_MAX` bytes, no `/` or control chars.
pub fn validate_worker_name(name: &str) -> Result<(), String> {
    /// Long enough for any sensible name, short enough to keep LMDB keys (max 511 bytes) safe.
    const WORKER_NAME_BYTES_MAX: usize = 256;
    if name.is_empty() {
        return Err("worker name is empty".into());
    }
    if name.len() > WORKER_NAME_BYTES_MAX {
        return Err(format!(
            "worker name is {} bytes; at most {WORKER_NAME_BYTES_MAX} are allowed",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || c.is_control()) {
        return Err(format!(
            "worker name {name:?} contains {c:?}, which is not allowed"
        ));
    }
    Ok(())
}

/// A UUID parsed from text, for component references on the command line.
pub fn parse_uuid(text: &str) -> Option<Uuid> {
    Uuid::from_str(text).ok()
}

/// `promise-id` of the spec: the owner worker and the index of its `create-promise` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PromiseId {
    /// The worker that created the promise.
    pub worker: WorkerId,
    /// The oplog index of the `create-promise` entry.
    pub oplog_idx: OplogIndex,
}

impl std::fmt::Display for PromiseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "promise {} of worker {}", self.oplog_idx, self.worker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_uri_url_encodes_the_name() {
        let id = WorkerId {
            component_id: ComponentId(Uuid::nil()),
            worker_name: "a b/c".into(),
        };
        assert_eq!(
            id.uri(),
            "urn:worker:00000000-0000-0000-0000-000000000000/a%20b%2Fc"
        );
    }

    #[test]
    fn worker_names_with_slashes_are_rejected() {
        assert!(validate_worker_name("a/b").is_err());
        assert!(validate_worker_name("").is_err());
        assert!(validate_worker_name("ok-name_1").is_ok());
    }
}
