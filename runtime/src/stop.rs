//! Why a running invocation must stop: an interrupt asked for over the API, or its deadline
//! passed. One signal per worker instance, shared by whoever sets it (`interrupt`, the
//! executor's deadline watchdog), the gate (which checks it at every host call) and the worker
//! (which turns the trap that follows into the right outcome). Wasmer's interrupter stops guest
//! code that makes no host call; this says why it was stopped.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

const RUNNING: u8 = 0;
const INTERRUPTED: u8 = 1;
const DEADLINE: u8 = 2;

/// Why an invocation was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `interrupt` (Golem's "Interrupted via the Golem API"): the invocation stops and is
    /// finished when the worker is resumed.
    Interrupted,
    /// The invocation ran past its deadline: a trap, handled by the worker's retry policy.
    DeadlineExceeded { deadline: Duration },
}

/// The stop signal of one worker instance (cheap to clone: all clones share it).
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    reason: AtomicU8,
    deadline_ms: AtomicU64,
}

impl StopSignal {
    /// Asks the running invocation to stop for an interrupt (wins over a deadline).
    pub fn interrupt(&self) {
        self.0.reason.store(INTERRUPTED, Ordering::SeqCst);
    }

    /// Asks the running invocation to stop: it ran past `deadline`. An interrupt asked for
    /// already is kept.
    pub fn deadline_passed(&self, deadline: Duration) {
        self.0
            .deadline_ms
            .store(deadline.as_millis() as u64, Ordering::SeqCst);
        let _ =
            self.0
                .reason
                .compare_exchange(RUNNING, DEADLINE, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Why the invocation must stop, if it must.
    pub fn reason(&self) -> Option<StopReason> {
        match self.0.reason.load(Ordering::SeqCst) {
            INTERRUPTED => Some(StopReason::Interrupted),
            DEADLINE => Some(StopReason::DeadlineExceeded {
                deadline: Duration::from_millis(self.0.deadline_ms.load(Ordering::SeqCst)),
            }),
            _ => None,
        }
    }

    /// A new invocation starts: a deadline that stopped the last one no longer applies. (An
    /// interrupt stays: the worker stays interrupted until it is resumed, by a new instance.)
    pub fn clear_deadline(&self) {
        let _ =
            self.0
                .reason
                .compare_exchange(DEADLINE, RUNNING, Ordering::SeqCst, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_wins_over_a_deadline_and_a_deadline_clears_for_the_next_invocation() {
        let signal = StopSignal::default();
        assert_eq!(signal.reason(), None);
        let deadline = Duration::from_secs(3);
        signal.deadline_passed(deadline);
        assert_eq!(
            signal.reason(),
            Some(StopReason::DeadlineExceeded { deadline })
        );
        signal.clear_deadline();
        assert_eq!(signal.reason(), None);
        signal.interrupt();
        signal.deadline_passed(deadline);
        assert_eq!(signal.clone().reason(), Some(StopReason::Interrupted));
        signal.clear_deadline();
        assert_eq!(signal.reason(), Some(StopReason::Interrupted));
    }
}
