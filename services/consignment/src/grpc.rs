//! The `ShippingService` gRPC handler: authenticate, validate, find a vessel, store.

use std::sync::Arc;

use shippy_proto::{
    consignment::v1::{self as pb, shipping_service_server::ShippingService},
    vessel::v1::{Specification, vessel_service_client::VesselServiceClient},
};
use shippy_shared::{auth::Authenticator, balance::BalancedChannel};
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
    auth: Authenticator,
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
            auth: Authenticator::new(users),
        }
    }
}

#[tonic::async_trait]
impl ShippingService for ShippingHandler {
    async fn create_consignment(
        &self,
        request: Request<pb::Consignment>,
    ) -> Result<Response<pb::Response>, Status> {
        let caller = self
            .auth
            .caller(request.metadata())
            .await
            .map_err(ConsignmentError::from)?;
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
        self.auth
            .caller(request.metadata())
            .await
            .map_err(ConsignmentError::from)?;
        let consignments = self.store.list().await.map_err(ConsignmentError::from)?;
        Ok(Response::new(pb::Response {
            created: false,
            consignment: None,
            consignments: consignments.into_iter().map(Into::into).collect(),
        }))
    }
}
