//! Transactions and persistence control of `golem:api/host@0.2.0`: atomic regions
//! (`mark-begin-operation` / `mark-end-operation`), the retry policy, the oplog persistence
//! level and the idempotence mode.
//!
//! The settings are worker state: they last across invocations until changed, are part of a
//! memory snapshot's host state, and every `set-*` call is recorded in the oplog (so replay
//! sets them at the same points and `worker oplog` shows when they changed). The getters read
//! that state and record nothing: their result is a function of what the guest did before.
//!
//! **Remote side effects** are the host calls whose effect or result lies outside the calling
//! worker: `get-worker-metadata`, `update-worker`, and the `get-workers` constructor and
//! `get-next`. With idempotence off each is wrapped by [`remote_side_effect`] in a
//! `begin-remote-write` entry, committed before it runs, and an `end-remote-write` entry after;
//! recovery that finds a begin without its end fails the worker (`crate::worker::regions`),
//! since it cannot know whether the effect happened.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasm_wave::value::Value;
use wasm_wave::wasm::WasmValue;

use super::HostState;
use crate::error::{Error, Result};
use crate::ids::OplogIndex;
use crate::oplog::{HostFunction, HostValue, OplogEntry};

/// Nanoseconds per millisecond, for the default policy's delays (WIT `duration` is in ns).
const NS_PER_MS: u64 = 1_000_000;

