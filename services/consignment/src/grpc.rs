//! The edge of the consignment service: `shippy.consignment.v1.ShippingService` requests are
//! authenticated and validated into domain types here, the vessel service is asked for a vessel,
//! and every error becomes a `Status` in one place ([`status`]).
//!
//! Access model, enforced here and nowhere else: every call needs a token; a container's `user_id`
//! may only be empty or the caller's own id ([`claims_only_the_caller`]); a stored consignment is
//! owned by its submitter, and `GetConsignments` lists only the caller's own.
//!
//! A `CreateConsignment` may carry an `idempotency-key` (metadata; the gateway forwards the HTTP
//! header of that name): the caller's name for this one consignment. The same request repeated
//! with the same key is answered with the consignment the first created, with `created: false`,
//! and nothing more is stored; the key used again for a different consignment is refused.

use std::sync::Arc;

use shippy_proto::{
    consignment::v1::{self as pb, shipping_service_server::ShippingService},
    vessel::v1::{Specification, vessel_service_client::VesselServiceClient},
};
use shippy_shared::{
    auth::Authenticator, discovery::balance::BalancedChannel, idempotency::IdempotencyKey,
    page::PageRequest, store::observe,
};
use tonic::{Code, Request, Response, Status};

use crate::{
    domain::{Consignment, ConsignmentError, ContainerFields, NewConsignment},
    store::{ConsignmentStore, Keyed},
};

// The codec refuses a message with more fields than `MAX_FIELDS` before decoding it; a request
// just over the domain's own limit must still reach the domain, for its precise refusal.
const _: () = assert!(crate::domain::MAX_CONTAINERS < shippy_proto::codec::MAX_FIELDS);

/// Serves `shippy.consignment.v1.ShippingService`.
#[derive(Debug, Clone)]
pub struct ShippingHandler {
    store: Arc<dyn ConsignmentStore>,
    vessels: VesselServiceClient<BalancedChannel>,
    auth: Authenticator,
}

impl ShippingHandler {
    /// A handler storing in `store`, asking the vessel service through `vessels` (a balanced
    /// channel) for a vessel; every call needs a token, checked by `auth`.
    pub fn new(
        store: Arc<dyn ConsignmentStore>,
        vessels: BalancedChannel,
        auth: Authenticator,
    ) -> Self {
        Self {
            store,
            vessels: VesselServiceClient::new(vessels),
            auth,
        }
    }

    /// The id of a vessel that can carry `new`, from the vessel service. Its NOT_FOUND keeps its
    /// code and explanation; any other failure is a dependency failure.
    async fn find_vessel(&self, new: &NewConsignment) -> Result<String, Status> {
        let spec = Specification {
            // Both are bounded by validation far below i32::MAX.
            capacity: i32::try_from(new.container_count()).unwrap_or(i32::MAX),
            max_weight: i32::try_from(new.weight()).unwrap_or(i32::MAX),
        };
        match self.vessels.clone().find_available(spec).await {
            Ok(answer) => answer
                .into_inner()
                .vessel
                .map(|vessel| vessel.id)
                .ok_or_else(|| {
                    shippy_shared::status::internal(&"the vessel service answered without a vessel")
                }),
            Err(refused) if refused.code() == Code::NotFound => Err(status(
                ConsignmentError::NoVessel(refused.message().to_owned()),
            )),
            Err(failed) => Err(shippy_shared::status::upstream("vessel", &failed)),
        }
    }
}

/// The one mapping of the consignment service's errors to what clients see.
fn status(error: ConsignmentError) -> Status {
    match error {
        invalid @ ConsignmentError::Invalid(_) => Status::invalid_argument(invalid.to_string()),
        ConsignmentError::NoVessel(message) => Status::not_found(message),
        reused @ ConsignmentError::KeyReused => Status::failed_precondition(reused.to_string()),
        ConsignmentError::Store(store) => shippy_shared::status::store(&store),
    }
}

/// The answer to a request repeated with its key: the consignment created the first time, if the
/// request is the same one.
fn repeated(new: &NewConsignment, earlier: Consignment) -> Result<pb::Response, ConsignmentError> {
    if !new.is_same_as(&earlier) {
        return Err(ConsignmentError::KeyReused);
    }
    tracing::info!(consignment = %earlier.id, user = %earlier.owner_id, "consignment request repeated: answered with the one its key created");
    Ok(pb::Response {
        created: false,
        consignment: Some(earlier.into()),
        ..Default::default()
    })
}

