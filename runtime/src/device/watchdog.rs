//! A deadline on every wait for device work.
//!
//! A kernel that never finishes (a deadlocked mbarrier ring, a bad `setmaxnreg`) would otherwise
//! block the process forever inside the driver: in a synchronisation, or in any call that waits
//! implicitly for outstanding launches (copies, frees, module loads). The CUDA backend never makes
//! such a call while launches are outstanding: it first records an event behind them and polls it
//! ([`wait_until`]) until the work is done, fails, or the deadline ([`SYNC_TIMEOUT_ENV`]) passes.
//!
//! A kernel past its deadline is still running, and nothing short of ending the process stops it.
//! Every backend of the process shares the device's primary context, so the hang is latched
//! process-wide ([`HangLatch`], [`process_hang`]): from then on every GPU call fails at once with
//! the same [`RuntimeError::Hung`], and nothing waits on the device again (not even `Drop`).
//!
//! The logic here is pure (a poll function and a clock), so it is tested without a GPU.

use std::ffi::OsStr;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::error::{Result, RuntimeError, SYNC_TIMEOUT_ENV};

/// Generous: far above any kernel Tessera launches (the largest benchmarks take milliseconds),
/// while still ending a hung run long before anyone gives up on it.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(120);

/// Busy-poll this long before sleeping: most waits are for kernels of microseconds to a few
/// milliseconds, where a sleep would add more latency than the kernel takes.
const SPIN_PHASE: Duration = Duration::from_micros(100);
/// The first sleep after the spin phase; each further one doubles, up to [`MAX_SLEEP`].
const FIRST_SLEEP: Duration = Duration::from_micros(10);
/// Caps how late a long wait notices completion, and how often it wakes the CPU.
const MAX_SLEEP: Duration = Duration::from_millis(1);

/// The deadline in effect: `TESSERA_SYNC_TIMEOUT_S`, else [`DEFAULT_SYNC_TIMEOUT`]. `None` means no
/// deadline (`0`). A value that is not a number of seconds is an error naming the variable.
pub fn sync_timeout_from_env() -> Result<Option<Duration>> {
    sync_timeout_from(std::env::var_os(SYNC_TIMEOUT_ENV).as_deref())
}

/// The deadline for a value of [`SYNC_TIMEOUT_ENV`]: unset or blank is the default.
pub fn sync_timeout_from(value: Option<&OsStr>) -> Result<Option<Duration>> {
    let Some(value) = value else { return Ok(Some(DEFAULT_SYNC_TIMEOUT)) };
    match value.to_str() {
        Some(text) if text.trim().is_empty() => Ok(Some(DEFAULT_SYNC_TIMEOUT)),
        Some(text) => parse_sync_timeout(text),
        None => Err(bad_timeout(&value.to_string_lossy())),
    }
}

/// Parses a deadline in seconds (fractions allowed); `0` is `None`, no deadline.
pub fn parse_sync_timeout(text: &str) -> Result<Option<Duration>> {
    let seconds: f64 = text.trim().parse().map_err(|_| bad_timeout(text))?;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(bad_timeout(text));
    }
    if seconds == 0.0 {
        return Ok(None);
    }
    Duration::try_from_secs_f64(seconds).map(Some).map_err(|_| bad_timeout(text))
}

fn bad_timeout(text: &str) -> RuntimeError {
    RuntimeError::invalid(
        SYNC_TIMEOUT_ENV,
        format!(
            "`{text}` is not a number of seconds; use e.g. 120 or 0.5 (0 waits without a deadline; default {})",
            DEFAULT_SYNC_TIMEOUT.as_secs()
        ),
    )
}

/// How a bounded wait ended (a failed poll is the `Err` of [`wait_until`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// `poll` reported the work done.
    Done,
    /// The deadline passed first.
    TimedOut,
}

