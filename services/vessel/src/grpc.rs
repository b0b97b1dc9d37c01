//! The `VesselService` gRPC handler: proto in, domain rules, proto out.

use std::sync::Arc;

use shippy_proto::vessel::v1::{self as pb, vessel_service_server::VesselService};
use tonic::{Request, Response, Status};

use crate::{
    domain::{Specification, Vessel, VesselError},
    store::VesselStore,
};

/// Serves `shippy.vessel.v1.VesselService`.
#[derive(Debug, Clone)]
pub struct VesselHandler {
    store: Arc<dyn VesselStore>,
}

impl VesselHandler {
    /// A handler over `store`.
    pub fn new(store: Arc<dyn VesselStore>) -> Self {
        Self { store }
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
        let vessel = Vessel::try_from(request.into_inner())?;
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