/// How the executor retries an invocation that trapped (`retry-policy` of the WIT).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first failed attempt; when they are used up the worker fails.
    pub max_attempts: u32,
    /// Delay before the first retry, in nanoseconds.
    pub min_delay_ns: u64,
    /// Upper bound of any delay, in nanoseconds.
    pub max_delay_ns: u64,
    /// Each retry waits this many times longer than the one before.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    /// Golem's default: 3 retries, 100 ms, 300 ms, 900 ms apart (capped at 1 s). A trap that
    /// repeats deterministically fails the worker about 1.3 s after the first attempt; one
    /// caused by something live (a clock, a random draw, another worker's state) gets three
    /// more chances.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            min_delay_ns: 100 * NS_PER_MS,
            max_delay_ns: 1000 * NS_PER_MS,
            multiplier: 3.0,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retries_done + 1`: `min-delay * multiplier^retries_done`,
    /// capped at `max-delay` (a multiplier below 1, infinite or NaN gives the cap or less, never
    /// a panic).
    pub fn delay(&self, retries_done: u64) -> Duration {
        let exponent = i32::try_from(retries_done).unwrap_or(i32::MAX);
        let ns = self.min_delay_ns as f64 * self.multiplier.powi(exponent);
        let capped = if ns.is_finite() && ns >= 0.0 {
            ns.min(self.max_delay_ns as f64) as u64
        } else {
            self.max_delay_ns
        };
        Duration::from_nanos(capped)
    }

    /// The WAVE text of the WIT `retry-policy` record.
    pub fn to_wave(&self) -> String {
        format!(
            "{{max-attempts: {}, min-delay: {}, max-delay: {}, multiplier: {}}}",
            self.max_attempts,
            self.min_delay_ns,
            self.max_delay_ns,
            wave_f64(self.multiplier)
        )
    }

    /// Reads a WIT `retry-policy` record value.
    pub fn from_value(value: &Value) -> Self {
        let mut policy = RetryPolicy::default();
        for (field, v) in value.unwrap_record() {
            match field.as_ref() {
                "max-attempts" => policy.max_attempts = v.unwrap_u32(),
                "min-delay" => policy.min_delay_ns = v.unwrap_u64(),
                "max-delay" => policy.max_delay_ns = v.unwrap_u64(),
                "multiplier" => policy.multiplier = v.unwrap_f64(),
                _ => {}
            }
        }
        policy
    }
}

fn wave_f64(value: f64) -> String {
    if value.is_nan() {
        "nan".into()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{value:?}")
    }
}

/// The WIT `persistence-level`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PersistenceLevel {
    /// Host calls are not recorded and run live again on replay.
    PersistNothing,
    /// Everything is recorded (golemw records every host call at both levels).
    PersistRemoteSideEffects,
    /// Everything is recorded: the default.
    #[default]
    Smart,
}

impl PersistenceLevel {
    /// The WIT case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            PersistenceLevel::PersistNothing => "persist-nothing",
            PersistenceLevel::PersistRemoteSideEffects => "persist-remote-side-effects",
            PersistenceLevel::Smart => "smart",
        }
    }

    fn from_case(case: &str) -> Option<Self> {
        match case {
            "persist-nothing" => Some(PersistenceLevel::PersistNothing),
            "persist-remote-side-effects" => Some(PersistenceLevel::PersistRemoteSideEffects),
            "smart" => Some(PersistenceLevel::Smart),
            _ => None,
        }
    }
}

/// A worker's transaction and persistence settings, and its open atomic regions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Persistence {
    /// The policy applied when an invocation traps.
    pub retry_policy: RetryPolicy,
    /// Whether host calls are recorded.
    pub level: PersistenceLevel,
    /// Idempotence mode: true (default) is at-least-once for remote side effects, false
    /// at-most-once.
    pub idempotent: bool,
    /// The oplog index of the running invocation's `exported-function-invoked` entry.
    #[serde(skip)]
    pub invocation_start: OplogIndex,
    /// Begin indexes of the running invocation's atomic regions not yet ended, in order.
    /// Regions belong to one invocation: one still open when it returns ends with it.
    #[serde(skip)]
    pub open_regions: Vec<OplogIndex>,
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            retry_policy: RetryPolicy::default(),
            level: PersistenceLevel::default(),
            idempotent: true,
            invocation_start: 0,
            open_regions: Vec::new(),
        }
    }
}

impl Persistence {
    /// An invocation whose `exported-function-invoked` entry is at `index` starts (live or
    /// replayed).
    pub fn begin_invocation(&mut self, index: OplogIndex) {
        self.invocation_start = index;
        self.open_regions.clear();
    }
}

/// Handles the transaction and persistence functions; `None` for any other function. `typed` parses the
/// WAVE text of a result against the function's result type.
pub fn dispatch(
    state: &mut HostState,
    name: &str,
    params: &[Value],
    typed: &dyn Fn(&str) -> Result<Option<Value>>,
) -> Option<Result<Option<Value>>> {
    let result = match name {
        "mark-begin-operation" => {
            state
                .gate
                .marker(OplogEntry::BeginAtomicRegion)
                .and_then(|(index, _)| {
                    state.persistence.open_regions.push(index);
                    typed(&index.to_string())
                })
        }
        "mark-end-operation" => {
            let begin = params.first().map(|v| v.unwrap_u64()).unwrap_or(0);
            let open = &mut state.persistence.open_regions;
            match open.iter().position(|&b| b == begin) {
                // Ending a region ends the ones begun inside it too.
                Some(at) => {
                    open.truncate(at);
                    state
                        .gate
                        .marker(OplogEntry::EndAtomicRegion { begin })
                        .map(|_| None)
                }
                // Already ended (or never begun in this invocation): nothing to do.
                None => Ok(None),
            }
        }
        "get-retry-policy" => typed(&state.persistence.retry_policy.to_wave()),
        "set-retry-policy" => {
            let policy = params
                .first()
                .map(RetryPolicy::from_value)
                .unwrap_or_default();
            record_setting(state, name, policy.to_wave()).map(|()| {
                state.persistence.retry_policy = policy;
                None
            })
        }
        "get-oplog-persistence-level" => typed(state.persistence.level.as_str()),
        "set-oplog-persistence-level" => {
            let case = params.first().map(|v| v.unwrap_variant().0.to_string());
            match case.as_deref().and_then(PersistenceLevel::from_case) {
                Some(level) => {
                    // The change itself is recorded whatever the level before or after.
                    state.gate.set_persist_nothing(false);
                    let recorded = record_setting(state, name, level.as_str().to_string());
                    state.persistence.level = level;
                    apply_level(state);
                    recorded.map(|()| None)
                }
                None => Err(Error::Trap {
                    function: name.into(),
                    message: format!("unknown persistence level {case:?}"),
                }),
            }
        }
        "get-idempotence-mode" => typed(&state.persistence.idempotent.to_string()),
        "set-idempotence-mode" => {
            let idempotent = params.first().map(|v| v.unwrap_bool()).unwrap_or(true);
            record_setting(state, name, idempotent.to_string()).map(|()| {
                state.persistence.idempotent = idempotent;
                None
            })
        }
        _ => return None,
    };
    Some(result)
}

/// Records a `set-*` call with its argument (replay checks it is made again, identically).
fn record_setting(state: &mut HostState, name: &str, wave: String) -> Result<()> {
    state.gate.host_call(
        HostFunction::Golem(name.to_string()),
        HostValue::Wave(wave),
        || HostValue::Unit,
    )?;
    Ok(())
}

/// Makes the gate follow the worker's persistence level (after a change or a restore).
pub fn apply_level(state: &mut HostState) {
    let nothing = state.persistence.level == PersistenceLevel::PersistNothing;
    state.gate.set_persist_nothing(nothing);
}

/// Runs a remote side effect. With idempotence off, a `begin-remote-write` entry is committed
/// durably before it runs; its recorded result and an `end-remote-write` entry follow and are
/// committed with the next commit, like every host call record (the invocation's end, an
/// `oplog-commit`, a `generate-idempotency-key`). Recovery that finds the begin without the end
/// cannot know whether the effect happened, and fails the worker rather than run it twice
/// (at-most-once); a guest that wants that window short calls `oplog-commit` after the effect.
/// With idempotence on, the effect runs and is recorded like any host call: a crash before the
/// record is committed runs it again (at-least-once).
pub fn remote_side_effect<T>(
    state: &mut HostState,
    run: impl FnOnce(&mut HostState) -> Result<T>,
) -> Result<T> {
    if state.persistence.idempotent || state.gate.persist_nothing() {
        return run(state);
    }
    let (begin, live) = state.gate.marker(OplogEntry::BeginRemoteWrite)?;
    if live {
        state.gate.commit_with(true, |_| Ok(()))?;
    }
    let out = run(state)?;
    state.gate.marker(OplogEntry::EndRemoteWrite { begin })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_the_multiplier_and_stops_at_the_cap() {
        let policy = RetryPolicy::default();
        let ms = |k| policy.delay(k).as_millis();
        assert_eq!(
            (ms(0), ms(1), ms(2), ms(3), ms(10)),
            (100, 300, 900, 1000, 1000)
        );
        let odd = RetryPolicy {
            multiplier: f64::NAN,
            ..RetryPolicy::default()
        };
        assert_eq!(odd.delay(2).as_millis(), 1000);
        let huge = RetryPolicy {
            multiplier: 1e300,
            ..RetryPolicy::default()
        };
        assert_eq!(huge.delay(u64::MAX).as_millis(), 1000);
    }

    #[test]
    fn policy_wave_round_trips_through_the_wit_record() {
        let policy = RetryPolicy {
            max_attempts: 2,
            min_delay_ns: 5,
            max_delay_ns: 7,
            multiplier: 1.5,
        };
        assert_eq!(
            policy.to_wave(),
            "{max-attempts: 2, min-delay: 5, max-delay: 7, multiplier: 1.5}"
        );
    }
}