/// Calls `poll` until it returns `Ok(true)` (done), an error, or `deadline` passes (`None`: no
/// deadline). It polls at least once, so work already done is never reported as timed out. Spins
/// briefly, then sleeps between polls, each sleep twice the last, up to a millisecond.
pub fn wait_until(deadline: Option<Instant>, mut poll: impl FnMut() -> Result<bool>) -> Result<WaitOutcome> {
    let started = Instant::now();
    let mut sleep = FIRST_SLEEP;
    loop {
        if poll()? {
            return Ok(WaitOutcome::Done);
        }
        let now = Instant::now();
        if deadline.is_some_and(|deadline| now >= deadline) {
            return Ok(WaitOutcome::TimedOut);
        }
        if now.duration_since(started) < SPIN_PHASE {
            thread::yield_now();
            continue;
        }
        let nap = deadline.map_or(sleep, |deadline| sleep.min(deadline.saturating_duration_since(now)));
        thread::sleep(nap);
        sleep = (sleep * 2).min(MAX_SLEEP);
    }
}

/// Device work that did not finish in time: what was outstanding and how long it was waited for.
#[derive(Clone, Debug, PartialEq)]
pub struct Hang {
    /// The kernels launched and not known to be complete, distinct, in launch order.
    pub kernels: Vec<String>,
    /// How many launches were outstanding.
    pub launches: usize,
    pub waited: Duration,
    /// The deadline that passed.
    pub timeout: Duration,
}

impl Hang {
    pub fn error(&self) -> RuntimeError {
        RuntimeError::Hung {
            kernels: self.kernels.clone(),
            launches: self.launches,
            waited_s: self.waited.as_secs_f64(),
            timeout_s: self.timeout.as_secs_f64(),
        }
    }
}

/// Remembers the first hang for good. The CUDA backend uses the process-wide one
/// ([`process_hang`]); tests use their own.
#[derive(Debug, Default)]
pub struct HangLatch(OnceLock<Hang>);

impl HangLatch {
    pub const fn new() -> HangLatch {
        HangLatch(OnceLock::new())
    }

    pub fn get(&self) -> Option<&Hang> {
        self.0.get()
    }

    /// `Err` with the latched hang's error, if there is one.
    pub fn check(&self) -> Result<()> {
        match self.get() {
            Some(hang) => Err(hang.error()),
            None => Ok(()),
        }
    }

    /// Latches `hang` unless another thread latched one first; returns the one that stays.
    fn latch(&self, hang: Hang) -> &Hang {
        self.0.get_or_init(|| hang)
    }
}

/// The hang of this process's GPU work, shared by every CUDA backend (one primary context per
/// device and process).
pub(crate) static PROCESS_HANG: HangLatch = HangLatch::new();

/// The error of the hang that poisoned this process's GPU, if any. A CLI checks it before exiting:
/// the hung kernel still runs, and normal exit (driver teardown in exit handlers) may block on it.
pub fn process_hang() -> Option<RuntimeError> {
    PROCESS_HANG.get().map(Hang::error)
}

/// What a backend knows about its outstanding launches, and the deadline for waiting on them.
#[derive(Debug)]
pub struct Watchdog {
    timeout: Option<Duration>,
    /// Distinct kernel names launched since the last completed wait, in launch order.
    in_flight: Vec<String>,
    launches: usize,
    latch: &'static HangLatch,
}

