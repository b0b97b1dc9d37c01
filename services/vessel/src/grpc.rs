//! The `VesselService` gRPC handler: proto in, domain rules, proto out.

use std::sync::Arc;

use shippy_proto::vessel::v1::{self as pb, vessel_service_server::VesselService};
use shippy_shared::auth::Authenticator;
use tonic::{Request, Response, Status};

use crate::{
    domain::{Specification, Vessel, VesselError},
    store::VesselStore,
};

/// Serves `shippy.vessel.v1.VesselService`.
#[derive(Debug, Clone)]
pub struct VesselHandler {
    store: Arc<dyn VesselStore>,
    auth: Authenticator,
}

impl VesselHandler {
    /// A handler over `store`; adding vessels needs a token, checked by `auth`.
    pub fn new(store: Arc<dyn VesselStore>, auth: Authenticator) -> Self {
        Self { store, auth }
    }
}

#[tonic::async_trait]
impl VesselService for VesselHandler {
    async fn find_available(
        &self,
        request: Request<pb::Specification>,
    ) -> Result<Response<pb::Response>, Status> {
        let spec = Specification::try_from(request.into_inner())?;
        let vessel = self
            .store
            .find_available(&spec)
            .await
            .map_err(VesselError::from)?
            .ok_or(VesselError::NoneFits(spec))?;
        tracing::info!(vessel = %vessel.id, capacity = spec.capacity, weight = spec.max_weight, "vessel found");
        Ok(Response::new(pb::Response {
            vessel: Some(vessel.into()),
            ..Default::default()
        }))
    }

    async fn create(&self, request: Request<pb::Vessel>) -> Result<Response<pb::Response>, Status> {
        // Reads are open to every service; changing the fleet needs a logged-in user, who owns
        // the vessel unless the request names another owner.
        let caller = self
            .auth
            .caller(request.metadata())
            .await
            .map_err(VesselError::from)?;
        let mut vessel = Vessel::try_from(request.into_inner())?;
        if vessel.owner_id.is_empty() {
            vessel.owner_id = caller;
        }
        self.store
            .create(&vessel)
            .await
            .map_err(VesselError::from)?;
        tracing::info!(vessel = %vessel.id, name = %vessel.name, "vessel created");
        Ok(Response::new(pb::Response {
            vessel: Some(vessel.into()),
            created: true,
            ..Default::default()
        }))
    }

    async fn get_vessels(
        &self,
        _request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::Response>, Status> {
        let vessels = self.store.list().await.map_err(VesselError::from)?;
        Ok(Response::new(pb::Response {
            vessels: vessels.into_iter().map(Into::into).collect(),
            ..Default::default()
        }))
    }
}
