//! Version 1 of the update counter.

const VERSION: u32 = 1;
const LOAD_FAILS: bool = false;

include!("../../update-wit/guest.rs");
