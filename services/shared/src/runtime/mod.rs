//! Running a service: the one skeleton every service binary shares.
//!
//! A service implements [`Service`] (who it is, its settings type, and `build`, which makes its
//! gRPC routes from a [`Context`]); its `main.rs` is one call, [`main`]. Everything else is here,
//! once: the command line ([`args`]), layered settings and the config centre feeding the live
//! settings, logging ([`telemetry`]), one etcd connection, discovery, binding the port ([`net`]),
//! the server stack with its layers ([`limits`]), readiness, registration and orderly shutdown.
//! Tests call [`launch`] or [`build`] and get an [`Application`] bound to its port.

mod adaptive;
mod admin;
mod args;
mod codec_errors;
mod connections;
// Compiled for the unit tests too, so the switch is tested in every `cargo test`.
#[cfg(any(test, feature = "fault-injection"))]
mod fault;
mod host;
pub mod http;
mod limits;
mod net;
mod telemetry;
mod tracing_layer;

use std::{future::Future, path::Path, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::watch;
use tonic::service::Routes;
use tonic_health::pb::health_check_response::ServingStatus;

pub use connections::client_key;
pub use host::{Application, HostError, shutdown_signal};

use crate::{
    catalog::ServiceSpec,
    centre::ConfigCentre,
    config::{self, Layered, Live, ServiceSettings, live},
    discovery::{
        self, DiscoveryError, Registry,
        balance::BalancedChannel,
        trace::{EdgeSampler, Sampling, Tracing},
    },
    etcd::Etcd,
    probe,
    store::{self, StoreError, mongo},
};

use self::{args::ServiceArgs, limits::Limits};

/// Every service allocates with mimalloc rather than the C library's allocator: under
/// `CreateConsignment` load glibc's malloc/free were a fifth of the consignment service's CPU, and
/// musl's (the images are static musl builds) is slower still. Measured in
/// docs/PERFORMANCE.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What a service is and how its routes are built; the rest of its life is shared.
pub trait Service: 'static {
    /// Its row of the service table.
    const SPEC: &'static ServiceSpec;
    /// Its version (the crate's `CARGO_PKG_VERSION`), registered in discovery.
    const VERSION: &'static str;
    /// Its settings type.
    type Settings: ServiceSettings;
    /// Methods (names, e.g. `Auth`) whose handlers bound their own concurrency and answer
    /// `RESOURCE_EXHAUSTED` when busy: the adaptive load shedding leaves them alone.
    const SELF_LIMITED: &'static [&'static str] = &[];

    /// Builds the service's gRPC routes: opens its store, connects the services it calls, and
    /// subscribes whatever has live settings. Runs after the port is bound, before serving.
    fn build(
        context: &mut Context<Self::Settings>,
    ) -> impl Future<Output = anyhow::Result<Routes>> + Send;
}

/// What a service's `build` gets: its live settings, discovery, and readiness.
#[derive(Debug)]
pub struct Context<S> {
    settings: Live<S>,
    registry: Arc<dyn Registry>,
    gates: Vec<watch::Receiver<bool>>,
    http: Option<http::HttpSite>,
}

impl<S: ServiceSettings> Context<S> {
    /// The settings as they are now.
    pub fn settings(&self) -> Arc<S> {
        Arc::clone(&self.settings.borrow())
    }

    /// A receiver of one part of the settings, updated when that part changes at run time.
    pub fn watch<T, F>(&self, part: F) -> watch::Receiver<T>
    where
        T: PartialEq + Send + Sync + 'static,
        F: Fn(&S) -> T + Send + 'static,
    {
        live::project(&self.settings, part)
    }

    /// A balanced channel to every live instance of `target`, with the live `client.*` deadline.
    pub async fn channel(&self, target: &ServiceSpec) -> Result<BalancedChannel, DiscoveryError> {
        let client = self.watch(|s| s.common().client.clone());
        BalancedChannel::discover(self.registry.as_ref(), target.name, client).await
    }

