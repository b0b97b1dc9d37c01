//! The REST/JSON gateway: every RPC of the shippy services that carries a `google.api.http`
//! annotation, served over HTTP/JSON, plus a small web console and an OpenAPI document.
//!
//! For readers: [`GatewayApp::build`] wires it. The route table comes from the protos
//! ([`routes`]); a request becomes a message and an answer becomes JSON in [`transcode`]; calls go
//! to the services through the same discovery and balanced channels every service uses
//! ([`upstream`]); bearer tokens are passed on or exchanged ([`auth`]); every error is a
//! [`problem::Problem`]. What every request passes through — request id, span, who the client is
//! ([`client`]), per-client rate, headers, metrics, CORS — is [`edge`]. The gateway's gRPC port serves only health and
//! reflection, so it registers, is probed and shuts down like every service.

pub mod auth;
pub mod client;
pub mod console;
pub mod edge;
pub mod instances;
pub mod openapi;
pub mod problem;
pub mod rest;
pub mod routes;
pub mod transcode;
pub mod upstream;

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{Router, routing::get};
use http::StatusCode;
use shippy_shared::{
    catalog::{self, ServiceSpec},
    config::gateway::GatewaySettings,
    runtime::{Context, Service},
};
use tonic::{Code, service::Routes};

use crate::{auth::Credentials, problem::Problem, rest::Upstreams};

/// The gateway, for `shippy_shared::runtime`.
#[derive(Debug)]
pub struct GatewayApp;

impl Service for GatewayApp {
    const SPEC: &'static ServiceSpec = &catalog::GATEWAY;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Settings = GatewaySettings;

    /// Reads the routes from the protos, reaches every service they name through a balanced
    /// channel, and binds the HTTP port (`gateway.http.*`).
    async fn build(context: &mut Context<GatewaySettings>) -> anyhow::Result<Routes> {
        let settings = context.settings();
        let section = &settings.gateway;
        let (_, routes) = routes::from_descriptors(shippy_proto::FILE_DESCRIPTOR_SET)?;
        let cors = edge::cors(&section.cors)?;
        let edge = edge::Edge::new(
            &section.rate,
            &section.trusted_proxies,
            context.edge_sampler(),
        )?;
        let mut channels = HashMap::new();
        for route in &routes {
            if !channels.contains_key(route.service.name) {
                channels.insert(route.service.name, context.channel(route.service).await?);
            }
        }
        let timeout = Duration::from_millis(section.timeout_ms.max(1));
        let users = match channels.get(catalog::USER.name) {
            Some(users) => users.clone(),
            None => context.channel(&catalog::USER).await?,
        };
        let upstreams = Arc::new(Upstreams {
            channels,
            credentials: Credentials::new(users, timeout),
            body_limit: section.body_limit_bytes,
            timeout,
        });
        // Serialized once: the document cannot change while the gateway runs.
        let document = bytes::Bytes::from(serde_json::to_vec(&openapi::document(
            &routes,
            Self::VERSION,
        ))?);
        let instances =
            instances::Instances::watch(context.registry().as_ref(), section.instance_addresses)
                .await?;
        let router = Router::new()
            .merge(rest::router(routes, upstreams))
            .route(
                "/openapi.json",
                get(move || {
                    let document = document.clone();
                    async move { ([(http::header::CONTENT_TYPE, "application/json")], document) }
                }),
            )
            .route("/v1/instances", get(instances::list).with_state(instances))
            .merge(console::router())
            .fallback(|| async {
                Problem::http(
                    StatusCode::NOT_FOUND,
                    Code::NotFound,
                    "no such route; see /openapi.json",
                )
            })
            .method_not_allowed_fallback(|| async {
                Problem::http(
                    StatusCode::METHOD_NOT_ALLOWED,
                    Code::Unimplemented,
                    "this route does not take this method; see /openapi.json",
                )
            })
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&edge),
                edge::layer,
            ));
        let router = match cors {
            Some(cors) => router.layer(cors),
            None => router,
        };
        let bound = context
            .serve_http(&section.http, router, move |peer| edge.is_proxy(peer))
            .await?;
        tracing::info!(http = %bound, "REST gateway and console");
        Ok(Routes::default())
    }
}
