//! `make chaos`: how many calls fail, and for how long latency suffers, when instances and the
//! registry misbehave under a steady load (the "chaos figures" of the resilience issue).
//!
//! Starts the release binaries on a real etcd (registry and config centre): 3 vessel instances
//! (two at version 0.1.0, one at 0.2.0, so traffic can be shifted between versions), 2 user
//! instances and 1 consignment. It first measures the highest `CreateConsignment` rate the system
//! sustains (a short closed-loop burst, as `make bench` does), then drives an open-loop load at
//! half of it for the whole run: a timer sends each call on its own task, so slow calls do not
//! lower the offered load, as they would with a fixed number of callers. Every call's start,
//! latency and outcome is recorded. Then, one after the other, each with a baseline of undisturbed
//! load before it and a settling time after it:
//!
//! - `rolling-restart`: the 3 vessels, one at a time (SIGTERM, then a new one, SERVING before the
//!   next);
//! - `sigkill`: a vessel killed, and a replacement started;
//! - `sigstop`: a vessel frozen for 20 s, then thawed;
//! - `user-restart`: one user instance stopped (SIGTERM) and a new one started;
//! - `vessel-errors`: a vessel answering `UNAVAILABLE` to every call for 10 s (the
//!   `fault-injection` build's SIGUSR1 switch; skipped with a note on a build without it);
//! - `overload`: 3× the load for 10 s;
//! - `routing-shift`: the consignment service's `client.routing.vessel` moved from 100/0 to
//!   0/100 between the two versions through the config centre (`shippy config set`);
//! - `etcd-restart`: etcd stopped, its data wiped, started again (every registration is lost);
//! - `etcd-outage`: etcd stopped for 30 s, then started with its data.
//!
//! It prints one table (calls, failed, p99 before / during / after, time to recover) with the
//! issue's targets beside the figures, then what the policies did (from the consignment service's
//! metrics) and which errors the failed calls got. It asserts nothing: a shared 2-core machine's
//! numbers are for reading. The services' logs are copied to `target/chaos-logs/` (or
//! `CHAOS_LOG_DIR`) for the explanation of a figure.
//!
//! Knobs: `CHAOS_RATE` (calls/s; default half the measured maximum), `CHAOS_EVENTS` (a
//! comma-separated subset of the names above, in any order; run in the order above).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use shippy_proto::consignment::v1::{
    Consignment, Container, shipping_service_client::ShippingServiceClient,
};
use shippy_test_support::{
    Cluster, ServiceProcess,
    chaos::{self, Sample, Summary},
    etcd::Etcd,
};
use tonic::{Code, Request, transport::Channel};

/// Undisturbed load before each event: its p99 is the baseline.
const BASELINE: Duration = Duration::from_secs(5);
/// Load watched after each event ends.
const AFTER: Duration = Duration::from_secs(10);
/// The shortest "during" window, for events that are over at once (a SIGKILL).
const MIN_DURING: Duration = Duration::from_secs(1);
/// The deadline every call of the load carries; the consignment service passes it on.
const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// Connections the load is spread over, as from several callers (one HTTP/2 connection would
/// cap the calls in flight at the server's stream limit and queue the rest in this process).
const CONNECTIONS: usize = 8;
/// Every event, in the order they run.
const EVENTS: [&str; 9] = [
    "rolling-restart",
    "sigkill",
    "sigstop",
    "user-restart",
    "vessel-errors",
    "overload",
    "routing-shift",
    "etcd-restart",
    "etcd-outage",
];
/// The two versions of the vessel service.
const BLUE: &str = "0.1.0";
const GREEN: &str = "0.2.0";

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "—".to_owned(), ms)
}

