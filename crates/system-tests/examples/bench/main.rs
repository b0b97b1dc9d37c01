//! `make bench`: start-up time, throughput, latency and memory of the whole system on this machine.
//!
//! Starts the release binaries (user, two vessel instances, consignment) on the local registry and
//! in-memory stores, then sends `CreateConsignment` calls — each one a full trip: consignment →
//! token verified in place with the user service's cached public keys → vessel (`FindAvailable`, balanced over two instances) → store — at a
//! fixed concurrency, and prints what it measured. It asserts nothing: numbers on a shared 2-core
//! machine vary, so they are for reading, not for failing builds.
//!
//! A second, separate part measures the memory of a log-in burst: a fresh user service (default
//! settings, except no per-client log-in limit, since every call comes from 127.0.0.1) gets
//! `BENCH_LOGINS` concurrent wrong-password `Auth` calls; it prints how they were answered and the
//! service's peak RSS and its RSS 2 s after the burst. The peak is bounded by
//! `auth.max_concurrent_hashes` × 19 MiB of argon2 working memory plus the idle process.
//!
//! It also prints the server CPU per call of each process (from /proc), and measures one hop
//! against its ceiling in the same run: the same `FindAvailable` load on a shippy vessel and on a
//! bare tonic server (`hop.rs`), in alternating rounds, so CPU, throughput and p99 read as ratios
//! to a bare hop (each round's ratio; the median and the range are printed).
//!
//! The keyed part repeats that load without and with an idempotency key per call (a fresh UUID,
//! as the CLI sends with every create), in alternating rounds, and prints what the key costs as
//! ratios; the SQLite part below does the same on the default store, where a key is a row more.
//!
//! The REST part sends the same load as JSON through `shippy-gateway` and prints its throughput,
//! p99 and the gateway's CPU per call as ratios to the gRPC figures (`rest.rs`).
//!
//! The same load then runs on a fresh system on the default SQLite store, where every write is
//! synced before its answer, printed as ratios to the memory store's figures.
//!
//! A third part measures what telemetry costs: the same load with telemetry off, metrics only, and
//! metrics plus traces exported to a real Jaeger at 10 % and 100 % sampling, interleaved over a few
//! rounds and printed as ratios to "off". A fourth measures the runtime's size the same way:
//! `server.worker_threads` at its default (one worker per core) and at 1.
//!
//! With `BENCH_STATIC_BIN_DIR` (set by `make bench`), it also prints the idle memory of the static
//! binaries the images ship.
//!
//! Knobs: `BENCH_CALLS` (default 5000), `BENCH_CONCURRENCY` (default 32), `BENCH_LOGINS` (default
//! 256), `BENCH_TELEMETRY_CALLS` (default 3000), `BENCH_TELEMETRY_ROUNDS` (default 3),
//! `BENCH_RUNTIME_CALLS` (default 5000), `BENCH_RUNTIME_ROUNDS` (default 4), `BENCH_HOP_CALLS`
//! (default 20000), `BENCH_HOP_ROUNDS` (default 3), `BENCH_KEYED_ROUNDS` (default 4).

mod hop;
mod rest;

use std::time::{Duration, Instant};

use nix::fcntl::PosixFadviseAdvice;

use shippy_proto::{
    consignment::v1::{Consignment, Container, shipping_service_client::ShippingServiceClient},
    user::v1::{User, user_service_client::UserServiceClient},
};
use shippy_test_support::{Cluster, ServiceProcess};
use tonic::Request;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Each process's CPU seconds so far (utime + stime from /proc; 0 for one that cannot be read).
fn cpu_seconds(processes: &[ServiceProcess]) -> Vec<f64> {
    processes
        .iter()
        .map(|p| hop::cpu_seconds(p.pid()).unwrap_or(0.0))
        .collect()
}

/// Each process's CPU seconds per call since `before` ([`cpu_seconds`]), over `calls` calls.
fn cpu_per_call(processes: &[ServiceProcess], before: &[f64], calls: usize) -> Vec<f64> {
    cpu_seconds(processes)
        .iter()
        .zip(before)
        .map(|(now, before)| (now - before) / calls as f64)
        .collect()
}