impl Watchdog {
    /// `timeout`: `None` waits without a deadline. A hang is latched in `latch`.
    pub fn new(timeout: Option<Duration>, latch: &'static HangLatch) -> Watchdog {
        Watchdog { timeout, in_flight: Vec::new(), launches: 0, latch }
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// `Err` with the hang's error once one is latched: nothing may wait on the device again.
    pub fn check(&self) -> Result<()> {
        self.latch.check()
    }

    /// Records a launch of `kernel`, enqueued and not yet known complete.
    pub fn launched(&mut self, kernel: &str) {
        if !self.in_flight.iter().any(|k| k == kernel) {
            self.in_flight.push(kernel.to_string());
        }
        self.launches += 1;
    }

    /// Whether a launch may still be running, i.e. a blocking call must wait with a deadline first.
    pub fn outstanding(&self) -> bool {
        self.launches > 0
    }

    /// Waits for the outstanding launches through `poll` (`Ok(true)`: all done). Returns at once
    /// when the hang latch is set, or when nothing is outstanding (idle calls stay cheap). An error
    /// from `poll` (a kernel failed) ends the wait: the launches are over. On the deadline the hang
    /// is latched and its [`RuntimeError::Hung`] returned, now and on every later call.
    pub fn wait(&mut self, poll: impl FnMut() -> Result<bool>) -> Result<()> {
        self.check()?;
        if !self.outstanding() {
            return Ok(());
        }
        let started = Instant::now();
        let deadline = self.timeout.and_then(|timeout| started.checked_add(timeout));
        match wait_until(deadline, poll) {
            Ok(WaitOutcome::Done) => {
                self.clear();
                Ok(())
            }
            Err(e) => {
                self.clear();
                Err(e)
            }
            Ok(WaitOutcome::TimedOut) => {
                let hang = Hang {
                    kernels: std::mem::take(&mut self.in_flight),
                    launches: self.launches,
                    waited: started.elapsed(),
                    timeout: self.timeout.unwrap_or(Duration::MAX),
                };
                Err(self.latch.latch(hang).error())
            }
        }
    }

    fn clear(&mut self) {
        self.in_flight.clear();
        self.launches = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upper bound on a test's waits: far above the deadlines used, far below "hangs".
    const SLACK: Duration = Duration::from_secs(5);
    const SHORT_DEADLINE: Duration = Duration::from_millis(30);

    fn fresh_latch() -> &'static HangLatch {
        Box::leak(Box::new(HangLatch::new()))
    }

    #[test]
    fn never_completing_work_is_hung_within_the_deadline_and_every_later_call_fails_fast() {
        let mut watchdog = Watchdog::new(Some(SHORT_DEADLINE), fresh_latch());
        watchdog.launched("tessera_attention_fwd_bf16_d128_sm90a");
        watchdog.launched("tessera_attention_fwd_bf16_d128_sm90a");
        watchdog.launched("tessera_gemm_bf16");
        let started = Instant::now();
        let err = watchdog.wait(|| Ok(false)).unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= SHORT_DEADLINE && waited < SLACK, "{waited:?}");
        let RuntimeError::Hung { kernels, launches, waited_s, timeout_s } = &err else { panic!("{err}") };
        assert_eq!(kernels, &["tessera_attention_fwd_bf16_d128_sm90a", "tessera_gemm_bf16"]);
        assert_eq!(*launches, 3);
        assert!(*waited_s >= SHORT_DEADLINE.as_secs_f64(), "{waited_s}");
        assert_eq!(*timeout_s, SHORT_DEADLINE.as_secs_f64());
        let message = err.to_string();
        for needle in ["tessera_attention_fwd_bf16_d128_sm90a", "tessera_gemm_bf16", "must exit", SYNC_TIMEOUT_ENV] {
            assert!(message.contains(needle), "`{needle}` missing from: {message}");
        }
        assert!(err.is_hung());

        // Poisoned: the same error at once, without polling, whatever is outstanding.
        let polled = std::cell::Cell::new(0);
        for _ in 0..3 {
            let started = Instant::now();
            let again = watchdog
                .wait(|| {
                    polled.set(polled.get() + 1);
                    Ok(true)
                })
                .unwrap_err();
            assert!(started.elapsed() < SHORT_DEADLINE, "a poisoned wait must not wait");
            assert_eq!(again.to_string(), message);
            watchdog.launched("another");
        }
        assert_eq!(polled.get(), 0);
        assert_eq!(watchdog.check().unwrap_err().to_string(), message);
        // Another watchdog on the same latch (another backend of the process) is poisoned too.
        let other = Watchdog::new(None, watchdog.latch);
        assert_eq!(other.check().unwrap_err().to_string(), message);
    }

