//! What `make chaos` (`crates/system-tests/examples/chaos.rs`) needs beside [`crate::Cluster`]:
//! the record of each call of an open-loop load, the figures of a window of those calls (count,
//! failures, p99, the time until calls are back to normal), and the fault switch of a test build.
//!
//! The figures are plain functions over the recorded calls so that they are unit-tested here, and
//! the example only orchestrates processes and prints.

use std::time::Duration;

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::ServiceProcess;

/// One call of the load, as the caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When it was sent, from the start of the run.
    pub start: Duration,
    /// How long until its answer (or its failure).
    pub latency: Duration,
    /// `None` when it succeeded, else the gRPC code it failed with.
    pub failure: Option<tonic::Code>,
}

impl Sample {
    /// Whether it succeeded.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// The figures of the calls sent in one window of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Calls sent in the window.
    pub calls: usize,
    /// Of those, the ones that failed.
    pub failed: usize,
    /// 99th percentile latency of every call (failed ones included: a caller waited for them
    /// too); `None` for an empty window.
    pub p99: Option<Duration>,
    /// 99th percentile latency of the calls that succeeded (the admitted ones under overload).
    pub p99_ok: Option<Duration>,
}

impl Summary {
    /// Failed calls in percent of all calls (0 for an empty window).
    pub fn failed_percent(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failed as f64 * 100.0 / self.calls as f64
        }
    }
}

/// The calls of `samples` (sorted by [`Sample::start`]) sent in `[from, to)`.
pub fn window(samples: &[Sample], from: Duration, to: Duration) -> &[Sample] {
    // Sorted, so two binary searches instead of a scan of a run's million calls per second sliced.
    let first = samples.partition_point(|s| s.start < from);
    let end = samples.partition_point(|s| s.start < to).max(first);
    &samples[first..end]
}

/// The figures of the calls of `samples` (sorted by [`Sample::start`]) sent in `[from, to)`.
pub fn summarize(samples: &[Sample], from: Duration, to: Duration) -> Summary {
    let mut all = Vec::new();
    let mut ok = Vec::new();
    let mut failed = 0;
    for sample in window(samples, from, to) {
        all.push(sample.latency);
        if sample.ok() {
            ok.push(sample.latency);
        } else {
            failed += 1;
        }
    }
    Summary {
        calls: all.len(),
        failed,
        p99: percentile(&mut all, 0.99),
        p99_ok: percentile(&mut ok, 0.99),
    }
}

/// The `p` quantile (0 to 1, nearest rank) of `latencies`, which it sorts; `None` when empty.
pub fn percentile(latencies: &mut [Duration], p: f64) -> Option<Duration> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let index = ((latencies.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize;
    Some(latencies[index.min(latencies.len() - 1)])
}

/// How long after `from` the calls of `samples` (sorted by [`Sample::start`]) were back to normal: the start (counted from `from`) of the
/// first one-second slice of `[from, until)` from which on every slice has calls, no failed call
/// and a p99 under `limit`. `None` when even the last slice is not back to normal.
///
/// "From which on every slice" rather than "the first good slice", so that a good second between
/// two bad ones does not count as recovered. A slice that ends after `until` is left out: too
/// few calls for a p99.
pub fn time_to_recover(
    samples: &[Sample],
    from: Duration,
    until: Duration,
    limit: Duration,
) -> Option<Duration> {
    const SLICE: Duration = Duration::from_secs(1);
    let mut recovered_at = None;
    let mut start = from;
    while start + SLICE <= until {
        let slice = summarize(samples, start, start + SLICE);
        let good = slice.calls > 0 && slice.failed == 0 && slice.p99.is_some_and(|p| p < limit);
        match (good, recovered_at) {
            (true, None) => recovered_at = Some(start - from),
            (false, _) => recovered_at = None,
            (true, Some(_)) => {}
        }
        start += SLICE;
    }
    recovered_at
}

/// Flips the fault switch of a service built with the `fault-injection` feature (SIGUSR1): on,
/// it answers every call but health checks with `UNAVAILABLE`; off, it serves again. A binary
/// built without the feature would die of the signal, so check [`has_fault_switch`] first.
pub fn toggle_fault(process: &ServiceProcess) {
    if let Ok(pid) = i32::try_from(process.pid()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGUSR1);
    }
}

/// Whether the process says at start-up that it was built with the fault switch.
pub fn has_fault_switch(process: &ServiceProcess) -> bool {
    process.log().contains("built with fault injection")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A call every 10 ms for `seconds`, taking `latency`, failing when `fails(start)` says so.
    fn load(
        seconds: u64,
        latency: impl Fn(u64) -> u64,
        fails: impl Fn(u64) -> bool,
    ) -> Vec<Sample> {
        (0..seconds * 100)
            .map(|i| {
                let at = i * 10;
                Sample {
                    start: ms(at),
                    latency: ms(latency(at)),
                    failure: fails(at).then_some(tonic::Code::Unavailable),
                }
            })
            .collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut latencies: Vec<Duration> = (1..=100).rev().map(ms).collect();
        assert_eq!(percentile(&mut latencies, 0.99), Some(ms(99)));
        assert_eq!(percentile(&mut latencies, 0.0), Some(ms(1)));
        assert_eq!(percentile(&mut latencies, 1.0), Some(ms(100)));
        assert_eq!(percentile(&mut [], 0.5), None);
    }

    #[test]
    fn a_summary_counts_the_calls_sent_in_its_window() {
        let samples = load(10, |_| 2, |at| (3_000..3_050).contains(&at));
        let summary = summarize(&samples, ms(2_000), ms(4_000));
        assert_eq!(summary.calls, 200);
        assert_eq!(summary.failed, 5);
        assert!((summary.failed_percent() - 2.5).abs() < 1e-9);
        assert_eq!(summary.p99, Some(ms(2)));
        assert_eq!(
            summarize(&samples, ms(20_000), ms(30_000)),
            Summary::default()
        );
    }

    #[test]
    fn recovery_is_the_first_second_from_which_every_second_is_normal() {
        // Slow from 2 s to 3.5 s, one failure at 5.2 s: back to normal from 6 s on, 4 s after 2 s.
        let samples = load(
            10,
            |at| if (2_000..3_500).contains(&at) { 50 } else { 2 },
            |at| at == 5_200,
        );
        assert_eq!(
            time_to_recover(&samples, ms(2_000), ms(10_000), ms(4)),
            Some(ms(4_000))
        );
        // Undisturbed: recovered at once.
        assert_eq!(
            time_to_recover(&samples, ms(6_000), ms(10_000), ms(4)),
            Some(ms(0))
        );
        // Still failing in the last second: not recovered.
        let failing = load(10, |_| 2, |at| at >= 9_000);
        assert_eq!(time_to_recover(&failing, ms(0), ms(10_000), ms(4)), None);
    }
}
