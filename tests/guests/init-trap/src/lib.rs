//! A reactor whose `_initialize` traps, for the test that a worker whose start-up code fails
//! on its first invocation is not stored.

wit_bindgen::generate!({
    world: "golemw:init-trap/init-trap",
    path: ["../../../wit", "wit"],
});

use exports::golemw::init_trap::api::Guest;

/// The reactor start function, exported by hand as in the `init` guest; it fails.
#[unsafe(export_name = "_initialize")]
pub extern "C" fn initialize() {
    core::arch::wasm32::unreachable();
}

struct InitTrap;

impl Guest for InitTrap {
    fn get() -> u64 {
        1
    }
}

export!(InitTrap);