    /// How this service decides, where a call arrives, whether its trace is sampled (for a
    /// service with an edge of its own, such as the gateway's HTTP listener).
    pub fn edge_sampler(&self) -> EdgeSampler {
        EdgeSampler::configured(&self.settings().common().telemetry)
    }

    /// The discovery registry, for a service that shows or watches other services' instances.
    pub fn registry(&self) -> Arc<dyn Registry> {
        Arc::clone(&self.registry)
    }

    /// The store backend that `store.*` selects (MongoDB is not contacted yet).
    pub async fn store(&self) -> Result<store::Backend, StoreError> {
        store::Backend::open(&self.settings().common().store).await
    }

    /// (Feature `http`.) Binds `listen.host:listen.port` (port 0 allowed) and serves `router` there over HTTP/1.1
    /// and h2c beside the gRPC port, for as long as the service runs (see [`http`]); the
    /// instance is registered with it as `http_address`. Returns the bound address. Connections
    /// from the addresses `proxies` names (through which many clients come) are not held to
    /// `listen.max_connections_per_client`.
    #[cfg(feature = "http")]
    pub async fn serve_http(
        &mut self,
        listen: &crate::config::ServerSettings,
        router: axum::Router,
        proxies: impl Fn(std::net::IpAddr) -> bool + Send + Sync + 'static,
    ) -> Result<std::net::SocketAddr, HostError> {
        let bound = net::bind(listen).await.map_err(|source| HostError::Bind {
            addr: format!("{}:{}", listen.host, listen.port),
            source,
        })?;
        let local = bound.local_addr;
        self.http = Some(http::HttpSite {
            listener: bound.listener,
            advertised: bound.advertised,
            router,
            bounds: listen.clone(),
            proxies: connections::Exempt::by(proxies),
        });
        Ok(local)
    }

    /// Reports SERVING only while `ready` is `true` (and every other such condition holds).
    pub fn ready_when(&mut self, ready: watch::Receiver<bool>) {
        self.gates.push(ready);
    }

    /// Stays NOT_SERVING until `db` answers and `init` (indexes, seed data) has succeeded once,
    /// and while `db` does not answer afterwards.
    pub fn supervise_mongo<F, Fut>(&mut self, db: mongodb::Database, init: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        self.ready_when(mongo::supervise(db, init));
    }
}

/// Builds `Svc` with live `settings` (a test may keep their sender to change them) and the
/// process's etcd connection, if its settings need one: opens discovery, binds the port, builds
/// the routes.
pub async fn build<Svc: Service>(
    settings: Live<Svc::Settings>,
    etcd: Option<Etcd>,
) -> anyhow::Result<Application> {
    let current = Arc::clone(&settings.borrow());
    let common = current.common();
    let registry = discovery::open(&common.registry, etcd.as_ref())?;
    let bound = net::bind(&common.server)
        .await
        .map_err(|source| HostError::Bind {
            addr: format!("{}:{}", common.server.host, common.server.port),
            source,
        })?;
    let limits = Limits::follow(
        live::project(&settings, |s| s.common().limits.clone()),
        adaptive::methods_of(Svc::SPEC.grpc_service, Svc::SELF_LIMITED),
    );
    let mut context = Context {
        settings,
        registry: Arc::clone(&registry),
        gates: Vec::new(),
        http: None,
    };
    let routes = Svc::build(&mut context).await?;
    let host = host::ServiceHost {
        spec: Svc::SPEC,
        version: Svc::VERSION,
        bound,
        registry,
        shutdown: common.shutdown.clone(),
        gates: context.gates,
        http: context.http,
        limits,
        server: common.server.clone(),
        admin: std::net::SocketAddr::new(
            common.admin.host.unwrap_or(common.server.host),
            common.admin.port,
        ),
        sampler: EdgeSampler::configured(&common.telemetry),
    };
    Ok(Application::new(host, routes))
}

/// Builds `Svc` with fixed `settings`, connecting etcd when they need it (for tests and tools).
pub async fn launch<Svc: Service>(settings: Svc::Settings) -> anyhow::Result<Application> {
    let etcd = Etcd::when_needed(settings.common()).await?;
    build::<Svc>(live::fixed(Arc::new(settings)), etcd).await
}

