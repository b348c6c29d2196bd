//! Version 2 of the update counter, whose `load` always fails.

const VERSION: u32 = 2;
const LOAD_FAILS: bool = true;

include!("../../update-wit/guest.rs");
