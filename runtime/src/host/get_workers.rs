//! The `get-workers` resource of `golem:api/host@0.2.0`: worker enumeration with filters,
//! pages and the `precise` flag.
//!
//! Handles are `u32`s the host chooses: 1, 2, 3, … in order of construction, never reused
//! within an instance. Using or dropping a handle that is not open traps the guest with a
//! message naming the handle.
//!
//! Paging: `get-next` returns up to the executor's page size of matching workers, in name
//! order, after the last worker it returned; `none` once no matching worker is left (never an
//! empty page). With `precise = false` the metadata comes from a snapshot of the component's
//! worker records taken when the resource was constructed (workers created later are not seen,
//! status changes after construction are not seen). With `precise = true` every `get-next`
//! reads the latest record of each worker, so it sees status changes and workers created since
//! construction whose names sort after the last page.
//!
//! Durability: the constructor is recorded (params and the handle), and so is each `get-next`
//! result, so replay returns exactly the pages the guest saw, without reading the worker
//! table. The position of an enumeration is the last worker name it returned, which replay
//! learns from the recorded pages: if the worker goes live with an enumeration still open, it
//! continues from there (a non-precise one from a fresh snapshot of the records, as the
//! original snapshot is not recorded). Open enumerations are part of a memory snapshot's host
//! state.

use std::collections::BTreeMap;

use lmdb::{Cursor, Transaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use wasm_wave::value::Value;
use wasm_wave::wasm::WasmValue;

use super::context::{worker_metadata_wave, WorkerContext};
use crate::error::{Error, Result};
use crate::ids::ComponentId;
use crate::storage::codec;
use crate::worker_filter::WorkerFilter;
use crate::worker_records::WorkerRecord;

/// Core import name of the constructor.
pub const CONSTRUCTOR: &str = "[constructor]get-workers";
/// Core import name of `get-next`.
pub const GET_NEXT: &str = "[method]get-workers.get-next";
/// Core import name of the destructor.
pub const DROP: &str = "[resource-drop]get-workers";

/// Workers per `get-next` page unless the executor is configured otherwise.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// The open enumerations of one instance.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Enumerations {
    /// The last handle handed out (0: none yet).
    last_handle: u32,
    open: BTreeMap<u32, Enumeration>,
}

/// One open `get-workers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Enumeration {
    component: Uuid,
    filter: Option<WorkerFilter>,
    precise: bool,
    /// The name of the last worker returned.
    after: Option<String>,
    /// `get-next` returned `none`.
    done: bool,
    /// Non-precise: the records as of construction, in name order.
    #[serde(skip)]
    cached: Option<Vec<WorkerRecord>>,
}

/// The parsed params of the constructor.
pub struct Construct {
    pub component: ComponentId,
    pub filter: Option<WorkerFilter>,
    pub precise: bool,
}

impl Construct {
    /// Reads the constructor's params: `component-id`, `option<worker-any-filter>`, `bool`.
    pub fn from_params(params: &[Value]) -> Result<Construct> {
        let bad = |what: &str| Error::Engine(format!("{CONSTRUCTOR}: {what}"));
        let [component, filter, precise] = params else {
            return Err(bad("expected three params"));
        };
        let component =
            component_id_from_value(component).ok_or_else(|| bad("bad component-id"))?;
        let filter = match filter.unwrap_option() {
            Some(value) => Some(WorkerFilter::from_value(&value).map_err(|e| bad(&e))?),
            None => None,
        };
        Ok(Construct {
            component,
            filter,
            precise: precise.unwrap_bool(),
        })
    }
}

impl Enumerations {
    /// The handle the next constructor call gets.
    pub fn next_handle(&self) -> u32 {
        self.last_handle + 1
    }

    /// Registers an enumeration under `handle` (the next one live, the recorded one on replay).
    /// `snapshot` takes the non-precise snapshot of the records; it is `None` during replay.
    pub fn open(
        &mut self,
        handle: u32,
        construct: Construct,
        snapshot: Option<Vec<WorkerRecord>>,
    ) -> Result<()> {
        if handle == 0 || self.open.contains_key(&handle) || handle <= self.last_handle {
            return Err(Error::Corrupt {
                what: format!("recorded result of {CONSTRUCTOR}"),
                detail: format!(
                    "handle {handle} is not new (the last handle handed out is {})",
                    self.last_handle
                ),
            });
        }
        self.last_handle = handle;
        self.open.insert(
            handle,
            Enumeration {
                component: construct.component.0,
                filter: construct.filter,
                precise: construct.precise,
                after: None,
                done: false,
                cached: if construct.precise { None } else { snapshot },
            },
        );
        Ok(())
    }

    /// Why `handle` cannot be used, as the trap message.
    fn unusable(&self, handle: u32, what: &str) -> String {
        if handle >= 1 && handle <= self.last_handle {
            format!("{what} on get-workers handle {handle}, which was dropped")
        } else {
            format!("{what} on get-workers handle {handle}, which this worker was never given")
        }
    }