/// The whole life of a service binary: parse the command line, load the settings, set up logging,
/// build, serve until SIGTERM/SIGINT, shut down in order. Errors are printed as one sentence and
/// give a non-zero exit code.
pub fn main<Svc: Service>() -> ExitCode {
    let args = ServiceArgs::parse_for(Svc::SPEC, Svc::VERSION);
    // The file and environment layers are read before the runtime is built, since they size it
    // (`server.worker_threads`); the config centre is layered on top once the runtime runs.
    let failed = |error: anyhow::Error| {
        eprintln!("{}: {error:#}", Svc::SPEC.binary);
        ExitCode::FAILURE
    };
    let base = match config::layered_checked::<Svc::Settings>(args.config.as_deref(), None, None) {
        Ok(base) => base,
        Err(error) => return failed(error.into()),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(workers) = base.settings.common().server.worker_threads() {
        runtime.worker_threads(workers);
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            return failed(anyhow::Error::new(error).context("cannot start the async runtime"));
        }
    };
    match runtime.block_on(run::<Svc>(args, base)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            failed(error)
        }
    }
}

async fn run<Svc: Service>(args: ServiceArgs, base: Layered<Svc::Settings>) -> anyhow::Result<()> {
    // Before anything else, so a SIGTERM during start-up still shuts down in order.
    let shutdown = shutdown_signal();
    let file = args.config.as_deref();
    if args.is_healthcheck() {
        // A probe reads only the file and the environment: it must not depend on etcd.
        return healthcheck(base.settings.common().server.port, Svc::SPEC.grpc_service).await;
    }
    let etcd = Etcd::when_needed(base.settings.common()).await?;
    let centre = match (&etcd, base.settings.common().config_centre.enabled) {
        (Some(etcd), true) => Some(ConfigCentre::new(etcd.clone(), Svc::SPEC.name)?),
        _ => None,
    };
    let sized = base.settings.common().server.worker_threads;
    let Layered { settings, unknown } = match &centre {
        Some(centre) => centre.layered(file).await?,
        None => base,
    };
    let tracer = Tracing::install(
        Svc::SPEC.name,
        &settings.common().telemetry,
        Sampling::Configured,
    )?;
    let log = telemetry::init(&settings.common().log, &tracer)?;
    if settings.common().admin.metrics {
        admin::install_recorder();
    }
    for key in unknown {
        tracing::warn!("{key}");
    }
    if settings.common().server.worker_threads != sized {
        tracing::warn!(
            running = sized,
            "server.worker_threads from the config centre is ignored: set it in the file or the environment"
        );
    }
    if let Some(endpoint) = tracer.endpoint() {
        tracing::info!(%endpoint, "exporting traces over OTLP");
        tracer.warn_if_unreachable();
    }
    let (sender, settings) = watch::channel(Arc::new(settings));
    log.follow(live::project(&settings, |s| s.common().log.clone()));
    if let Some(centre) = centre {
        centre
            .feed(file.map(Path::to_owned), sender.clone())
            .await?;
    }
    let application = build::<Svc>(settings, etcd).await?;
    let served = application.run_until(shutdown).await;
    // The spans of the last calls are exported even when serving failed.
    tracer.shutdown().await;
    served?;
    drop(sender);
    Ok(())
}

/// The `healthcheck` subcommand: probes `127.0.0.1:port` for `grpc_service`.
async fn healthcheck(port: u16, grpc_service: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        port != 0,
        "healthcheck needs a fixed server.port (SHIPPY_SERVER__PORT)"
    );
    let address = format!("127.0.0.1:{port}");
    let status = probe::check(&address, grpc_service, Duration::from_secs(3))
        .await
        .with_context(|| format!("{grpc_service} at {address} did not answer"))?;
    anyhow::ensure!(
        status == ServingStatus::Serving,
        "{grpc_service} at {address} is {}",
        status.as_str_name()
    );
    println!("{grpc_service} at {address} is SERVING");
    Ok(())
}
