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

    /// Reads a worker URI, `urn:worker:<component-uuid>/<url-encoded worker name>` (what
    /// [`WorkerId::uri`] writes). A trailing `/<function>` (as `get-self-uri` adds) is ignored.
    pub fn from_uri(uri: &str) -> Result<WorkerId, String> {
        let rest = uri.strip_prefix("urn:worker:").ok_or_else(|| {
            format!("{uri:?} is not a worker URI (urn:worker:<component-uuid>/<worker name>)")
        })?;
        let (component, name) = rest
            .split_once('/')
            .ok_or_else(|| format!("{uri:?} names no worker after the component"))?;
        let component_id = uuid::Uuid::parse_str(component)
            .map(ComponentId)
            .map_err(|_| format!("{component:?} in {uri:?} is not a component UUID"))?;
        let name = name.split('/').next().unwrap_or_default();
        let worker_name =
            url_decode(name).ok_or_else(|| format!("{name:?} is not a valid URL-encoded name"))?;
        validate_worker_name(&worker_name)?;
        Ok(WorkerId {
            component_id,
            worker_name,
        })
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

/// Decodes `%XX` escapes (and nothing else); `None` if one is malformed or the bytes are not
/// UTF-8.
pub fn url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
    fn worker_uris_read_back_and_bad_ones_say_why() {
        let id = WorkerId {
            component_id: ComponentId(Uuid::from_u128(7)),
            worker_name: "a b%c".into(),
        };
        assert_eq!(WorkerId::from_uri(&id.uri()).unwrap(), id);
        // `get-self-uri` appends the function.
        let with_function = format!("{}/golem%3Ait%2Fapi.%7Bf%7D", id.uri());
        assert_eq!(WorkerId::from_uri(&with_function).unwrap(), id);
        for (bad, why) in [
            ("http://x/y", "not a worker URI"),
            ("urn:worker:abc", "names no worker"),
            ("urn:worker:not-a-uuid/w", "not a component UUID"),
            (
                "urn:worker:00000000-0000-0000-0000-000000000000/%zz",
                "URL-encoded",
            ),
            ("urn:worker:00000000-0000-0000-0000-000000000000/", "empty"),
        ] {
            let err = WorkerId::from_uri(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn worker_names_with_slashes_are_rejected() {
        assert!(validate_worker_name("a/b").is_err());
        assert!(validate_worker_name("").is_err());
        assert!(validate_worker_name("ok-name_1").is_ok());
    }
}