    /// Checks that `handle` is open; the error is the trap message.
    pub fn check(&self, handle: u32, what: &str) -> std::result::Result<(), String> {
        if self.open.contains_key(&handle) {
            Ok(())
        } else {
            Err(self.unusable(handle, what))
        }
    }

    /// `[resource-drop]get-workers`; the error is the trap message.
    pub fn drop_handle(&mut self, handle: u32) -> std::result::Result<(), String> {
        match self.open.remove(&handle) {
            Some(_) => Ok(()),
            None => Err(self.unusable(handle, DROP)),
        }
    }

    /// Computes the next page live: the WAVE text of `option<list<worker-metadata>>`.
    pub fn next_page_live(
        &mut self,
        handle: u32,
        context: &WorkerContext,
        page_size: usize,
    ) -> Result<String> {
        let e = self.open.get_mut(&handle).expect("checked by the caller");
        if e.done {
            return Ok("none".into());
        }
        let component = ComponentId(e.component);
        let matches = |r: &WorkerRecord| e.filter.as_ref().is_none_or(|f| f.matches(r));
        let page: Vec<WorkerRecord> = if e.precise {
            let mut page = Vec::new();
            scan(context, component, e.after.as_deref(), |record| {
                if matches(&record) {
                    page.push(record);
                }
                page.len() < page_size
            })?;
            page
        } else {
            if e.cached.is_none() {
                e.cached = Some(snapshot(context, component)?);
            }
            let after = e.after.as_deref();
            e.cached
                .as_ref()
                .expect("filled above")
                .iter()
                .filter(|r| after.is_none_or(|a| r.id.worker_name.as_str() > a))
                .filter(|r| matches(r))
                .take(page_size)
                .cloned()
                .collect()
        };
        if page.is_empty() {
            return Ok("none".into());
        }
        let items: Vec<String> = page.iter().map(worker_metadata_wave).collect();
        Ok(format!("some([{}])", items.join(", ")))
    }

    /// Advances an enumeration past a page it returned (live or replayed).
    pub fn advance(&mut self, handle: u32, page: &Value) {
        let Some(e) = self.open.get_mut(&handle) else {
            return;
        };
        match page.unwrap_option() {
            None => {
                e.done = true;
                e.cached = None;
            }
            Some(list) => {
                if let Some(last) = list.unwrap_list().last() {
                    for (field, id) in last.unwrap_record() {
                        if field == "worker-id" {
                            for (f, name) in id.unwrap_record() {
                                if f == "worker-name" {
                                    e.after = Some(name.unwrap_string().into_owned());
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// How many enumerations are open.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }
}

/// Every worker record of `component`, in name order (the caller's own as it is now).
pub fn snapshot(context: &WorkerContext, component: ComponentId) -> Result<Vec<WorkerRecord>> {
    let mut all = Vec::new();
    scan(context, component, None, |record| {
        all.push(record);
        true
    })?;
    Ok(all)
}

/// Visits the latest records of `component`'s workers whose names sort after `after`, in name
/// order, while `visit` returns true. The calling worker is visited with its live metadata, also
/// during the first invocation of a worker that invocation created (not stored until it commits).
fn scan(
    context: &WorkerContext,
    component: ComponentId,
    after: Option<&str>,
    mut visit: impl FnMut(WorkerRecord) -> bool,
) -> Result<()> {
    let storage = &context.storage;
    let prefix = component.0.as_bytes();
    let mut start = prefix.to_vec();
    if let Some(after) = after {
        start.extend_from_slice(after.as_bytes());
    }
    // The caller's own key while it is still to be visited.
    let mut own = (context.id.component_id == component
        && after.is_none_or(|after| context.id.worker_name.as_str() > after))
    .then(|| context.id.storage_key());
    let txn = storage.env().begin_ro_txn()?;
    let mut cursor = txn.open_ro_cursor(storage.tables().workers)?;
    for item in cursor.iter_from(&start) {
        let (key, value) = item?;
        if !key.starts_with(prefix) {
            break;
        }
        if after.is_some() && key == start.as_slice() {
            continue;
        }
        if let Some(own_key) = own.take_if(|own_key| key >= own_key.as_slice()) {
            if !visit(context.self_metadata()) {
                return Ok(());
            }
            if key == own_key.as_slice() {
                continue;
            }
        }
        let record: WorkerRecord = codec::decode(value, "worker record")?;
        if !visit(record) {
            return Ok(());
        }
    }
    if own.is_some() {
        visit(context.self_metadata());
    }
    Ok(())
}

/// Reads a WIT `component-id` record value.
pub fn component_id_from_value(value: &Value) -> Option<ComponentId> {
    for (field, uuid) in value.unwrap_record() {
        if field == "uuid" {
            let (mut high, mut low) = (None, None);
            for (part, bits) in uuid.unwrap_record() {
                match part.as_ref() {
                    "high-bits" => high = Some(bits.unwrap_u64()),
                    "low-bits" => low = Some(bits.unwrap_u64()),
                    _ => {}
                }
            }
            return Some(ComponentId(Uuid::from_u64_pair(high?, low?)));
        }
    }
    None
}
