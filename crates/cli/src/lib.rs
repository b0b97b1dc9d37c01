//! `shippy`, the command-line client: users, login, consignments, vessels, and the status of every
//! service. Services are found through the same discovery the services use (`SHIPPY_REGISTRY__*`,
//! `SHIPPY_ETCD__*`), or at `--addr`.
//!
//! Entry point for readers: [`run`].

pub mod args;
pub mod error;
pub mod input;
pub mod output;
pub mod token;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use shippy_proto::{
    consignment::v1::{
        GetRequest as ConsignmentsRequest, shipping_service_client::ShippingServiceClient,
    },
    user::v1::{Request as UsersRequest, Token, User, user_service_client::UserServiceClient},
    vessel::v1::{
        GetRequest as VesselsRequest, Vessel, vessel_service_client::VesselServiceClient,
    },
};
use shippy_shared::{
    catalog::{self, ServiceSpec},
    centre::{self, ConfigCentre},
    config::{
        self, CommonSettings, RegistryBackend, live,
        services::{ConsignmentSettings, UserSettings, VesselSettings},
    },
    discovery::{
        self, Registry,
        balance::BalancedChannel,
        trace::{self, Sampling, Tracing},
    },
    etcd::Etcd,
    idempotency::IdempotencyKey,
    probe,
};
use tonic::{Request, metadata::MetadataValue};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    args::{Cli, Command, ConfigCommand, ConsignmentCommand, Output, UserCommand, VesselCommand},
    error::CliError,
    output::InstanceView,
};

/// The CLI's settings: the shared ones (discovery, client timeouts) from the same layers as the
/// services.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
struct Settings {
    #[serde(flatten)]
    common: CommonSettings,
}

/// How the CLI reaches services.
#[derive(Debug)]
struct Connector {
    settings: Settings,
    addr: Option<String>,
}

impl Connector {
    /// The etcd connection, when the settings use etcd.
    async fn etcd(&self) -> Result<Option<Etcd>, CliError> {
        Etcd::when_needed(&self.settings.common)
            .await
            .map_err(CliError::Etcd)
    }

    async fn registry(&self) -> Result<std::sync::Arc<dyn Registry>, CliError> {
        let etcd = self.etcd().await?;
        discovery::open(&self.settings.common.registry, etcd.as_ref()).map_err(CliError::discovery)
    }

    /// Where the registry is, for messages: "the local registry at <dir>" or "etcd at <endpoints>
    /// (prefix /<prefix>)".
    fn registry_place(&self) -> String {
        let common = &self.settings.common;
        match common.registry.backend {
            RegistryBackend::Local => {
                let dir = common.registry.local.dir.clone();
                let dir = dir.unwrap_or_else(discovery::local::default_dir);
                format!("the local registry at {}", dir.display())
            }
            RegistryBackend::Etcd => format!(
                "etcd at {} (prefix /{})",
                common.etcd.endpoints.join(","),
                common.etcd.prefix.trim_matches('/')
            ),
        }
    }

    async fn channel(&self, service: &ServiceSpec) -> Result<BalancedChannel, CliError> {
        let client = live::fixed(self.settings.common.client.clone());
        if let Some(addr) = &self.addr {
            return Ok(BalancedChannel::fixed(
                service.name,
                vec![addr.clone()],
                client,
            ));
        }
        let registry = self.registry().await?;
        BalancedChannel::discover(registry.as_ref(), service.name, client)
            .await
            .map_err(CliError::discovery)
    }
}

/// The largest answer the CLI accepts. A request may be 4 MiB; the stored consignment it becomes
/// carries ids too, so the answer that echoes it can be a little larger.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// The token of the page after the one requested with `current`, or `None` after the last page.
/// A server that hands back the token it was given would loop forever: that is refused.
fn next_page(current: &str, next: String) -> Result<Option<String>, CliError> {
    if next.is_empty() {
        Ok(None)
    } else if next == current {
        Err(CliError::Setup(
            "the service returned the same page token twice; stopping".into(),
        ))
    } else {
        Ok(Some(next))
    }
}

