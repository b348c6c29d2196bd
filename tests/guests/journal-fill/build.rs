//! Wasmer's journal snapshots unwind the guest's stack (asyncify), which needs the shadow stack
//! pointer exported; rustc does not export it by default.
fn main() {
    println!("cargo:rustc-link-arg-bins=--export=__stack_pointer");
}