fn request(token: &str, i: u64) -> Request<Consignment> {
    let mut request = Request::new(Consignment {
        description: format!("chaos cargo {i}"),
        weight: 1_000 + (i % 50_000) as i32,
        containers: vec![Container {
            customer_id: "chaos".into(),
            origin: "Felixstowe".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request.set_timeout(CALL_DEADLINE);
    request
}

/// The calls of the run, recorded as they finish.
#[derive(Debug)]
struct Recorder {
    t0: Instant,
    samples: Mutex<Vec<Sample>>,
    /// (sent at, code, message) of failed calls, the first `MAX_FAILURES` only.
    failures: Mutex<Vec<(Duration, Code, String)>>,
    in_flight: AtomicUsize,
}

const MAX_FAILURES: usize = 20_000;

impl Recorder {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Sends one call and records it.
    async fn call(&self, mut client: ShippingServiceClient<Channel>, token: &str, i: u64) {
        let start = self.now();
        let sent = Instant::now();
        // The deadline is also enforced here, so a call that no server answers still ends.
        let outcome = tokio::time::timeout(
            CALL_DEADLINE + Duration::from_secs(1),
            client.create_consignment(request(token, i)),
        )
        .await;
        let latency = sent.elapsed();
        let failure = match outcome {
            Ok(Ok(_)) => None,
            Ok(Err(status)) => Some((status.code(), status.message().to_owned())),
            Err(_) => Some((Code::DeadlineExceeded, "no answer (client-side)".to_owned())),
        };
        if let Some((code, message)) = &failure {
            let mut failures = self.failures.lock().expect("lock");
            if failures.len() < MAX_FAILURES {
                failures.push((start, *code, message.clone()));
            }
        }
        self.samples.lock().expect("lock").push(Sample {
            start,
            latency,
            failure: failure.map(|(code, _)| code),
        });
    }
}

/// The open-loop load: `rate` calls a second, each on its own task, until `stop`.
#[derive(Debug, Clone)]
struct Load {
    rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Load {
    fn spawn(
        recorder: Arc<Recorder>,
        clients: Vec<ShippingServiceClient<Channel>>,
        token: Arc<str>,
        rate: u64,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let load = Self {
            rate: Arc::new(AtomicU64::new(rate)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (rate, stop) = (load.rate.clone(), load.stop.clone());
        let task = tokio::spawn(async move {
            // Calls owed so far: each millisecond tick adds rate × elapsed, so a late tick (a busy
            // machine) sends the calls it owes instead of dropping them.
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut owed = 0.0_f64;
            let mut last = Instant::now();
            let mut i = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = Instant::now();
                owed += rate.load(Ordering::Relaxed) as f64 * (now - last).as_secs_f64();
                last = now;
                while owed >= 1.0 {
                    owed -= 1.0;
                    i += 1;
                    let (recorder, token) = (recorder.clone(), token.clone());
                    let client = clients[(i as usize) % clients.len()].clone();
                    recorder.in_flight.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        recorder.call(client, &token, i).await;
                        recorder.in_flight.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            }
        });
        (load, task)
    }
}

/// The closed-loop maximum: `concurrency` callers, each sending its next call when the last one
/// is answered, for `period`; answered calls a second.
async fn max_rate(
    clients: &[ShippingServiceClient<Channel>],
    token: &str,
    concurrency: usize,
    period: Duration,
) -> f64 {
    let until = Instant::now() + period;
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let mut client = clients[worker % clients.len()].clone();
            let token = token.to_owned();
            tokio::spawn(async move {
                let mut ok = 0_u64;
                let mut i = worker as u64 * 1_000_000_000;
                while Instant::now() < until {
                    i += 1;
                    if client.create_consignment(request(&token, i)).await.is_ok() {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for worker in workers {
        ok += worker.await.unwrap_or(0);
    }
    ok as f64 / period.as_secs_f64()
}

/// A vessel instance and the version it registers.
#[derive(Debug)]
struct Vessel {
    process: ServiceProcess,
    version: &'static str,
}

/// Everything the events act on.
#[derive(Debug)]
struct Rig {
    etcd: Etcd,
    cluster: Cluster,
    vessels: Vec<Vessel>,
    users: Vec<ServiceProcess>,
    consignment: ServiceProcess,
    recorder: Arc<Recorder>,
    load: Load,
    rate: u64,
    max: f64,
}

/// When an event began and ended (from the start of the run), and what else it measured.
#[derive(Debug, Default)]
struct Marks {
    start: Duration,
    end: Duration,
    notes: Vec<String>,
}

/// What the issue asks of an event.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// No failed call.
    NoFailure,
    /// ≤ 0.1 % failed and p99 back under 2× baseline within 2 s.
    QuickRecovery,
    /// Goodput ≥ 90 % of the maximum, p99 of admitted calls ≤ 3× baseline.
    Overload,
    /// The issue names no figure; the design says no call should fail (retries, drain).
    NoneSet,
}

impl Target {
    fn of(event: &str) -> Self {
        match event {
            "rolling-restart" | "routing-shift" | "etcd-restart" | "etcd-outage" => Self::NoFailure,
            "sigkill" | "sigstop" => Self::QuickRecovery,
            "overload" => Self::Overload,
            _ => Self::NoneSet,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::NoFailure => "0 failed",
            Self::QuickRecovery => "≤ 0.1 % failed, recovered ≤ 2 s",
            Self::Overload => "goodput ≥ 90 % of max, admitted p99 ≤ 3× before",
            Self::NoneSet => "none set (design: 0 failed)",
        }
    }
}

/// When the parts of one event were, and what the policies did meanwhile.
#[derive(Debug)]
struct Timeline {
    event: &'static str,
    baseline_from: Duration,
    marks: Marks,
    during_end: Duration,
    after_end: Duration,
    policies: String,
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    event: &'static str,
    total: Summary,
    before: Summary,
    during: Summary,
    after: Summary,
    recovered: Option<Duration>,
    /// How the recovery was counted: from the event's start, or from its end (overload).
    recovered_from: &'static str,
    target: Target,
    met: &'static str,
    notes: Vec<String>,
    policies: String,
    errors: String,
}

/// Sums of the consignment service's policy counters (retries, ejections, ...), to tell per
/// event what the client policies and the server's shedding did.
fn policy_counters(consignment: &ServiceProcess) -> BTreeMap<&'static str, f64> {
    const NAMES: [(&str, &str); 6] = [
        ("retries", "shippy_client_retries_total"),
        (
            "budget exhausted",
            "shippy_client_retry_budget_exhausted_total",
        ),
        ("ejections", "shippy_balancer_ejections_total"),
        ("breaker rejected", "shippy_client_breaker_rejected_total"),
        (
            "deadline exhausted",
            "shippy_client_deadline_exhausted_total",
        ),
        ("shed", "shippy_server_shed_total"),
    ];
    let text = tokio::task::block_in_place(|| consignment.metrics()).unwrap_or_default();
    NAMES
        .iter()
        .map(|(label, name)| (*label, shippy_test_support::sum_samples(&text, name, &[])))
        .collect()
}

fn counter_delta(before: &BTreeMap<&str, f64>, after: &BTreeMap<&str, f64>) -> String {
    let parts: Vec<String> = after
        .iter()
        .filter_map(|(name, value)| {
            let delta = value - before.get(name).copied().unwrap_or(0.0);
            (delta > 0.0).then(|| format!("{name} {delta:.0}"))
        })
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

impl Rig {
    fn now(&self) -> Duration {
        self.recorder.now()
    }

    async fn start_vessel(&mut self, version: &'static str) -> anyhow::Result<Vessel> {
        let process = self
            .cluster
            .start_with(
                "vessel",
                &[
                    ("SHIPPY_SERVER__VERSION", version),
                    ("SHIPPY_STORE__BACKEND", "memory"),
                ],
            )
            .await?;
        Ok(Vessel { process, version })
    }

    /// Writes the consignment service's config-centre document.
    fn set_consignment_config(&self, name: &str, yaml: &str) -> anyhow::Result<()> {
        let path = self.cluster.dir().join(name);
        std::fs::write(&path, yaml)?;
        let output = tokio::task::block_in_place(|| {
            self.cluster
                .cli(["config", "set", "consignment", &path.display().to_string()])
        });
        anyhow::ensure!(
            output.status.success(),
            "shippy config set consignment {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// `FindAvailable` calls the vessels of `version` have served so far.
    fn served_by(&self, version: &str) -> f64 {
        self.vessels
            .iter()
            .filter(|v| v.version == version)
            .map(|v| {
                tokio::task::block_in_place(|| {
                    v.process.metric(
                        "grpc_server_handled_total",
                        &[("grpc_method", "FindAvailable")],
                    )
                })
                .unwrap_or(0.0)
            })
            .sum()
    }

    /// Runs one event under the load; its marks.
    async fn run(&mut self, event: &str) -> anyhow::Result<Marks> {
        let mut marks = Marks::default();
        match event {
            "rolling-restart" => {
                marks.start = self.now();
                for _ in 0..self.vessels.len() {
                    // The oldest first; its successor joins at the back.
                    let mut old = self.vessels.remove(0);
                    let took = Instant::now();
                    tokio::task::block_in_place(|| old.process.stop(Duration::from_secs(20)))?;
                    let new = self.start_vessel(old.version).await?;
                    marks.notes.push(format!(
                        "vessel {} replaced in {}",
                        old.version,
                        ms(took.elapsed())
                    ));
                    self.vessels.push(new);
                }
                marks.end = self.now();
            }
            "sigkill" => {
                let mut victim = self.vessels.remove(0);
                marks.start = self.now();
                tokio::task::block_in_place(|| victim.process.kill());
                let new = self.start_vessel(victim.version).await?;
                self.vessels.push(new);
                marks.end = self.now();
            }
            "sigstop" => {
                let victim = &self.vessels[0].process;
                marks.start = self.now();
                victim.freeze();
                tokio::time::sleep(Duration::from_secs(20)).await;
                victim.thaw();
                marks.end = self.now();
            }
            "user-restart" => {
                let mut old = self.users.remove(0);
                marks.start = self.now();
                tokio::task::block_in_place(|| old.stop(Duration::from_secs(20)))?;
                let new = self.cluster.start("user").await?;
                self.users.push(new);
                marks.end = self.now();
            }
            "vessel-errors" => {
                let victim = &self.vessels[0].process;
                if !chaos::has_fault_switch(victim) {
                    anyhow::bail!(
                        "skipped: shippy-vessel was built without the fault-injection feature (`make chaos` builds it)"
                    );
                }
                marks.start = self.now();
                chaos::toggle_fault(victim);
                tokio::time::sleep(Duration::from_secs(10)).await;
                chaos::toggle_fault(victim);
                marks.end = self.now();
            }
            "overload" => {
                marks.start = self.now();
                self.load.rate.store(self.rate * 3, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(10)).await;
                self.load.rate.store(self.rate, Ordering::Relaxed);
                marks.end = self.now();
            }
            "routing-shift" => {
                marks.start = self.now();
                let blue_before = self.served_by(BLUE);
                self.set_consignment_config(
                    "green.yaml",
                    &format!("client:\n  routing:\n    vessel: \"{BLUE}=0,{GREEN}=100\"\n"),
                )?;
                let set = Instant::now();
                // Blue has stopped getting calls once its count stays still over 200 ms (at the
                // load's rate that is hundreds of calls that went elsewhere).
                let mut last = (self.served_by(BLUE), Instant::now());
                let moved = loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let now = self.served_by(BLUE);
                    if now != last.0 {
                        last = (now, Instant::now());
                    } else if last.1.elapsed() >= Duration::from_millis(200) {
                        break Some(last.1.saturating_duration_since(set));
                    }
                    if set.elapsed() > Duration::from_secs(10) {
                        break None;
                    }
                };
                marks.end = self.now();
                marks.notes.push(match moved {
                    Some(took) => format!(
                        "blue ({BLUE}) got its last call {} after `shippy config set` returned ({:.0} calls to blue since the set began)",
                        ms(took),
                        last.0 - blue_before
                    ),
                    None => format!("blue ({BLUE}) still got calls 10 s after the switch"),
                });
            }
            "etcd-restart" => {
                marks.start = self.now();
                tokio::task::block_in_place(|| self.etcd.stop());
                self.etcd.wipe_data()?;
                self.etcd.start_again().await?;
                marks.end = self.now();
                marks.notes.push(format!(
                    "etcd back (empty) {} after it was stopped",
                    ms(marks.end - marks.start)
                ));
            }
            "etcd-outage" => {
                marks.start = self.now();
                tokio::task::block_in_place(|| self.etcd.stop());
                tokio::time::sleep(Duration::from_secs(30)).await;
                self.etcd.start_again().await?;
                marks.end = self.now();
            }
            other => anyhow::bail!("unknown event {other}"),
        }
        Ok(marks)
    }

    /// Sets up what an event needs before its baseline.
    async fn prepare(&mut self, event: &str) -> anyhow::Result<()> {
        if event == "routing-shift" {
            // All traffic on blue first; the baseline is measured that way.
            self.set_consignment_config(
                "blue.yaml",
                &format!("client:\n  routing:\n    vessel: \"{BLUE}=100,{GREEN}=0\"\n"),
            )?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(())
    }

    /// Undoes what an event left that the next ones must not see.
    async fn restore(&mut self, event: &str) -> anyhow::Result<()> {
        if event == "routing-shift" {
            // Back to every version, so etcd's events see all three vessels serving.
            self.set_consignment_config("any.yaml", "client:\n  routing: {}\n")?;
        }
        Ok(())
    }

    /// Runs `event` with its baseline and its settling time; when each part was.
    async fn measure(&mut self, event: &'static str) -> anyhow::Result<Timeline> {
        self.prepare(event).await?;
        let baseline_from = self.now();
        tokio::time::sleep(BASELINE).await;
        let counters = policy_counters(&self.consignment);
        let marks = self.run(event).await?;
        let during_end = marks.end.max(marks.start + MIN_DURING);
        let after_end = during_end + AFTER;
        tokio::time::sleep(after_end.saturating_sub(self.now())).await;
        let policies = counter_delta(&counters, &policy_counters(&self.consignment));
        self.restore(event).await?;
        Ok(Timeline {
            event,
            baseline_from,
            marks,
            during_end,
            after_end,
            policies,
        })
    }

    /// The figures of one event, from every call of the run (`samples` sorted by start).
    fn analyse(&self, timeline: Timeline, samples: &[Sample]) -> Row {
        let Timeline {
            event,
            baseline_from,
            marks,
            during_end,
            after_end,
            policies,
        } = timeline;
        let before = chaos::summarize(samples, baseline_from, marks.start);
        let during = chaos::summarize(samples, marks.start, during_end);
        let after = chaos::summarize(samples, during_end, after_end);
        let total = chaos::summarize(samples, marks.start, after_end);
        let target = Target::of(event);
        let (recovered_from, from) = match target {
            Target::Overload => ("end", marks.end),
            _ => ("start", marks.start),
        };
        let recovered = before
            .p99
            .and_then(|p99| chaos::time_to_recover(samples, from, after_end, p99 * 2));
        let mut notes = marks.notes;
        let met = match target {
            Target::NoFailure | Target::NoneSet => {
                if total.failed == 0 {
                    "yes"
                } else {
                    "no"
                }
            }
            Target::QuickRecovery => {
                let quick = recovered.is_some_and(|r| r <= Duration::from_secs(2));
                if total.failed_percent() <= 0.1 && quick {
                    "yes"
                } else {
                    "no"
                }
            }
            Target::Overload => {
                let seconds = (during_end - marks.start).as_secs_f64();
                let goodput = (during.calls - during.failed) as f64 / seconds;
                let shed = chaos::window(samples, marks.start, during_end)
                    .iter()
                    .filter(|s| {
                        matches!(s.failure, Some(Code::Unavailable | Code::ResourceExhausted))
                    })
                    .count();
                let admitted_ratio = match (during.p99_ok, before.p99) {
                    (Some(admitted), Some(base)) => admitted.as_secs_f64() / base.as_secs_f64(),
                    _ => f64::INFINITY,
                };
                notes.push(format!(
                    "offered {} calls/s for {seconds:.1} s; goodput {goodput:.0} calls/s = {:.0} % of the measured maximum {:.0}; shed {:.1} % of the calls (UNAVAILABLE or RESOURCE_EXHAUSTED); p99 of admitted calls {} = {admitted_ratio:.1}× the p99 before",
                    self.rate * 3,
                    goodput * 100.0 / self.max,
                    self.max,
                    shed as f64 * 100.0 / during.calls.max(1) as f64,
                    opt_ms(during.p99_ok),
                ));
                if goodput >= 0.9 * self.max && admitted_ratio <= 3.0 {
                    "yes"
                } else {
                    "no"
                }
            }
        };
        let errors = {
            let failures = self.recorder.failures.lock().expect("lock");
            let mut by_code: BTreeMap<String, (usize, String)> = BTreeMap::new();
            for (at, code, message) in failures.iter() {
                if *at >= marks.start && *at < after_end {
                    let entry = by_code
                        .entry(format!("{code:?}"))
                        .or_insert((0, message.clone()));
                    entry.0 += 1;
                }
            }
            by_code
                .into_iter()
                .map(|(code, (n, message))| format!("{n} × {code} (\"{message}\")"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        Row {
            event,
            total,
            before,
            during,
            after,
            recovered,
            recovered_from,
            target,
            met,
            notes,
            policies,
            errors,
        }
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| event | calls | failed | failed % | p99 before | p99 during | p99 after | time to recover | target | met |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for row in rows {
        let recovered = match row.recovered {
            Some(r) if row.recovered_from == "end" => format!("{} s after its end", r.as_secs()),
            Some(r) => format!("{} s", r.as_secs()),
            None => "not within the run".to_owned(),
        };
        println!(
            "| {} | {} | {} | {:.3} % | {} | {} | {} | {} | {} | {} |",
            row.event,
            row.total.calls,
            row.total.failed,
            row.total.failed_percent(),
            opt_ms(row.before.p99),
            opt_ms(row.during.p99),
            opt_ms(row.after.p99),
            recovered,
            row.target.text(),
            row.met,
        );
    }
    println!();
    for row in rows {
        println!("{}:", row.event);
        for note in &row.notes {
            println!("  {note}");
        }
        println!("  consignment's policies: {}", row.policies);
        if !row.errors.is_empty() {
            println!("  failed calls: {}", row.errors);
        }
        if row.after.failed > 0 {
            println!(
                "  {} of the failures were after the event was over",
                row.after.failed
            );
        }
    }
}

/// Copies the services' and etcd's logs where they outlive the run.
fn keep_logs(cluster: &Cluster) -> Option<PathBuf> {
    let to = std::env::var_os("CHAOS_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/chaos-logs"));
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir_all(&to).ok()?;
    for entry in std::fs::read_dir(cluster.dir()).ok()?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let _ = std::fs::copy(&path, to.join(entry.file_name()));
        }
    }
    to.canonicalize().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let wanted: Vec<&'static str> = match std::env::var("CHAOS_EVENTS") {
        Ok(list) if !list.trim().is_empty() => {
            let names: Vec<&str> = list.split(',').map(str::trim).collect();
            if let Some(unknown) = names.iter().find(|n| !EVENTS.contains(n)) {
                anyhow::bail!("unknown event {unknown:?} in CHAOS_EVENTS; known: {EVENTS:?}");
            }
            EVENTS
                .iter()
                .copied()
                .filter(|e| names.contains(e))
                .collect()
        }
        _ => EVENTS.to_vec(),
    };
    println!(
        "shippy chaos: binaries from {}",
        shippy_test_support::bin_dir().display()
    );

    let etcd = Etcd::start().await?;
    // A 10 s registration TTL (the default): a killed instance stays registered for up to 10 s,
    // so the clients' own ejection is what keeps calls off it.
    let mut cluster = Cluster::on_etcd(&etcd, 10).await?;
    cluster.set_env("SHIPPY_CONFIG_CENTRE__ENABLED", "true");
    // Warnings only, as in `make bench`: at `info` every call is a log line in two services, which
    // on 2 cores costs more than half the throughput. Ejections, broken connections and
    // registry trouble are warnings, so the logs still tell what happened.
    cluster.set_env("SHIPPY_LOG__LEVEL", "warn");
    // Users in the cluster's shared SQLite file, so both user instances know the caller; vessels
    // and consignments in memory (no fsync per write), as in `make bench`.
    let mut users = Vec::new();
    for _ in 0..2 {
        users.push(cluster.start("user").await?);
    }
    let mut rig_vessels = Vec::new();
    for version in [BLUE, BLUE, GREEN] {
        let process = cluster
            .start_with(
                "vessel",
                &[
                    ("SHIPPY_SERVER__VERSION", version),
                    ("SHIPPY_STORE__BACKEND", "memory"),
                ],
            )
            .await?;
        rig_vessels.push(Vessel { process, version });
    }
    let consignment = cluster
        .start_with("consignment", &[("SHIPPY_STORE__BACKEND", "memory")])
        .await?;
    if !chaos::has_fault_switch(&rig_vessels[0].process) {
        println!(
            "note: shippy-vessel has no fault switch (built without the fault-injection feature): vessel-errors is skipped"
        );
    }

    let token: Arc<str> = tokio::task::block_in_place(|| {
        cluster
            .sign_up_and_login("chaos@example.com")
            .trim()
            .to_owned()
    })
    .into();
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", consignment.address()))?
                .connect()
                .await?;
        clients.push(ShippingServiceClient::new(channel));
    }

    // Warm up (connections between the services, the token check), then the maximum.
    max_rate(&clients, &token, 32, Duration::from_secs(1)).await;
    let max = max_rate(&clients, &token, 32, Duration::from_secs(4)).await;
    let rate = env_f64("CHAOS_RATE").map_or((max / 2.0).round() as u64, |r| r as u64);
    println!(
        "maximum    {max:.0} CreateConsignment calls/s (closed loop, concurrency 32, 4 s)\nload       {rate} calls/s open loop, each call with a {} deadline",
        ms(CALL_DEADLINE)
    );

    let recorder = Arc::new(Recorder {
        t0: Instant::now(),
        samples: Mutex::new(Vec::new()),
        failures: Mutex::new(Vec::new()),
        in_flight: AtomicUsize::new(0),
    });
    let (load, load_task) = Load::spawn(recorder.clone(), clients, token, rate);
    let mut rig = Rig {
        etcd,
        cluster,
        vessels: rig_vessels,
        users,
        consignment,
        recorder: recorder.clone(),
        load,
        rate,
        max,
    };

    let mut timelines = Vec::new();
    for event in wanted {
        println!(
            "event      {event} ({:.0} s into the load)",
            rig.now().as_secs_f64()
        );
        match rig.measure(event).await {
            Ok(timeline) => timelines.push(timeline),
            Err(error) => println!("           {event}: {error:#}"),
        }
    }

    rig.load.stop.store(true, Ordering::Relaxed);
    let _ = load_task.await;
    let drained = Instant::now();
    while recorder.in_flight.load(Ordering::Relaxed) > 0 && drained.elapsed() < CALL_DEADLINE * 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut samples = recorder.samples.lock().expect("lock").clone();
    samples.sort_unstable_by_key(|s| s.start);
    let rows: Vec<Row> = timelines
        .into_iter()
        .map(|timeline| rig.analyse(timeline, &samples))
        .collect();
    println!(
        "\n{} calls in {:.0} s at {rate} calls/s (maximum measured: {max:.0} calls/s)",
        samples.len(),
        recorder.now().as_secs_f64()
    );
    print_table(&rows);
    if let Some(dir) = keep_logs(&rig.cluster) {
        println!("\nlogs of every process: {}", dir.display());
    }
    Ok(())
}