/// Wraps `message` with the saved token as `authorization: Bearer <token>`.
fn authorized<T>(message: T) -> Result<Request<T>, CliError> {
    let token = token::load()?;
    let value: MetadataValue<_> = format!("Bearer {token}").parse().map_err(|_| {
        CliError::Setup("the token contains characters not allowed in a header".into())
    })?;
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// Runs one parsed command line; with `--trace` or an OTLP endpoint, as one traced span whose
/// context every call carries (`--trace` prints its trace id on stderr).
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let settings: Settings =
        config::layered(cli.config.as_deref(), None).map_err(|e| CliError::Setup(e.to_string()))?;
    let sampling = if cli.trace {
        Sampling::Always
    } else {
        Sampling::Configured
    };
    let tracer = Tracing::install("shippy", &settings.common.telemetry, sampling)
        .map_err(|e| CliError::Setup(e.to_string()))?;
    if !cli.trace && tracer.endpoint().is_none() {
        return quote_request_id(run_command(cli, settings).await);
    }
    tracer.install_subscriber();
    let print = cli.trace;
    let name = format!("shippy {}", command_name(&cli.command));
    let (result, trace_id) = trace::in_root_span(name, run_command(cli, settings)).await;
    let result = quote_request_id(result);
    tracer.shutdown().await;
    if let (true, Some(trace_id)) = (print, trace_id) {
        eprintln!("trace id: {trace_id}");
    }
    result
}

/// A service's error sentence ends with the request id the service answered with, so a person
/// can quote it (every log line and span of the request carries it).
fn quote_request_id(result: Result<(), CliError>) -> Result<(), CliError> {
    match result {
        Err(CliError::Rpc(status)) => Err(CliError::Rpc(quoted(status))),
        Err(CliError::Unsure { status, retry }) => Err(CliError::Unsure {
            status: quoted(status),
            retry,
        }),
        other => other,
    }
}

/// `status` with the request id it carries appended to its message.
fn quoted(status: tonic::Status) -> tonic::Status {
    let id = status
        .metadata()
        .get(trace::REQUEST_ID_HEADER)
        .and_then(|id| id.to_str().ok())
        .map(str::to_owned);
    match id {
        Some(id) => tonic::Status::with_metadata(
            status.code(),
            format!("{} (request id: {id})", status.message()),
            status.metadata().clone(),
        ),
        None => status,
    }
}

/// The top-level command, for the name of the CLI's span.
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::User(_) => "user",
        Command::Login { .. } => "login",
        Command::Logout => "logout",
        Command::Consignment(ConsignmentCommand::Create { .. }) => "consignment create",
        Command::Consignment(ConsignmentCommand::List) => "consignment list",
        Command::Vessel(_) => "vessel",
        Command::Config(_) => "config",
        Command::Status { .. } => "status",
    }
}

