// The body shared by the update guests; each crate defines `VERSION` and `LOAD_FAILS` and
// includes this file.

use std::sync::atomic::{AtomicU64, Ordering};

wit_bindgen::generate!({
    world: "golemw:update/update",
    path: ["../../../wit", "../update-wit"],
    generate_all,
});

use exports::golem::api::load_snapshot::Guest as LoadSnapshot;
use exports::golem::api::save_snapshot::Guest as SaveSnapshot;
use exports::golemw::update::api::Guest;
use golem::api::host;

static COUNTER: AtomicU64 = AtomicU64::new(0);

struct Update;

impl Guest for Update {
    fn add(n: u64) -> u64 {
        COUNTER.fetch_add(n, Ordering::SeqCst).wrapping_add(n)
    }

    fn get() -> u64 {
        COUNTER.load(Ordering::SeqCst)
    }

    fn version() -> u32 {
        VERSION
    }

    fn request_update(target_version: u64, snapshot_based: bool) {
        let me = host::get_self_metadata().worker_id;
        let mode = if snapshot_based {
            host::UpdateMode::SnapshotBased
        } else {
            host::UpdateMode::Automatic
        };
        host::update_worker(&me, target_version, mode);
    }
}

impl SaveSnapshot for Update {
    fn save() -> Vec<u8> {
        COUNTER.load(Ordering::SeqCst).to_le_bytes().to_vec()
    }
}

impl LoadSnapshot for Update {
    fn load(bytes: Vec<u8>) -> Result<(), String> {
        if LOAD_FAILS {
            return Err(format!("version {VERSION} refuses to load a snapshot"));
        }
        let bytes: [u8; 8] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("expected 8 bytes, got {}", bytes.len()))?;
        COUNTER.store(u64::from_le_bytes(bytes), Ordering::SeqCst);
        Ok(())
    }
}

export!(Update);
