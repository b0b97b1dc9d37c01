//! The edge of the vessel service: `shippy.vessel.v1.VesselService` requests are validated into
//! domain types here, and every error becomes a `Status` in one place ([`status`]).
//!
//! Access model, enforced here and nowhere else: reading the fleet (`GetVessels`,
//! `FindAvailable`) is open to users and services; adding a vessel needs a token, and its
//! `owner_id` may only be empty (the caller) or the caller's own id.
//!
//! A `Create` may carry an `idempotency-key` (metadata; the gateway forwards the HTTP header of
//! that name): the caller's name for this one vessel. The key decides the vessel's id
//! (`domain::keyed_id`), so a repeat finds that id taken; when the vessel there is what the repeat
//! asks for, the answer is that vessel with `created: false`, and otherwise the key's reuse is
//! refused. No key store is needed: the fleet's own unique ids are the record.

use std::sync::Arc;

use shippy_proto::vessel::v1::{self as pb, vessel_service_server::VesselService};
use shippy_shared::{
    auth::Authenticator,
    idempotency::IdempotencyKey,
    page::PageRequest,
    store::{StoreError, observe},
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{NewVessel, Specification, Vessel, VesselError},
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

/// The one mapping of the vessel service's errors to what clients see.
fn status(error: VesselError) -> Status {
    match &error {
        VesselError::Invalid(_) => Status::invalid_argument(error.to_string()),
        VesselError::NoneFits(_) => Status::not_found(error.to_string()),
        VesselError::KeyReused => Status::failed_precondition(error.to_string()),
        VesselError::Store(store) => shippy_shared::status::store(store),
    }
}

impl From<Vessel> for pb::Vessel {
    fn from(v: Vessel) -> Self {
        Self {
            id: v.id,
            // Stored values came through validation, so they fit in i32 unless created out of band.
            capacity: i32::try_from(v.capacity).unwrap_or(i32::MAX),
            max_weight: i32::try_from(v.max_weight).unwrap_or(i32::MAX),
            name: v.name,
            available: v.available,
            owner_id: v.owner_id,
        }
    }
}

impl VesselHandler {
    /// The answer to a create whose key made vessel `id` before: that vessel, if it is what the
    /// repeat asks for.
    async fn repeated(&self, id: &str, asked: &NewVessel) -> Result<pb::Response, Status> {
        let earlier = observe("get", self.store.get(id))
            .await
            .map_err(|e| status(e.into()))?
            // Taken a moment ago and gone now: vessels are never removed, so the store is wrong.
            .ok_or_else(|| status(StoreError::Internal(format!("vessel {id} vanished")).into()))?;
        if !earlier.is_what(asked) {
            return Err(status(VesselError::KeyReused));
        }
        tracing::info!(vessel = %earlier.id, user = %earlier.owner_id, "vessel request repeated: answered with the one its key created");
        Ok(pb::Response {
            vessel: Some(earlier.into()),
            created: false,
            ..Default::default()
        })
    }
}

#[tonic::async_trait]
impl VesselService for VesselHandler {
    async fn find_available(
        &self,
        request: Request<pb::Specification>,
    ) -> Result<Response<pb::Response>, Status> {
        let request = request.into_inner();
        let spec = Specification::parse(request.capacity.into(), request.max_weight.into())
            .map_err(|e| status(e.into()))?;
        let vessel = observe("find_available", self.store.find_available(&spec))
            .await
            .map_err(|e| status(e.into()))?
            .ok_or_else(|| status(VesselError::NoneFits(spec)))?;
        tracing::info!(vessel = %vessel.id, capacity = spec.capacity, weight = spec.max_weight, "vessel found");
        Ok(Response::new(pb::Response {
            vessel: Some(vessel.into()),
            ..Default::default()
        }))
    }

    async fn create(&self, request: Request<pb::Vessel>) -> Result<Response<pb::Response>, Status> {
        // Reads are open to every service; changing the fleet needs a logged-in user, who owns
        // the vessel: nobody may name another user as its owner. The id is always made here.
        let caller = self.auth.caller(request.metadata()).await?;
        let key =
            IdempotencyKey::from_metadata(request.metadata()).map_err(|e| status(e.into()))?;
        let request = request.into_inner();
        shippy_shared::auth::own(&caller, || "owner_id", &request.owner_id)?;
        let new = NewVessel::parse(
            &request.name,
            request.capacity.into(),
            request.max_weight.into(),
            request.available,
        )
        .map_err(|e| status(e.into()))?;
        // Kept to compare with, should this key have made a vessel before.
        let asked = key.is_some().then(|| new.clone());
        let vessel = new.into_vessel(caller, key.as_ref());
        match (observe("create", self.store.create(&vessel)).await, asked) {
            (Ok(()), _) => {}
            (Err(StoreError::Duplicate(_)), Some(asked)) => {
                return self.repeated(&vessel.id, &asked).await.map(Response::new);
            }
            (Err(error), _) => return Err(status(error.into())),
        }
        tracing::info!(vessel = %vessel.id, name = %vessel.name, "vessel created");
        Ok(Response::new(pb::Response {
            vessel: Some(vessel.into()),
            created: true,
            ..Default::default()
        }))
    }

    async fn get_vessels(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::Response>, Status> {
        let request = request.into_inner();
        let page = PageRequest::parse(request.page_size, &request.page_token)
            .map_err(|e| status(e.into()))?;
        let fetched = observe(
            "list_page",
            self.store.list_page(page.after(), page.fetch_limit()),
        )
        .await
        .map_err(|e| status(e.into()))?;
        let vessels: Vec<pb::Vessel> = fetched.into_iter().map(Into::into).collect();
        let (vessels, next) = page.cut(vessels, |v| &v.id, prost::Message::encoded_len);
        Ok(Response::new(pb::Response {
            vessels,
            next_page_token: next.unwrap_or_default(),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_error_has_its_code_and_no_internals() {
        let none = status(VesselError::NoneFits(Specification {
            capacity: 3,
            max_weight: 9,
        }));
        assert_eq!(none.code(), Code::NotFound);
        assert_eq!(
            none.message(),
            "no available vessel can carry 3 containers weighing 9 in total"
        );
        let invalid = status(Specification::parse(-1, 0).expect_err("negative").into());
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert!(invalid.message().starts_with("capacity:"));
        let store =
            status(shippy_shared::store::StoreError::Internal("db at 10.0.0.1".into()).into());
        assert_eq!(
            (store.code(), store.message()),
            (Code::Internal, "internal error")
        );
    }
}
