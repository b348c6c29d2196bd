//! What host functions know of the worker they run for, and the WIT `worker-id` and
//! `worker-metadata` values they exchange with the guest.

use std::sync::Arc;

use uuid::Uuid;
use wasm_wave::value::Value;
use wasm_wave::wasm::WasmValue;

use crate::abi::wave_string;
use crate::ids::{ComponentId, WorkerId};
use crate::storage::Storage;
use crate::worker_records::{WorkerRecord, WorkerStatus, WorkerStore};

/// The worker's identity and storage, for host functions that describe workers.
pub struct WorkerContext {
    pub id: WorkerId,
    pub record: WorkerRecord,
    pub storage: Arc<Storage>,
    /// Workers per page of a `get-workers` enumeration.
    pub enumeration_page_size: usize,
    /// Where the worker's history came from, if it is a fork.
    pub origin: Option<crate::forks::Origin>,
}

impl WorkerContext {
    /// The identity entry `index` of the oplog was recorded under: this worker's own, or, in
    /// the history a fork copied, the worker's that recorded it. Host functions derive what
    /// they do not record from it (promise ids, `get-self-uri`, call keys), so that replaying
    /// the copied history reproduces it exactly.
    pub fn id_at(&self, index: crate::ids::OplogIndex) -> &WorkerId {
        self.origin
            .as_ref()
            .and_then(|origin| origin.recorded_by(index))
            .unwrap_or(&self.id)
    }

    /// The program name the guest's arguments start with: the name the worker's history was
    /// created under (a fork keeps its first ancestor's, as it keeps its arguments).
    pub fn program_name(&self) -> &str {
        match &self.origin {
            Some(origin) => &origin.creator().worker_name,
            None => &self.id.worker_name,
        }
    }

    /// This worker's metadata as it is while it runs.
    pub fn self_metadata(&self) -> WorkerRecord {
        WorkerRecord {
            status: WorkerStatus::Running,
            ..self.record.clone()
        }
    }

    /// Another worker's metadata, given a `worker-id` value.
    pub fn lookup_worker(&self, worker_id: &Value) -> Option<WorkerRecord> {
        let id = worker_id_from_value(worker_id)?;
        if id == self.id {
            return Some(self.self_metadata());
        }
        WorkerStore::new(Arc::clone(&self.storage)).get(&id).ok()?
    }
}

/// Reads a WIT `worker-id` record value.
pub fn worker_id_from_value(value: &Value) -> Option<WorkerId> {
    let mut component = None;
    let mut name = None;
    for (field, v) in value.unwrap_record() {
        match field.as_ref() {
            "component-id" => {
                for (f, uuid) in v.unwrap_record() {
                    if f == "uuid" {
                        let (mut high, mut low) = (0, 0);
                        for (part, bits) in uuid.unwrap_record() {
                            match part.as_ref() {
                                "high-bits" => high = bits.unwrap_u64(),
                                "low-bits" => low = bits.unwrap_u64(),
                                _ => {}
                            }
                        }
                        component = Some(ComponentId(Uuid::from_u64_pair(high, low)));
                    }
                }
            }
            "worker-name" => name = Some(v.unwrap_string().to_string()),
            _ => {}
        }
    }
    Some(WorkerId {
        component_id: component?,
        worker_name: name?,
    })
}

/// The WAVE text of a `worker-metadata` record.
pub fn worker_metadata_wave(record: &WorkerRecord) -> String {
    let (high, low) = record.id.component_id.0.as_u64_pair();
    let args: Vec<String> = record.args.iter().map(|a| wave_string(a)).collect();
    let env: Vec<String> = record
        .env
        .iter()
        .map(|(k, v)| format!("({}, {})", wave_string(k), wave_string(v)))
        .collect();
    format!(
        "{{worker-id: {{component-id: {{uuid: {{high-bits: {high}, low-bits: {low}}}}}, worker-name: {}}}, \
         args: [{}], env: [{}], status: {}, component-version: {}, retry-count: {}}}",
        wave_string(&record.id.worker_name),
        args.join(", "),
        env.join(", "),
        record.status.as_str(),
        record.component_version,
        record.retry_count
    )
}
