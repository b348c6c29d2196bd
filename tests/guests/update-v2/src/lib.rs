//! Version 2 of the update counter.

const VERSION: u32 = 2;
const LOAD_FAILS: bool = false;

include!("../../update-wit/guest.rs");