fn memory(processes: &[ServiceProcess]) -> String {
    processes
        .iter()
        .map(|p| {
            format!(
                "{} {:.1} MiB",
                p.service,
                p.status_kib("VmRSS").unwrap_or(0) as f64 / 1024.0
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Whether a create carries an idempotency key, as every create of the CLI does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyed {
    No,
    /// A fresh v4 UUID per call, the CLI's key.
    Fresh,
}

fn request(token: &str, i: usize) -> Request<Consignment> {
    let mut request = Request::new(Consignment {
        description: format!("bench cargo {i}"),
        weight: 1_000 + (i % 50_000) as i32,
        containers: vec![Container {
            customer_id: "bench".into(),
            origin: "Felixstowe".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

/// The idle memory of the binaries the images ship (static, musl; built by `make bench` into
/// `BENCH_STATIC_BIN_DIR`), started the same way as the release binaries above. The figures differ
/// from the dynamically linked build's mostly by the shared C library's pages mapped into it.
///
/// Each binary is first dropped from the page cache, so it starts as it does from an image on a
/// fresh node. Started straight after the linker wrote it, the same binary measured up to 1 MiB
/// more, most likely because the page cache still holds the file in the large pieces the linker
/// wrote and the kernel maps a whole piece at the first touch: an artefact of the build, not of
/// the service.
async fn static_idle_rss() -> anyhow::Result<()> {
    let Some(dir) = std::env::var_os("BENCH_STATIC_BIN_DIR").map(std::path::PathBuf::from) else {
        println!("idle RSS   static binaries: not measured (BENCH_STATIC_BIN_DIR unset)");
        return Ok(());
    };
    let mut cluster = Cluster::local()?;
    cluster.use_binaries_from(dir.clone());
    cluster.set_env("SHIPPY_LOG__LEVEL", "warn");
    cluster.set_env("SHIPPY_STORE__BACKEND", "memory");
    let mut processes = Vec::new();
    for service in ["user", "vessel", "consignment", "gateway"] {
        let binary = std::fs::File::open(dir.join(format!("shippy-{service}")))?;
        nix::fcntl::posix_fadvise(&binary, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)?;
        processes.push(cluster.start(service).await?);
    }
    println!(
        "idle RSS   static (the images' binaries): {}",
        memory(&processes)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some(hop::BARE_SERVER_ARG) {
        return hop::serve_bare().await;
    }
    let calls = env_usize("BENCH_CALLS", 5_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 32).max(1);
    println!(
        "shippy bench: binaries from {}",
        shippy_test_support::bin_dir().display()
    );

    let mut cluster = Cluster::local()?;
    cluster.set_env("SHIPPY_LOG__LEVEL", "warn");
    // The in-memory store, as in every earlier run: these figures are about the services and the
    // calls between them, not about a disk's fsync (the default SQLite store syncs every write).
    cluster.set_env("SHIPPY_STORE__BACKEND", "memory");
    let mut processes = Vec::new();
    for service in ["user", "vessel", "vessel", "consignment"] {
        let start = Instant::now();
        processes.push(cluster.start(service).await?);
        println!(
            "start-up   {service:<12} {:>7.1} ms to SERVING (spawn, register, health)",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    println!("idle RSS   {}", memory(&processes));
    static_idle_rss().await?;

    let token = cluster.sign_up_and_login("bench@example.com");
    let token = token.trim().to_owned();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", processes[3].address()))?
            .connect()
            .await?;
    let client = ShippingServiceClient::new(channel);
    for i in 0..200 {
        client
            .clone()
            .create_consignment(request(&token, i))
            .await?;
    }

    let cpu_before = cpu_seconds(&processes);
    let Load {
        elapsed,
        latencies,
        failures,
    } = load(&client, &token, calls, concurrency).await?;
    let process_cpu = cpu_per_call(&processes, &cpu_before, calls);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "load       {calls} CreateConsignment calls, concurrency {concurrency}: {:.0} calls/s, {failures} failed",
        calls as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency    p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0))
    );
    println!("loaded RSS {}", memory(&processes));
    let grpc_rps = calls as f64 / elapsed.as_secs_f64();
    let grpc_p99 = percentile(&latencies, 0.99);
    let us = |seconds: f64| seconds * 1e6;
    let per_process: Vec<String> = processes
        .iter()
        .zip(&process_cpu)
        .map(|(p, cpu)| format!("{} {:.0} µs", p.service, us(*cpu)))
        .collect();
    let flow_cpu: f64 = process_cpu.iter().sum();
    println!(
        "flow CPU   per CreateConsignment: {} = {:.0} µs",
        per_process.join(", "),
        us(flow_cpu)
    );

    keyed_creates(
        "memory store",
        &client,
        &token,
        &processes,
        calls,
        concurrency,
    )
    .await?;

    // The same load over REST, through the gateway.
    // Every call comes from this one address: no per-client rate limit for the bench.
    let gateway = cluster
        .start_with("gateway", &[("SHIPPY_GATEWAY__RATE__PER_SECOND", "0")])
        .await?;
    let url = gateway
        .http_url()
        .ok_or_else(|| anyhow::anyhow!("the gateway registered no HTTP address"))?;
    rest::load(&url, &token, 500, concurrency).await?;
    let gateway_cpu = hop::cpu_seconds(gateway.pid()).unwrap_or(0.0);
    let rest = rest::load(&url, &token, calls, concurrency).await?;
    let gateway_cpu = (hop::cpu_seconds(gateway.pid()).unwrap_or(0.0) - gateway_cpu) / calls as f64;
    let rest_rps = calls as f64 / rest.elapsed.as_secs_f64();
    println!(
        "REST       {calls} POST /v1/consignments through the gateway, concurrency {concurrency}: {:.0} calls/s ({:.2} of gRPC), p99 {:.2} ms ({:.2}x gRPC's), gateway {:.0} µs CPU/call, {} failed; gateway RSS {}",
        rest_rps,
        rest_rps / grpc_rps,
        ms(percentile(&rest.latencies, 0.99)),
        percentile(&rest.latencies, 0.99).as_secs_f64() / grpc_p99.as_secs_f64(),
        gateway_cpu * 1e6,
        rest.failures,
        memory(std::slice::from_ref(&gateway)),
    );
    processes.push(gateway);

    // One hop against its ceiling, measured now: the same FindAvailable load on a shippy vessel
    // and on a bare tonic server, in alternating rounds, so drift of the machine's speed during
    // the run falls on both sides; the ratios are each round's, their median printed with their
    // range.
    let hop_calls = env_usize("BENCH_HOP_CALLS", 20_000);
    let hop_rounds = env_usize("BENCH_HOP_ROUNDS", 3).max(1);
    let bare = hop::BareServer::start()?;
    let mut rounds = Vec::with_capacity(hop_rounds);
    let vessel = &processes[1];
    for round in 0..hop_rounds {
        let bare_side = || hop_load(&bare.address, bare.pid(), hop_calls, concurrency);
        let shippy_side = || hop_load(vessel.address(), vessel.pid(), hop_calls, concurrency);
        let hops = if round % 2 == 0 {
            let bare_hop = bare_side().await?;
            [bare_hop, shippy_side().await?]
        } else {
            let shippy_hop = shippy_side().await?;
            [bare_side().await?, shippy_hop]
        };
        rounds.push(hops);
    }
    drop(bare);
    // Median and range over the rounds of a figure of the two hops (bare, shippy).
    let over =
        |f: &dyn Fn(&Hop, &Hop) -> f64| spread(rounds.iter().map(|[b, s]| f(b, s)).collect());
    let bare_rps = over(&|b, _| b.rps).median;
    let bare_p99 = over(&|b, _| b.p99.as_secs_f64()).median;
    let bare_cpu = over(&|b, _| b.cpu_per_call).median;
    let rps = over(&|b, s| s.rps / b.rps);
    let p99 = over(&|b, s| s.p99.as_secs_f64() / b.p99.as_secs_f64());
    let cpu = over(&|b, s| s.cpu_per_call / b.cpu_per_call);
    println!(
        "one hop    FindAvailable x {hop_calls}, concurrency {concurrency}, {hop_rounds} alternating rounds (medians [range]): bare tonic {bare_rps:.0} calls/s, p99 {:.2} ms, {:.0} µs CPU/call; shippy vessel {:.0} calls/s ({rps} of bare), p99 {:.2} ms ({p99}x), {:.0} µs CPU/call ({cpu} bare hops)",
        bare_p99 * 1e3,
        us(bare_cpu),
        over(&|_, s| s.rps).median,
        over(&|_, s| s.p99.as_secs_f64()).median * 1e3,
        us(over(&|_, s| s.cpu_per_call).median),
    );
    println!(
        "ratios     CreateConsignment: server CPU per call {:.1} bare hops, p99 {:.2}x a bare hop's",
        flow_cpu / bare_cpu,
        percentile(&latencies, 0.99).as_secs_f64() / bare_p99
    );

    for process in &mut processes {
        let start = Instant::now();
        let status = process.stop(Duration::from_secs(20))?;
        println!(
            "shutdown   {:<12} {:>7.1} ms after SIGTERM, exit {} (includes the {} ms drain)",
            process.service,
            ms(start.elapsed()),
            status.code().unwrap_or(-1),
            1_000
        );
    }

    default_store(calls, concurrency, grpc_rps, flow_cpu).await?;
    telemetry_overhead(&mut cluster, concurrency).await?;
    runtime_size(&mut cluster, concurrency).await?;
    login_burst(&mut cluster, env_usize("BENCH_LOGINS", 256)).await
}

/// The same `CreateConsignment` load on the default store, SQLite, where every write is synced to
/// disk before it is answered: what durability costs, as ratios to the memory store's figures
/// (`memory_rps`, `memory_cpu` per call) measured above. The file is on this machine's disk, in the
/// cluster's own directory.
async fn default_store(
    calls: usize,
    concurrency: usize,
    memory_rps: f64,
    memory_cpu: f64,
) -> anyhow::Result<()> {
    let mut cluster = Cluster::local()?;
    cluster.set_env("SHIPPY_LOG__LEVEL", "warn");
    let mut processes = Vec::new();
    for service in ["user", "vessel", "consignment"] {
        processes.push(cluster.start(service).await?);
    }
    let token = cluster.sign_up_and_login("bench-sqlite@example.com");
    let token = token.trim().to_owned();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", processes[2].address()))?
            .connect()
            .await?;
    let client = ShippingServiceClient::new(channel);
    load(&client, &token, 500, concurrency).await?;
    let cpu_before = cpu_seconds(&processes);
    let measured = load(&client, &token, calls, concurrency).await?;
    let cpu: f64 = cpu_per_call(&processes, &cpu_before, calls).iter().sum();
    let rps = calls as f64 / measured.elapsed.as_secs_f64();
    println!(
        "SQLite     the same {calls} calls on the default store (every write synced before its answer): {rps:.0} calls/s ({:.2} of memory's), p99 {:.2} ms, flow CPU {:.0} µs/call ({:.2}x memory's), {} failed",
        rps / memory_rps,
        percentile(&measured.latencies, 0.99).as_secs_f64() * 1e3,
        cpu * 1e6,
        cpu / memory_cpu,
        measured.failures,
    );
    keyed_creates("SQLite", &client, &token, &processes, calls, concurrency).await?;
    for mut process in processes {
        process.stop(Duration::from_secs(20))?;
    }
    Ok(())
}

/// The median of some rounds' values and their range; prints as `0.91 [0.85-0.97]`.
struct Spread {
    median: f64,
    low: f64,
    high: f64,
}

fn spread(mut values: Vec<f64>) -> Spread {
    values.sort_by(f64::total_cmp);
    Spread {
        median: values[values.len() / 2],
        low: values[0],
        high: values[values.len() - 1],
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} [{:.2}-{:.2}]", self.median, self.low, self.high)
    }
}

/// What a one-hop load measured.
struct Hop {
    rps: f64,
    p99: Duration,
    cpu_per_call: f64,
}

/// `calls` FindAvailable calls from `concurrency` workers to the server at `address` (process
/// `pid`, whose CPU is read before and after).
async fn hop_load(
    address: &str,
    pid: u32,
    calls: usize,
    concurrency: usize,
) -> anyhow::Result<Hop> {
    use shippy_proto::vessel::v1::{Specification, vessel_service_client::VesselServiceClient};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    let client = VesselServiceClient::new(channel);
    let spec = || Specification {
        capacity: 1,
        max_weight: 1,
    };
    for _ in 0..500 {
        client.clone().find_available(spec()).await?;
    }
    let cpu_before = hop::cpu_seconds(pid).unwrap_or(0.0);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let share = calls / concurrency + usize::from(worker < calls % concurrency);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for _ in 0..share {
                let sent = Instant::now();
                let _ = client.clone().find_available(spec()).await;
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(calls);
    for worker in workers {
        latencies.append(&mut worker.await?);
    }
    let elapsed = started.elapsed();
    let cpu = hop::cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    latencies.sort_unstable();
    Ok(Hop {
        rps: calls as f64 / elapsed.as_secs_f64(),
        p99: percentile(&latencies, 0.99),
        cpu_per_call: cpu / calls as f64,
    })
}

/// What one closed-loop load measured.
struct Load {
    elapsed: Duration,
    /// Every call's latency, sorted.
    latencies: Vec<Duration>,
    failures: usize,
}

/// Sends `calls` CreateConsignment calls from `concurrency` workers, each waiting for its answer
/// before sending the next.
async fn load(
    client: &ShippingServiceClient<tonic::transport::Channel>,
    token: &str,
    calls: usize,
    concurrency: usize,
) -> anyhow::Result<Load> {
    load_keyed(client, token, calls, concurrency, Keyed::No).await
}

/// [`load`], each call carrying an idempotency key or not.
async fn load_keyed(
    client: &ShippingServiceClient<tonic::transport::Channel>,
    token: &str,
    calls: usize,
    concurrency: usize,
    keyed: Keyed,
) -> anyhow::Result<Load> {
    let (client, token) = (client.clone(), token.to_owned());
    drive(calls, concurrency, move |n| {
        let (mut client, token) = (client.clone(), token.clone());
        async move {
            let mut request = request(&token, n);
            if keyed == Keyed::Fresh {
                let key = uuid::Uuid::new_v4().to_string();
                request.metadata_mut().insert(
                    shippy_proto::idempotency::METADATA_KEY,
                    key.parse().expect("a UUID is a header value"),
                );
            }
            client.create_consignment(request).await.is_ok()
        }
    })
    .await
}

/// What an idempotency key costs a create: the same load without and with a fresh key per call
/// (as the CLI sends), on the running system `processes` behind `client`, in alternating rounds
/// (`BENCH_KEYED_ROUNDS`, default 4; the order reversed every other round). Prints the keyed
/// calls' medians as ratios to the unkeyed ones' of the same rounds.
async fn keyed_creates(
    label: &str,
    client: &ShippingServiceClient<tonic::transport::Channel>,
    token: &str,
    processes: &[ServiceProcess],
    calls: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let rounds = env_usize("BENCH_KEYED_ROUNDS", 4).max(1);
    // (calls/s, p99, CPU per call) of the unkeyed and the keyed side, per round.
    let mut ratios: [Vec<f64>; 3] = Default::default();
    let mut keyed_cpu = Vec::new();
    let mut failures = 0;
    for round in 0..rounds {
        let mut sides = [Keyed::No, Keyed::Fresh];
        if round % 2 == 1 {
            sides.reverse();
        }
        let mut measured = [[0.0; 3]; 2];
        for keyed in sides {
            let cpu_before = cpu_seconds(processes);
            let load = load_keyed(client, token, calls, concurrency, keyed).await?;
            let cpu: f64 = cpu_per_call(processes, &cpu_before, calls).iter().sum();
            failures += load.failures;
            measured[usize::from(keyed == Keyed::Fresh)] = [
                calls as f64 / load.elapsed.as_secs_f64(),
                percentile(&load.latencies, 0.99).as_secs_f64(),
                cpu,
            ];
        }
        let [plain, keyed] = measured;
        for (k, ratio) in ratios.iter_mut().enumerate() {
            ratio.push(keyed[k] / plain[k]);
        }
        keyed_cpu.push((keyed[2] - plain[2]) * 1e6);
    }
    let [rps, p99, cpu] = ratios.map(spread);
    println!(
        "keyed      {label}: CreateConsignment with a fresh idempotency key per call, against none, {calls} calls x {rounds} alternating rounds (medians [range]): {rps} of the calls/s, p99 {p99}x, flow CPU {cpu}x ({:+.0} µs/call), {failures} failed",
        spread(keyed_cpu).median,
    );
    Ok(())
}

/// Makes `calls` calls from `concurrency` workers, each waiting for its answer before making the
/// next; `call(n)` makes call number `n` (unique per call) and says whether it succeeded.
async fn drive<F, Fut>(calls: usize, concurrency: usize, call: F) -> anyhow::Result<Load>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let call = call.clone();
        let share = calls / concurrency + usize::from(worker < calls % concurrency);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            let mut failures = 0usize;
            for i in 0..share {
                let sent = Instant::now();
                if !call(worker * 1_000_000 + i).await {
                    failures += 1;
                }
                latencies.push(sent.elapsed());
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::with_capacity(calls);
    let mut failures = 0;
    for worker in workers {
        let (mut l, f) = worker.await?;
        latencies.append(&mut l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Load {
        elapsed,
        latencies,
        failures,
    })
}

/// What telemetry costs: the same load with telemetry off (no metrics recorded, no traces),
/// metrics only, and metrics with traces exported to a real Jaeger at 10 % and 100 % sampling,
/// as ratios to "off" ([`compare`]; `BENCH_TELEMETRY_CALLS`, `BENCH_TELEMETRY_ROUNDS`).
async fn telemetry_overhead(cluster: &mut Cluster, concurrency: usize) -> anyhow::Result<()> {
    let jaeger = shippy_test_support::jaeger::Jaeger::start()?;
    let endpoint = jaeger.otlp_endpoint();
    let modes = [
        Mode {
            name: "off",
            env: &[("SHIPPY_ADMIN__METRICS", "false")],
        },
        Mode {
            name: "metrics",
            env: &[],
        },
        Mode {
            name: "metrics + 10 % traces",
            env: &[
                ("SHIPPY_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
                ("SHIPPY_TELEMETRY__SAMPLING_RATIO", "0.1"),
            ],
        },
        Mode {
            name: "metrics + 100 % traces",
            env: &[
                ("SHIPPY_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
                ("SHIPPY_TELEMETRY__SAMPLING_RATIO", "1.0"),
            ],
        },
    ];
    let comparison = Comparison {
        calls: env_usize("BENCH_TELEMETRY_CALLS", 3_000),
        rounds: env_usize("BENCH_TELEMETRY_ROUNDS", 3),
        concurrency,
    };
    compare(cluster, "telemetry", &modes, &comparison).await
}

/// What the runtime's size does: the same load with `server.worker_threads` at its default (one
/// worker per core this process may use) and at 1, as ratios to the default ([`compare`];
/// `BENCH_RUNTIME_CALLS`, `BENCH_RUNTIME_ROUNDS`). On a machine whose cores the three services and
/// the load share, one worker each spends less CPU per call: its workers do not wake and steal
/// from each other (docs/PERFORMANCE.md, "how many threads a service runs").
async fn runtime_size(cluster: &mut Cluster, concurrency: usize) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let default = format!("default ({cores} workers)");
    let modes = [
        Mode {
            name: &default,
            env: &[],
        },
        Mode {
            name: "worker_threads=1",
            env: &[("SHIPPY_SERVER__WORKER_THREADS", "1")],
        },
    ];
    let comparison = Comparison {
        calls: env_usize("BENCH_RUNTIME_CALLS", 5_000),
        rounds: env_usize("BENCH_RUNTIME_ROUNDS", 4),
        concurrency,
    };
    compare(cluster, "runtime", &modes, &comparison).await
}

/// One set of settings a [`compare`] starts the services with.
struct Mode<'a> {
    name: &'a str,
    env: &'a [(&'a str, &'a str)],
}

/// The load of each mode in each round of a [`compare`].
struct Comparison {
    calls: usize,
    rounds: usize,
    concurrency: usize,
}

/// The same `CreateConsignment` load on a fresh user, vessel and consignment started with each
/// mode's settings, the modes interleaved over rounds (their order reversed every other round, so
/// that no mode always runs first). Prints each mode's medians (calls/s, p99, server CPU per call
/// of the three processes) and their ratios to the first mode's, so a ratio, not an absolute
/// that moves with the machine, carries the result.
async fn compare(
    cluster: &mut Cluster,
    title: &str,
    modes: &[Mode<'_>],
    comparison: &Comparison,
) -> anyhow::Result<()> {
    let Comparison {
        calls,
        rounds,
        concurrency,
    } = *comparison;
    let rounds = rounds.max(1);
    // (calls/s, p99 in ms, CPU per call in µs) per mode, one entry per round.
    let mut results: Vec<Vec<[f64; 3]>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..modes.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let mut processes = Vec::new();
            for service in ["user", "vessel", "consignment"] {
                processes.push(cluster.start_with(service, modes[index].env).await?);
            }
            let channel = tonic::transport::Endpoint::from_shared(format!(
                "http://{}",
                processes[2].address()
            ))?
            .connect()
            .await?;
            let client = ShippingServiceClient::new(channel);
            // A fresh (in-memory) user service: a user of its own.
            let token = cluster.sign_up_and_login(&format!("{title}-{round}-{index}@example.com"));
            let token = token.trim();
            // Warm-up: connections, caches, the first sampled traces.
            load(&client, token, 200, concurrency).await?;
            let cpu_before = cpu_seconds(&processes);
            let measured = load(&client, token, calls, concurrency).await?;
            let cpu_per_call: f64 = cpu_per_call(&processes, &cpu_before, calls).iter().sum();
            results[index].push([
                calls as f64 / measured.elapsed.as_secs_f64(),
                percentile(&measured.latencies, 0.99).as_secs_f64() * 1e3,
                cpu_per_call * 1e6,
            ]);
            for process in &mut processes {
                process.stop(Duration::from_secs(20))?;
            }
        }
    }
    let summary: Vec<[f64; 3]> = results
        .iter()
        .map(|runs| std::array::from_fn(|k| spread(runs.iter().map(|r| r[k]).collect()).median))
        .collect();
    let [base_rps, base_p99, base_cpu] = summary[0];
    println!(
        "{title:<10} CreateConsignment, {calls} calls x {rounds} interleaved rounds, concurrency {concurrency} (medians; ratios to {}):",
        modes[0].name
    );
    for (mode, [rps, p99, cpu]) in modes.iter().zip(&summary) {
        println!(
            "           {:<24} {rps:>7.0} calls/s ({:>5.1} %), p99 {p99:>6.2} ms ({:.2}x), server CPU {cpu:>4.0} µs/call ({:.2}x)",
            mode.name,
            rps / base_rps * 100.0,
            p99 / base_p99,
            cpu / base_cpu
        );
    }
    Ok(())
}

/// The memory of a burst of `logins` concurrent wrong-password log-ins against a fresh user
/// service: how the calls were answered, the peak RSS, and the RSS 2 s after the burst.
async fn login_burst(cluster: &mut Cluster, logins: usize) -> anyhow::Result<()> {
    let mut user = cluster
        .start_with("user", &[("SHIPPY_AUTH__LOGIN_PER_CLIENT_PER_MINUTE", "0")])
        .await?;
    let mib = |kib: Option<u64>| kib.unwrap_or(0) as f64 / 1024.0;
    let idle = user.status_kib("VmRSS");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", user.address()))?
        .connect()
        .await?;
    let client = UserServiceClient::new(channel);
    let started = Instant::now();
    let calls: Vec<_> = (0..logins)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut request = Request::new(User {
                    email: format!("burst{i}@example.com"),
                    password: "wrong horse".into(),
                    ..Default::default()
                });
                request.set_timeout(Duration::from_secs(10));
                match client.auth(request).await {
                    Ok(_) => "OK".to_owned(),
                    Err(status) => format!("{:?}", status.code()),
                }
            })
        })
        .collect();
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for call in calls {
        *answers.entry(call.await?).or_default() += 1;
    }
    let took = started.elapsed();
    let peak = user.status_kib("VmHWM");
    let during = user.status_kib("VmRSS");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = user.status_kib("VmRSS");
    println!(
        "logins     {logins} concurrent wrong-password Auth calls in {:.0} ms: {answers:?}",
        took.as_secs_f64() * 1e3
    );
    println!(
        "login RSS  user idle {:.1} MiB, peak {:.1} MiB, at the end {:.1} MiB, 2 s after {:.1} MiB",
        mib(idle),
        mib(peak),
        mib(during),
        mib(after)
    );
    user.stop(Duration::from_secs(20))?;
    Ok(())
}
