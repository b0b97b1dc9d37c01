//! The `ShippingService` gRPC handler: authenticate, validate, find a vessel, store.

use std::sync::Arc;

use shippy_proto::{
    consignment::v1::{self as pb, shipping_service_server::ShippingService},
    user::v1::{Token, user_service_client::UserServiceClient},
    vessel::v1::{Specification, vessel_service_client::VesselServiceClient},
};
use shippy_shared::balance::BalancedChannel;
use tonic::{Code, Request, Response, Status};

use crate::{
    domain::{ConsignmentError, NewConsignment},
    store::ConsignmentStore,
};

/// Serves `shippy.consignment.v1.ShippingService`.
#[derive(Debug, Clone)]
pub struct ShippingHandler {
    store: Arc<dyn ConsignmentStore>,
    vessels: VesselServiceClient<BalancedChannel>,
    users: UserServiceClient<BalancedChannel>,
}

impl ShippingHandler {
    /// A handler storing in `store`, reaching the vessel and user services through balanced channels.
    pub fn new(
        store: Arc<dyn ConsignmentStore>,
        vessels: BalancedChannel,
        users: BalancedChannel,
    ) -> Self {
        Self {
            store,
            vessels: VesselServiceClient::new(vessels),
            users: UserServiceClient::new(users),
        }
    }

    /// The caller's user id, from `authorization: Bearer <token>`, checked by the user service.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<String, ConsignmentError> {
        let header = request.metadata().get("authorization").ok_or_else(|| {
            ConsignmentError::Unauthenticated(
                "missing `authorization: Bearer <token>` metadata; log in first".into(),
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                ConsignmentError::Unauthenticated(
                    "authorization metadata must be `Bearer <token>`".into(),
                )
            })?;
        match self
            .users
            .clone()
            .validate_token(Token {
                token: token.to_owned(),
                ..Default::default()
            })
            .await
        {
            Ok(answer) if answer.get_ref().valid => Ok(answer.into_inner().user_id),
            Ok(_) => Err(ConsignmentError::Unauthenticated("invalid token".into())),
            Err(status) if status.code() == Code::Unauthenticated => Err(
                ConsignmentError::Unauthenticated(status.message().to_owned()),
            ),
            Err(status) => Err(ConsignmentError::Dependency {
                service: "user",
                status,
            }),
        }
    }
}

#[tonic::async_trait]
impl ShippingService for ShippingHandler {
    async fn create_consignment(
        &self,
        request: Request<pb::Consignment>,
    ) -> Result<Response<pb::Response>, Status> {
        let caller = self.authenticate(&request).await?;
        let new = NewConsignment::try_from(request.into_inner())?;
        let spec = Specification {
            // Both are bounded by validation far below i32::MAX.
            capacity: i32::try_from(new.container_count()).unwrap_or(i32::MAX),
            max_weight: i32::try_from(new.weight()).unwrap_or(i32::MAX),
        };
        let vessel = match self.vessels.clone().find_available(spec).await {
            Ok(answer) => {
                answer
                    .into_inner()
                    .vessel
                    .ok_or_else(|| ConsignmentError::Dependency {
                        service: "vessel",
                        status: Status::internal("answer without a vessel"),
                    })?
            }
            Err(status) if status.code() == Code::NotFound => {
                return Err(ConsignmentError::NoVessel(status.message().to_owned()).into());
            }
            Err(status) => {
                return Err(ConsignmentError::Dependency {
                    service: "vessel",
                    status,
                }
                .into());
            }
        };
        let consignment = new.assign(vessel.id, &caller);
        self.store
            .create(&consignment)
            .await
            .map_err(ConsignmentError::from)?;
        tracing::info!(consignment = %consignment.id, vessel = %consignment.vessel_id, user = %caller, "consignment created");
        Ok(Response::new(pb::Response {
            created: true,
            consignment: Some(consignment.into()),
            consignments: Vec::new(),
        }))
    }

    async fn get_consignments(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::Response>, Status> {
        self.authenticate(&request).await?;
        let consignments = self.store.list().await.map_err(ConsignmentError::from)?;
        Ok(Response::new(pb::Response {
            created: false,
            consignment: None,
            consignments: consignments.into_iter().map(Into::into).collect(),
        }))
    }
}