async fn run_command(cli: Cli, settings: Settings) -> Result<(), CliError> {
    let connector = Connector {
        settings,
        addr: cli.addr,
    };
    let format = cli.output;
    match cli.command {
        Command::User(command) => user(&connector, format, command).await,
        Command::Login {
            email,
            password,
            oidc_token,
        } => {
            let mut users = UserServiceClient::new(connector.channel(&catalog::USER).await?);
            let (answer, email) = match (oidc_token, email) {
                (Some(token), _) => {
                    let answer = users
                        .exchange_token(Token {
                            token,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    (answer, None)
                }
                (None, email) => {
                    let email = email.unwrap_or_default();
                    let answer = users
                        .auth(User {
                            email: email.clone(),
                            password: password.unwrap_or_default(),
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    (answer, Some(email))
                }
            };
            let path = token::save(&answer.token)?;
            let who = email
                .clone()
                .unwrap_or_else(|| format!("user {}", answer.user_id));
            output::message(
                format,
                &format!("Logged in as {who}. Token saved to {}", path.display()),
                &json!({ "email": email, "user_id": answer.user_id, "token_file": path }),
            )
        }
        Command::Logout => {
            token::remove()?;
            output::message(format, "Logged out.", &json!({ "logged_out": true }))
        }
        Command::Consignment(command) => consignment(&connector, format, command).await,
        Command::Vessel(command) => vessel(&connector, format, command).await,
        Command::Status { service, wait } => {
            status(&connector, format, service.as_deref(), wait).await
        }
        Command::Config(command) => config(&connector, format, command).await,
    }
}

async fn user(connector: &Connector, format: Output, command: UserCommand) -> Result<(), CliError> {
    let mut client = UserServiceClient::new(connector.channel(&catalog::USER).await?);
    match command {
        UserCommand::Create {
            name,
            email,
            company,
            password,
        } => {
            let created = client
                .create(User {
                    name,
                    email,
                    company,
                    password,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let user = created.user.unwrap_or_default();
            if format == Output::Table {
                output::line("User created")?;
            }
            output::users(format, vec![user.into()])?;
        }
        UserCommand::List => {
            // Users see only themselves: the answer is the logged-in user.
            let users = client
                .get_all(authorized(UsersRequest {})?)
                .await?
                .into_inner()
                .users;
            output::users(format, users.into_iter().map(Into::into).collect())?;
        }
    }
    Ok(())
}

async fn consignment(
    connector: &Connector,
    format: Output,
    command: ConsignmentCommand,
) -> Result<(), CliError> {
    match command {
        ConsignmentCommand::Create {
            file,
            idempotency_key,
        } => {
            // Local problems (file, JSON, login, a key no header can carry) are reported before
            // any network call.
            let consignment = input::read_consignment(&file)?;
            let mut request = authorized(consignment)?;
            let (key, chosen) = with_key(&mut request, idempotency_key)?;
            let mut client =
                ShippingServiceClient::new(connector.channel(&catalog::CONSIGNMENT).await?)
                    .max_decoding_message_size(MAX_ANSWER);
            let answer = client
                .create_consignment(request)
                .await
                .map_err(|status| CliError::unsure(status, &key))?
                .into_inner();
            let consignment = answer.consignment.unwrap_or_default();
            let vessel = consignment.vessel_id.clone();
            // A key of this run's own making was seen before only by an attempt of this run that
            // the balancer retried: the consignment is this run's either way.
            let heading = if answer.created || !chosen {
                format!("Consignment created on vessel {vessel}")
            } else {
                format!("Consignment already created on vessel {vessel} by a request with this key")
            };
            output::consignments(format, &heading, vec![consignment.into()])?;
        }
        ConsignmentCommand::List => {
            let mut client =
                ShippingServiceClient::new(connector.channel(&catalog::CONSIGNMENT).await?)
                    .max_decoding_message_size(MAX_ANSWER);
            let mut items = Vec::new();
            let mut token = String::new();
            loop {
                let page = ConsignmentsRequest {
                    page_token: token.clone(),
                    ..Default::default()
                };
                let answer = client
                    .get_consignments(authorized(page)?)
                    .await?
                    .into_inner();
                items.extend(answer.consignments);
                match next_page(&token, answer.next_page_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            let title = format!("{} consignment(s)", items.len());
            output::consignments(format, &title, items.into_iter().map(Into::into).collect())?;
        }
    }
    Ok(())
}

async fn vessel(
    connector: &Connector,
    format: Output,
    command: VesselCommand,
) -> Result<(), CliError> {
    let mut client = VesselServiceClient::new(connector.channel(&catalog::VESSEL).await?)
        .max_decoding_message_size(MAX_ANSWER);
    match command {
        VesselCommand::Create {
            name,
            capacity,
            max_weight,
            owner_id,
            unavailable,
            idempotency_key,
        } => {
            let vessel = Vessel {
                name,
                capacity,
                max_weight,
                owner_id,
                available: !unavailable,
                ..Default::default()
            };
            let mut request = authorized(vessel)?;
            let (key, chosen) = with_key(&mut request, idempotency_key)?;
            let answer = client
                .create(request)
                .await
                .map_err(|status| CliError::unsure(status, &key))?
                .into_inner();
            if format == Output::Table {
                // As for consignments: only a key the person chose can have been used before.
                output::line(if answer.created || !chosen {
                    "Vessel created"
                } else {
                    "Vessel already created by a request with this key"
                })?;
            }
            output::vessels(format, vec![answer.vessel.unwrap_or_default().into()])?;
        }
        VesselCommand::List => {
            let mut vessels = Vec::new();
            let mut token = String::new();
            loop {
                let page = VesselsRequest {
                    page_token: token.clone(),
                    ..Default::default()
                };
                let answer = client.get_vessels(page).await?.into_inner();
                vessels.extend(answer.vessels);
                match next_page(&token, answer.next_page_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            output::vessels(format, vessels.into_iter().map(Into::into).collect())?;
        }
    }
    Ok(())
}

/// Puts an idempotency key on a create: the person's `chosen` one, or one made for this run.
/// Every create carries a key, so that the balancer may retry it on another instance and a person
/// may repeat it safely when its outcome is unknown. Returns the key and whether it was chosen.
fn with_key<T>(
    request: &mut tonic::Request<T>,
    chosen: Option<String>,
) -> Result<(String, bool), CliError> {
    let was_chosen = chosen.is_some();
    let key = chosen.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // The services' own rule, so a bad key is refused before any call, in their words.
    let checked =
        IdempotencyKey::parse(&key).map_err(|refused| CliError::Input(format!("--{refused}")))?;
    let value = checked
        .as_str()
        .parse()
        .map_err(|_| CliError::Input("--idempotency-key: not a header value".into()))?;
    request
        .metadata_mut()
        .insert(shippy_proto::idempotency::METADATA_KEY, value);
    Ok((key, was_chosen))
}

/// Checks `document` against the settings of `service`.
fn validate_document(service: &str, document: &str) -> Result<(), CliError> {
    use centre::validate;
    let result = match catalog::find(service) {
        Some(&catalog::CONSIGNMENT) => validate::<ConsignmentSettings>(document).map(drop),
        Some(&catalog::VESSEL) => validate::<VesselSettings>(document).map(drop),
        Some(&catalog::USER) => validate::<UserSettings>(document).map(drop),
        _ => {
            let known: Vec<&str> = catalog::ALL.iter().map(|s| s.name).collect();
            return Err(CliError::Input(format!(
                "unknown service {service:?}: use {}",
                known.join(", ")
            )));
        }
    };
    result.map_err(|e| CliError::Input(format!("not stored: {e}")))
}

async fn config(
    connector: &Connector,
    format: Output,
    command: ConfigCommand,
) -> Result<(), CliError> {
    let etcd = Etcd::connect(&connector.settings.common.etcd)
        .await
        .map_err(CliError::Etcd)?;
    let centre = |service: &str| {
        let service = service.to_owned();
        let etcd = etcd.clone();
        async move { ConfigCentre::new(etcd, &service).map_err(CliError::centre) }
    };
    match command {
        ConfigCommand::Get { service } => {
            let centre = centre(&service).await?;
            let document = centre.fetch().await.map_err(CliError::centre)?;
            match (document, format) {
                (Some(document), Output::Table) => output::document(&document)?,
                (document, Output::Json) => output::message(
                    format,
                    "",
                    &json!({ "key": centre.key(), "document": document }),
                )?,
                (None, Output::Table) => output::line(&format!("no document at {}", centre.key()))?,
            }
        }
        ConfigCommand::Set { service, file } => {
            let document = input::read_text(&file)?;
            validate_document(&service, &document)?;
            let centre = centre(&service).await?;
            centre.store(&document).await.map_err(CliError::centre)?;
            output::message(
                format,
                &format!(
                    "Stored {} ({} bytes); running {service} instances apply it now.",
                    centre.key(),
                    document.len()
                ),
                &json!({ "key": centre.key(), "stored": true }),
            )?;
        }
    }
    Ok(())
}

/// Lists every instance (or those of the service `only`) with its health; with `wait`, first
/// waits until each service (or `only`) has a serving instance. Fails when the wait runs out, or
/// when the named service has no serving instance; with nothing registered at all, says so.
async fn status(
    connector: &Connector,
    format: Output,
    only: Option<&str>,
    wait: Option<u64>,
) -> Result<(), CliError> {
    let specs: Vec<&ServiceSpec> = match only {
        None => catalog::ALL.iter().collect(),
        Some(name) => vec![catalog::find(name).ok_or_else(|| unknown_service(name))?],
    };
    let registry = connector.registry().await?;
    // Any `u64` of seconds is accepted; one past what the clock can add waits without end.
    let now = tokio::time::Instant::now();
    let deadline = now
        .checked_add(Duration::from_secs(wait.unwrap_or(0)))
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
    loop {
        let mut rows = Vec::new();
        for spec in &specs {
            let service = spec.name;
            let instances = registry
                .subscribe(service)
                .await
                .map_err(CliError::discovery)?
                .borrow()
                .clone();
            for instance in instances {
                let grpc = instance
                    .metadata
                    .get("grpc_service")
                    .cloned()
                    .unwrap_or_default();
                let health =
                    match probe::check(&instance.address, &grpc, Duration::from_secs(1)).await {
                        Ok(status) => status.as_str_name().to_owned(),
                        Err(error) => format!("UNREACHABLE ({error})"),
                    };
                rows.push(InstanceView {
                    service: service.to_owned(),
                    id: instance.id,
                    address: instance.address,
                    version: instance.version,
                    health,
                });
            }
        }
        let missing: Vec<&str> = specs
            .iter()
            .map(|spec| spec.name)
            .filter(|s| {
                !rows
                    .iter()
                    .any(|r| r.service == *s && r.health == ServingStatus::Serving.as_str_name())
            })
            .collect();
        if missing.is_empty() || wait.is_none() || tokio::time::Instant::now() >= deadline {
            return status_answer(connector, format, only, wait, &rows, &missing);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints the final `shippy status` rows and decides its outcome; `missing` are the services asked
/// about that have no serving instance.
fn status_answer(
    connector: &Connector,
    format: Output,
    only: Option<&str>,
    wait: Option<u64>,
    rows: &[InstanceView],
    missing: &[&str],
) -> Result<(), CliError> {
    let place = connector.registry_place();
    let after = wait
        .map(|s| format!(" after waiting {s} s"))
        .unwrap_or_default();
    // An empty table says nothing: people get the sentence below instead; scripts still get `[]`.
    if !rows.is_empty() || format == Output::Json {
        output::instances(format, rows)?;
    }
    match (only, wait) {
        _ if missing.is_empty() => Ok(()),
        (Some(service), _) if rows.is_empty() => Err(CliError::Setup(format!(
            "no {service} instances are registered in {place}{after}"
        ))),
        (None, Some(_)) if rows.is_empty() => Err(CliError::Setup(format!(
            "no service instances are registered in {place}{after}"
        ))),
        (Some(_), _) | (None, Some(_)) => Err(CliError::Setup(format!(
            "not serving{after}: {}",
            missing.join(", ")
        ))),
        (None, None) if rows.is_empty() && format == Output::Table => {
            output::line(&format!("no service instances are registered in {place}"))
        }
        (None, None) => Ok(()),
    }
}

fn unknown_service(service: &str) -> CliError {
    let known: Vec<&str> = catalog::ALL.iter().map(|s| s.name).collect();
    CliError::Input(format!(
        "unknown service {service:?}: use {}",
        known.join(", ")
    ))
}
