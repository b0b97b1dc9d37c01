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

use serde::Deserialize;
use serde_json::json;
use shippy_proto::{
    consignment::v1::{
        GetRequest as ConsignmentsRequest, shipping_service_client::ShippingServiceClient,
    },
    user::v1::{Request as UsersRequest, User, user_service_client::UserServiceClient},
    vessel::v1::{
        GetRequest as VesselsRequest, Vessel, vessel_service_client::VesselServiceClient,
    },
};
use shippy_shared::{
    catalog::{self, ServiceSpec},
    centre::{self, ConfigCentre},
    config::{
        self, CommonSettings, live,
        services::{ConsignmentSettings, UserSettings, VesselSettings},
    },
    discovery::{self, Registry, balance::BalancedChannel},
    etcd::Etcd,
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
#[derive(Debug, Default, Deserialize)]
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
            .map_err(|e| CliError::Setup(format!("etcd: {e}")))
    }

    async fn registry(&self) -> Result<std::sync::Arc<dyn Registry>, CliError> {
        let etcd = self.etcd().await?;
        discovery::open(&self.settings.common.registry, etcd.as_ref())
            .map_err(|e| CliError::Setup(format!("service discovery: {e}")))
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
            .map_err(|e| CliError::Setup(format!("service discovery: {e}")))
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

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let settings: Settings =
        config::layered(cli.config.as_deref(), None).map_err(|e| CliError::Setup(e.to_string()))?;
    let connector = Connector {
        settings,
        addr: cli.addr,
    };
    let format = cli.output;
    match cli.command {
        Command::User(command) => user(&connector, format, command).await,
        Command::Login { email, password } => {
            let channel = connector.channel(&catalog::USER).await?;
            let answer = UserServiceClient::new(channel)
                .auth(User {
                    email: email.clone(),
                    password,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let path = token::save(&answer.token)?;
            output::message(
                format,
                &format!("Logged in as {email}. Token saved to {}", path.display()),
                &json!({ "email": email, "user_id": answer.user_id, "token_file": path }),
            );
            Ok(())
        }
        Command::Logout => {
            token::remove()?;
            output::message(format, "Logged out.", &json!({ "logged_out": true }));
            Ok(())
        }
        Command::Consignment(command) => consignment(&connector, format, command).await,
        Command::Vessel(command) => vessel(&connector, format, command).await,
        Command::Status { wait } => status(&connector, format, wait).await,
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
                println!("User created");
            }
            output::users(format, vec![user.into()]);
        }
        UserCommand::List => {
            let users = client.get_all(UsersRequest {}).await?.into_inner().users;
            output::users(format, users.into_iter().map(Into::into).collect());
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
        ConsignmentCommand::Create { file } => {
            // Local problems (file, JSON, login) are reported before any network call.
            let consignment = input::read_consignment(&file)?;
            let request = authorized(consignment)?;
            let mut client =
                ShippingServiceClient::new(connector.channel(&catalog::CONSIGNMENT).await?);
            let answer = client.create_consignment(request).await?.into_inner();
            let created = answer.consignment.unwrap_or_default();
            let vessel = created.vessel_id.clone();
            output::consignments(
                format,
                &format!("Consignment created on vessel {vessel}"),
                vec![created.into()],
            );
        }
        ConsignmentCommand::List => {
            let request = authorized(ConsignmentsRequest {})?;
            let mut client =
                ShippingServiceClient::new(connector.channel(&catalog::CONSIGNMENT).await?);
            let items = client
                .get_consignments(request)
                .await?
                .into_inner()
                .consignments;
            let title = format!("{} consignment(s)", items.len());
            output::consignments(format, &title, items.into_iter().map(Into::into).collect());
        }
    }
    Ok(())
}

async fn vessel(
    connector: &Connector,
    format: Output,
    command: VesselCommand,
) -> Result<(), CliError> {
    let mut client = VesselServiceClient::new(connector.channel(&catalog::VESSEL).await?);
    match command {
        VesselCommand::Create {
            name,
            capacity,
            max_weight,
            owner_id,
            unavailable,
        } => {
            let vessel = Vessel {
                name,
                capacity,
                max_weight,
                owner_id,
                available: !unavailable,
                ..Default::default()
            };
            let created = client
                .create(authorized(vessel)?)
                .await?
                .into_inner()
                .vessel
                .unwrap_or_default();
            if format == Output::Table {
                println!("Vessel created");
            }
            output::vessels(format, vec![created.into()]);
        }
        VesselCommand::List => {
            let vessels = client
                .get_vessels(VesselsRequest {})
                .await?
                .into_inner()
                .vessels;
            output::vessels(format, vessels.into_iter().map(Into::into).collect());
        }
    }
    Ok(())
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
        .map_err(|e| CliError::Setup(format!("etcd: {e}")))?;
    let centre = |service: &str| {
        let service = service.to_owned();
        let etcd = etcd.clone();
        async move {
            ConfigCentre::new(etcd, &service)
                .map_err(|e| CliError::Setup(format!("config centre: {e}")))
        }
    };
    match command {
        ConfigCommand::Get { service } => {
            let centre = centre(&service).await?;
            let document = centre
                .fetch()
                .await
                .map_err(|e| CliError::Setup(format!("config centre: {e}")))?;
            match (document, format) {
                (Some(document), Output::Table) => print!("{document}"),
                (document, Output::Json) => output::message(
                    format,
                    "",
                    &json!({ "key": centre.key(), "document": document }),
                ),
                (None, Output::Table) => println!("no document at {}", centre.key()),
            }
        }
        ConfigCommand::Set { service, file } => {
            let document = input::read_text(&file)?;
            validate_document(&service, &document)?;
            let centre = centre(&service).await?;
            centre
                .store(&document)
                .await
                .map_err(|e| CliError::Setup(format!("config centre: {e}")))?;
            output::message(
                format,
                &format!(
                    "Stored {} ({} bytes); running {service} instances apply it now.",
                    centre.key(),
                    document.len()
                ),
                &json!({ "key": centre.key(), "stored": true }),
            );
        }
    }
    Ok(())
}

/// Lists every instance with its health; with `wait`, first waits until each service has one
/// serving instance.
async fn status(connector: &Connector, format: Output, wait: Option<u64>) -> Result<(), CliError> {
    let registry = connector.registry().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.unwrap_or(0));
    loop {
        let mut rows = Vec::new();
        for spec in catalog::ALL {
            let service = spec.name;
            let instances = registry
                .subscribe(service)
                .await
                .map_err(|e| CliError::Setup(format!("service discovery: {e}")))?
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
        let missing: Vec<&str> = catalog::ALL
            .iter()
            .map(|spec| spec.name)
            .filter(|s| {
                !rows
                    .iter()
                    .any(|r| r.service == *s && r.health == ServingStatus::Serving.as_str_name())
            })
            .collect();
        if missing.is_empty() || wait.is_none() || tokio::time::Instant::now() >= deadline {
            output::instances(format, &rows);
            return match (wait, missing.is_empty()) {
                (Some(seconds), false) => Err(CliError::Setup(format!(
                    "not serving after {seconds} s: {}",
                    missing.join(", ")
                ))),
                _ => Ok(()),
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