/// Refuses a consignment whose containers name a user other than `caller`.
fn claims_only_the_caller(caller: &str, request: &pb::Consignment) -> Result<(), Status> {
    for (i, container) in request.containers.iter().enumerate() {
        shippy_shared::auth::own(
            caller,
            || format!("containers[{i}].user_id"),
            &container.user_id,
        )?;
    }
    Ok(())
}

/// A consignment sent by a client, checked.
fn parse(request: &pb::Consignment) -> Result<NewConsignment, ConsignmentError> {
    let containers = request.containers.iter().map(|k| ContainerFields {
        customer_id: &k.customer_id,
        origin: &k.origin,
        user_id: &k.user_id,
    });
    Ok(NewConsignment::parse(
        &request.description,
        request.weight.into(),
        containers,
    )?)
}

impl From<Consignment> for pb::Consignment {
    fn from(c: Consignment) -> Self {
        Self {
            id: c.id,
            description: c.description,
            // Stored values came through validation, so they fit in i32 unless created out of band.
            weight: i32::try_from(c.weight).unwrap_or(i32::MAX),
            containers: c
                .containers
                .into_iter()
                .map(|k| pb::Container {
                    id: k.id,
                    customer_id: k.customer_id,
                    origin: k.origin,
                    user_id: k.user_id,
                })
                .collect(),
            vessel_id: c.vessel_id,
        }
    }
}

#[tonic::async_trait]
impl ShippingService for ShippingHandler {
    async fn create_consignment(
        &self,
        request: Request<pb::Consignment>,
    ) -> Result<Response<pb::Response>, Status> {
        let caller = self.auth.caller(request.metadata()).await?;
        let new = parse(request.get_ref()).map_err(status)?;
        let key =
            IdempotencyKey::from_metadata(request.metadata()).map_err(|e| status(e.into()))?;
        claims_only_the_caller(&caller, request.get_ref())?;
        // A keyed create is not looked up before it is made: repeats are rare, and the store
        // finds one when it claims the key (below). Only when no vessel can be had does the key
        // decide here: a create this key made before is answered whatever the vessels say now.
        let vessel_id = match (self.find_vessel(&new).await, &key) {
            (Ok(vessel_id), _) => vessel_id,
            (Err(refused), Some(key)) => {
                return match observe("find_by_key", self.store.find_by_key(&caller, key)).await {
                    Ok(Some(earlier)) => repeated(&new, earlier).map(Response::new).map_err(status),
                    Ok(None) => Err(refused),
                    Err(error) => {
                        tracing::warn!(%error, "could not look for an earlier create with the key");
                        Err(refused)
                    }
                };
            }
            (Err(refused), None) => return Err(refused),
        };
        // The request is kept to compare with, should another with this key have stored first.
        let keyed = key.map(|key| (key, new.clone()));
        let consignment = new.assign(vessel_id, &caller);
        let Some((key, asked)) = keyed else {
            observe("create", self.store.create(&consignment))
                .await
                .map_err(|e| status(e.into()))?;
            return Ok(created(consignment, &caller));
        };
        match observe("create", self.store.create_with_key(&consignment, &key))
            .await
            .map_err(|e| status(e.into()))?
        {
            Keyed::Stored => Ok(created(consignment, &caller)),
            Keyed::Earlier(earlier) => repeated(&asked, earlier).map(Response::new).map_err(status),
        }
    }

