//! Worker enumeration: `golem:api/host.get-workers` with filters, paging, the `precise` flag,
//! and handles kept open across invocations or used after they were dropped.

use std::cell::RefCell;
use std::collections::HashMap;

wit_bindgen::generate!({
    world: "golemw:enumerate/enumerate",
    path: ["../../../wit", "wit"],
    generate_all,
});

use exports::golemw::enumerate::api::Guest;
use golem::api::host::{self, GetWorkers, WorkerAnyFilter, WorkerMetadata, WorkerStatus};

thread_local! {
    /// Enumerations opened by `open`, by handle.
    static OPEN: RefCell<HashMap<u32, GetWorkers>> = RefCell::new(HashMap::new());
}

fn start(filter: Option<WorkerAnyFilter>, precise: bool) -> GetWorkers {
    let component = host::get_self_metadata().worker_id.component_id;
    GetWorkers::new(component, filter.as_ref(), precise)
}

fn status_name(status: WorkerStatus) -> &'static str {
    match status {
        WorkerStatus::Running => "running",
        WorkerStatus::Idle => "idle",
        WorkerStatus::Suspended => "suspended",
        WorkerStatus::Interrupted => "interrupted",
        WorkerStatus::Retrying => "retrying",
        WorkerStatus::Failed => "failed",
        WorkerStatus::Exited => "exited",
    }
}

fn describe(page: Option<Vec<WorkerMetadata>>) -> Option<Vec<String>> {
    page.map(|workers| {
        workers
            .into_iter()
            .map(|w| format!("{}={}", w.worker_id.worker_name, status_name(w.status)))
            .collect()
    })
}

struct Enumerate;

impl Guest for Enumerate {
    fn pages(filter: Option<WorkerAnyFilter>, precise: bool) -> Vec<Vec<String>> {
        let workers = start(filter, precise);
        let mut pages = Vec::new();
        while let Some(page) = workers.get_next() {
            pages.push(page.into_iter().map(|w| w.worker_id.worker_name).collect());
        }
        pages
    }

    fn metadata(filter: Option<WorkerAnyFilter>, precise: bool) -> Vec<WorkerMetadata> {
        let workers = start(filter, precise);
        let mut all = Vec::new();
        while let Some(page) = workers.get_next() {
            all.extend(page);
        }
        all
    }

    fn open(filter: Option<WorkerAnyFilter>, precise: bool) -> u32 {
        let workers = start(filter, precise);
        let handle = workers.handle();
        OPEN.with(|open| open.borrow_mut().insert(handle, workers));
        handle
    }

    fn next(handle: u32) -> Option<Vec<String>> {
        OPEN.with(|open| {
            let open = open.borrow();
            let workers = open
                .get(&handle)
                .expect("no enumeration with this handle is open");
            describe(workers.get_next())
        })
    }

    fn close(handle: u32) {
        let workers = OPEN.with(|open| open.borrow_mut().remove(&handle));
        drop(workers.expect("no enumeration with this handle is open"));
    }

    fn next_raw(handle: u32) -> Option<Vec<String>> {
        // SAFETY (as far as the guest goes): the resource is borrowed for one call and never
        // dropped here; whether the host still knows the handle is what is being tested.
        let workers = unsafe { GetWorkers::from_handle(handle) };
        let page = describe(workers.get_next());
        std::mem::forget(workers);
        page
    }

    fn drop_raw(handle: u32) {
        drop(unsafe { GetWorkers::from_handle(handle) });
    }

    fn fail() {
        panic!("asked to fail");
    }
}

export!(Enumerate);
