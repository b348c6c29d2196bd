//! A limit on each worker's linear memory: Wasmer tunables that cap every memory's maximum,
//! so `memory.grow` past it fails (the guest sees -1, as at wasm32's own 4 GiB) instead of a
//! hostile or runaway guest taking the machine's memory. A module whose initial memory is
//! already larger is refused when instantiated, with the reason.

use std::ptr::NonNull;

use wasmer::sys::vm::{
    MemoryError, MemoryStyle, TableStyle, VMMemory, VMMemoryDefinition, VMTable, VMTableDefinition,
};
use wasmer::sys::{BaseTunables, Tunables};
use wasmer::{MemoryType, Pages, TableType};

/// Bytes per wasm page.
const PAGE_BYTES: u64 = 65536;

/// [`BaseTunables`], with every memory's maximum capped at `max_pages`.
pub struct LimitingTunables {
    base: BaseTunables,
    max_pages: Pages,
}

impl LimitingTunables {
    /// At most `max_bytes` of linear memory per memory (rounded down to whole pages, at least
    /// one).
    pub fn new(max_bytes: u64) -> Self {
        let pages = (max_bytes / PAGE_BYTES).clamp(1, u64::from(Pages::max_value().0)) as u32;
        LimitingTunables {
            base: BaseTunables::new(),
            max_pages: Pages(pages),
        }
    }

    fn adjust(&self, ty: &MemoryType) -> Result<MemoryType, MemoryError> {
        if ty.minimum > self.max_pages {
            return Err(MemoryError::Generic(format!(
                "the module starts with {} KiB of linear memory; the limit per worker is {} KiB",
                (u64::from(ty.minimum.0) * PAGE_BYTES) >> 10,
                (u64::from(self.max_pages.0) * PAGE_BYTES) >> 10
            )));
        }
        let mut adjusted = *ty;
        adjusted.maximum = Some(ty.maximum.map_or(self.max_pages, |m| m.min(self.max_pages)));
        Ok(adjusted)
    }
}

impl Tunables for LimitingTunables {
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        // The style (static: bounds checks against the reserved space) does not depend on the
        // maximum, so modules compiled with or without the limit are the same.
        self.base.memory_style(memory)
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }

    fn create_host_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
    ) -> Result<VMMemory, MemoryError> {
        self.base.create_host_memory(&self.adjust(ty)?, style)
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        let ty = self.adjust(ty)?;
        // SAFETY: the caller's guarantee for `vm_definition_location`, passed on unchanged.
        unsafe {
            self.base
                .create_vm_memory(&ty, style, vm_definition_location)
        }
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        self.base.create_host_table(ty, style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        // SAFETY: the caller's guarantee for `vm_definition_location`, passed on unchanged.
        unsafe { self.base.create_vm_table(ty, style, vm_definition_location) }
    }
}