    async fn get_consignments(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::Response>, Status> {
        let caller = self.auth.caller(request.metadata()).await?;
        let request = request.into_inner();
        let page = PageRequest::parse(request.page_size, &request.page_token)
            .map_err(|e| status(e.into()))?;
        let fetched = observe(
            "list_by_owner",
            self.store
                .list_by_owner(&caller, page.after(), page.fetch_limit()),
        )
        .await
        .map_err(|e| status(e.into()))?;
        let consignments: Vec<pb::Consignment> = fetched.into_iter().map(Into::into).collect();
        let (consignments, next) = page.cut(consignments, |c| &c.id, prost::Message::encoded_len);
        Ok(Response::new(pb::Response {
            created: false,
            consignment: None,
            consignments,
            next_page_token: next.unwrap_or_default(),
        }))
    }
}

/// The answer to a request that stored `consignment`.
fn created(consignment: Consignment, caller: &str) -> Response<pb::Response> {
    tracing::info!(consignment = %consignment.id, vessel = %consignment.vessel_id, user = %caller, "consignment created");
    Response::new(pb::Response {
        created: true,
        consignment: Some(consignment.into()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shippy_shared::store::StoreError;
    use tonic::metadata::MetadataMap;

    fn request(weight: i32, origins: &[&str]) -> pb::Consignment {
        pb::Consignment {
            description: "cargo".into(),
            weight,
            containers: origins
                .iter()
                .map(|origin| pb::Container {
                    customer_id: "cust".into(),
                    origin: (*origin).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn requests_are_parsed_and_client_ids_ignored() {
        let mut sent = request(10, &["Derby", "Leeds"]);
        sent.id = "chosen-by-client".into();
        sent.containers[0].id = "also-chosen".into();
        sent.containers[1].user_id = "caller".into();
        claims_only_the_caller("caller", &sent).expect("own id");
        let stored = parse(&sent).expect("valid").assign("v1".into(), "caller");
        assert_ne!(stored.id, "chosen-by-client");
        assert_ne!(stored.containers[0].id, "also-chosen");
        assert_eq!(stored.containers[0].user_id, "caller");
        assert_eq!(stored.containers[1].user_id, "caller");
        assert_eq!(stored.owner_id, "caller");
        let back = pb::Consignment::from(stored.clone());
        assert_eq!(
            (back.id, back.weight, back.vessel_id),
            (stored.id, 10, "v1".into())
        );
        assert_eq!(back.containers[1].origin, "Leeds");
    }

    #[test]
    fn containers_may_not_name_another_user() {
        let mut sent = request(10, &["Derby", "Leeds"]);
        sent.containers[1].user_id = "someone-else".into();
        let refused = claims_only_the_caller("caller", &sent).expect_err("another user");
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert!(
            refused
                .message()
                .starts_with("containers[1].user_id: must be empty or your own user id"),
            "{}",
            refused.message()
        );
    }

    #[test]
    fn each_error_has_its_code_and_no_internals() {
        let invalid = status(parse(&request(10, &["o", ""])).expect_err("empty origin"));
        assert_eq!(
            (invalid.code(), invalid.message()),
            (
                Code::InvalidArgument,
                "containers[1].origin: must not be empty"
            )
        );
        let weight = status(parse(&request(0, &["o"])).expect_err("no weight"));
        assert_eq!(
            (weight.code(), weight.message()),
            (Code::InvalidArgument, "weight: must be at least 1 (got 0)")
        );
        let none = status(ConsignmentError::NoVessel(
            "no available vessel can carry 3 containers weighing 9 in total".into(),
        ));
        assert_eq!(
            (none.code(), none.message()),
            (
                Code::NotFound,
                "no available vessel can carry 3 containers weighing 9 in total"
            )
        );
        let store = status(StoreError::Internal("db at 10.0.0.1".into()).into());
        assert_eq!(
            (store.code(), store.message()),
            (Code::Internal, "internal error")
        );
        let down = status(StoreError::Unavailable("10.0.0.1:27017 refused".into()).into());
        assert_eq!(down.code(), Code::Unavailable);
        assert!(!down.message().contains("10.0.0.1"));
        let reused = status(ConsignmentError::KeyReused);
        assert_eq!(reused.code(), Code::FailedPrecondition);
        assert!(
            reused
                .message()
                .starts_with("idempotency-key: already used")
        );
        let duplicate = status(StoreError::Duplicate("consignment c1".into()).into());
        assert_eq!(
            (duplicate.code(), duplicate.message()),
            (Code::AlreadyExists, "consignment c1 already exists")
        );
    }

    #[test]
    fn the_idempotency_key_is_read_from_the_metadata_and_checked() {
        let key_of = |metadata: &MetadataMap| {
            IdempotencyKey::from_metadata(metadata).map_err(ConsignmentError::from)
        };
        let mut metadata = MetadataMap::new();
        assert_eq!(key_of(&metadata).expect("none"), None);
        metadata.insert("idempotency-key", "order-1".parse().expect("ASCII"));
        assert_eq!(
            key_of(&metadata)
                .expect("valid")
                .map(|k| k.as_str().to_owned()),
            Some("order-1".to_owned())
        );
        metadata.insert("idempotency-key", "two words".parse().expect("ASCII"));
        let refused = status(key_of(&metadata).expect_err("a space"));
        assert_eq!(
            (refused.code(), refused.message()),
            (
                Code::InvalidArgument,
                "idempotency-key: only printable ASCII characters without spaces"
            )
        );
    }
}