    #[test]
    fn work_that_completes_after_some_polls_is_waited_for() {
        let mut watchdog = Watchdog::new(Some(SLACK), fresh_latch());
        watchdog.launched("k");
        let polls = std::cell::Cell::new(0);
        const POLLS_UNTIL_DONE: usize = 50;
        watchdog
            .wait(|| {
                polls.set(polls.get() + 1);
                Ok(polls.get() >= POLLS_UNTIL_DONE)
            })
            .unwrap();
        assert_eq!(polls.get(), POLLS_UNTIL_DONE);
        assert!(!watchdog.outstanding());
        // Nothing outstanding: no poll at all.
        watchdog.wait(|| panic!("idle waits must not poll")).unwrap();
        watchdog.check().unwrap();
    }

    #[test]
    fn without_a_deadline_long_work_is_not_hung() {
        let mut watchdog = Watchdog::new(None, fresh_latch());
        watchdog.launched("slow");
        let started = Instant::now();
        watchdog.wait(|| Ok(started.elapsed() >= SHORT_DEADLINE * 2)).unwrap();
        watchdog.check().unwrap();
    }

    #[test]
    fn a_failing_poll_ends_the_wait_with_its_error_and_poisons_nothing() {
        let mut watchdog = Watchdog::new(Some(SLACK), fresh_latch());
        watchdog.launched("faulting");
        let err = watchdog
            .wait(|| Err(RuntimeError::Cuda { call: "cuEventQuery", message: "an illegal memory access".into() }))
            .unwrap_err();
        assert!(err.to_string().contains("illegal memory access"), "{err}");
        assert!(!err.is_hung());
        assert!(!watchdog.outstanding());
        watchdog.check().unwrap();
    }

    #[test]
    fn work_already_done_at_the_deadline_is_not_hung() {
        let done = wait_until(Some(Instant::now()), || Ok(true)).unwrap();
        assert_eq!(done, WaitOutcome::Done);
        let late = wait_until(Some(Instant::now()), || Ok(false)).unwrap();
        assert_eq!(late, WaitOutcome::TimedOut);
    }

    #[test]
    fn the_variable_defaults_when_unset_or_blank_and_rejects_what_is_not_seconds() {
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(sync_timeout_from(None).unwrap(), Some(DEFAULT_SYNC_TIMEOUT));
        assert_eq!(sync_timeout_from(Some(OsStr::new("  "))).unwrap(), Some(DEFAULT_SYNC_TIMEOUT));
        assert_eq!(sync_timeout_from(Some(OsStr::new("0"))).unwrap(), None);
        assert_eq!(sync_timeout_from(Some(OsStr::new("2.5"))).unwrap(), Some(Duration::from_millis(2500)));
        for bad in [OsStr::new("two minutes"), OsStr::new("-0.5"), OsStr::from_bytes(b"\xff")] {
            let err = sync_timeout_from(Some(bad)).unwrap_err();
            assert!(matches!(err, RuntimeError::InvalidArgument { ref arg, .. } if arg == SYNC_TIMEOUT_ENV), "{err}");
        }
    }

    #[test]
    fn timeouts_parse_as_seconds_with_zero_meaning_no_deadline() {
        assert_eq!(parse_sync_timeout("120").unwrap(), Some(Duration::from_secs(120)));
        assert_eq!(parse_sync_timeout(" 0.5 ").unwrap(), Some(Duration::from_millis(500)));
        assert_eq!(parse_sync_timeout("0").unwrap(), None);
        assert_eq!(parse_sync_timeout("0.0").unwrap(), None);
        for bad in ["", "abc", "-1", "inf", "NaN", "10s", "1e400"] {
            let err = parse_sync_timeout(bad).unwrap_err().to_string();
            assert!(err.contains(SYNC_TIMEOUT_ENV) && err.contains("0 waits without a deadline"), "{bad}: {err}");
        }
    }
}
