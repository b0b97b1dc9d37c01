//! Consignments: validation of what clients send, the ids the service makes, and the errors of the
//! consignment service. Pure domain: nothing here knows of protobuf or gRPC; `grpc.rs` turns
//! requests into these types and errors into statuses.

use shippy_shared::{
    store::StoreError,
    validate::{self, FieldError, Presence},
};

/// Longest description.
pub const MAX_DESCRIPTION: usize = 2_000;
/// Most containers in one consignment.
pub const MAX_CONTAINERS: usize = 10_000;
/// Longest customer id, origin or user id of a container.
pub const MAX_FIELD: usize = 200;
/// Most bytes a consignment may take once stored: its text, and per container what the service
/// adds ([`ADDED_PER_CONTAINER`]). Every answer that holds a consignment (the one that created it,
/// a page of a list) must stay under the 4 MiB a client accepts by default; without this bound a
/// request just under 4 MiB would be stored at nearly 5 MiB and could never be read back.
pub const MAX_STORED_BYTES: usize = 3 * 1024 * 1024 + 512 * 1024;
/// Bytes the service may add to each container as it stores it: its id (36), the caller's id as
/// its user when it names none (36), and room for the encoding's framing.
const ADDED_PER_CONTAINER: usize = 96;

/// A container of a consignment, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Unique id, made by [`new_container_id`].
    pub id: String,
    /// Customer owning the goods.
    pub customer_id: String,
    /// Where it comes from.
    pub origin: String,
    /// User who submitted it.
    pub user_id: String,
}

/// A consignment, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consignment {
    /// Unique, time-ordered id, made by [`new_id`].
    pub id: String,
    /// What is shipped.
    pub description: String,
    /// Total weight.
    pub weight: u32,
    /// At least one container.
    pub containers: Vec<Container>,
    /// The vessel carrying it.
    pub vessel_id: String,
    /// The user who submitted it: the only one who sees it listed.
    pub owner_id: String,
}

/// The one place consignment ids are made: a UUIDv7, whose text sorts by creation time (stores
/// list consignments in id order, which is arrival order). Clients never choose one.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The one place container ids are made: a random UUID. Clients never choose one.
pub fn new_container_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A container as a client sent it, not yet checked: the input of [`NewConsignment::parse`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerFields<'a> {
    /// Customer owning the goods (required).
    pub customer_id: &'a str,
    /// Where it comes from (required).
    pub origin: &'a str,
    /// User who submitted it (optional: the caller when empty).
    pub user_id: &'a str,
}

/// A validated consignment that has no vessel or ids yet; only [`NewConsignment::parse`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConsignment {
    description: String,
    weight: u32,
    containers: Vec<NewContainer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NewContainer {
    customer_id: String,
    origin: String,
    user_id: String,
}

impl NewContainer {
    /// Checks the container at position `i`; its fields are named `containers[i].…` on refusal.
    fn parse(i: usize, fields: ContainerFields<'_>) -> Result<Self, FieldError> {
        Ok(Self {
            customer_id: validate::text(
                || format!("containers[{i}].customer_id"),
                fields.customer_id,
                MAX_FIELD,
                Presence::Required,
            )?,
            origin: validate::text(
                || format!("containers[{i}].origin"),
                fields.origin,
                MAX_FIELD,
                Presence::Required,
            )?,
            user_id: validate::text(
                || format!("containers[{i}].user_id"),
                fields.user_id,
                MAX_FIELD,
                Presence::Optional,
            )?,
        })
    }
}

impl NewConsignment {
    /// Checks a consignment sent by a client: a description, a weight of at least 1, and from 1
    /// to [`MAX_CONTAINERS`] containers, each with a customer and an origin.
    pub fn parse<'a>(
        description: &str,
        weight: i64,
        containers: impl ExactSizeIterator<Item = ContainerFields<'a>>,
    ) -> Result<Self, FieldError> {
        let description = validate::text(
            || "description".into(),
            description,
            MAX_DESCRIPTION,
            Presence::Required,
        )?;
        let weight = validate::at_least(|| "weight".into(), weight, 1)?;
        if containers.len() == 0 {
            return Err(FieldError::new(
                "containers",
                "at least one container is needed",
            ));
        }
        if containers.len() > MAX_CONTAINERS {
            return Err(FieldError::new(
                "containers",
                format!("at most {MAX_CONTAINERS} per consignment"),
            ));
        }
        let containers: Vec<NewContainer> = containers
            .enumerate()
            .map(|(i, fields)| NewContainer::parse(i, fields))
            .collect::<Result<_, _>>()?;
        let stored = description.len()
            + containers
                .iter()
                .map(|c| {
                    c.customer_id.len() + c.origin.len() + c.user_id.len() + ADDED_PER_CONTAINER
                })
                .sum::<usize>();
        if stored > MAX_STORED_BYTES {
            return Err(FieldError::new(
                "containers",
                format!(
                    "{} KiB in all once stored; a consignment may take at most {} KiB",
                    stored.div_ceil(1024),
                    MAX_STORED_BYTES / 1024
                ),
            ));
        }
        Ok(Self {
            description,
            weight,
            containers,
        })
    }

    /// Containers to carry: the capacity a vessel needs.
    pub fn container_count(&self) -> u32 {
        // Bounded by MAX_CONTAINERS.
        u32::try_from(self.containers.len()).unwrap_or(u32::MAX)
    }

    /// Total weight: the max_weight a vessel needs.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Whether `stored`, created by the caller `stored.owner_id`, is what this request asks for:
    /// the same description, weight and containers (ids and the vessel are the service's). A
    /// repeated request must be the same request; a key used again for another consignment is a
    /// client's mistake, not a repeat.
    pub fn is_same_as(&self, stored: &Consignment) -> bool {
        self.description == stored.description
            && self.weight == stored.weight
            && self.containers.len() == stored.containers.len()
            && self
                .containers
                .iter()
                .zip(&stored.containers)
                .all(|(asked, kept)| {
                    let user = if asked.user_id.is_empty() {
                        &stored.owner_id
                    } else {
                        &asked.user_id
                    };
                    asked.customer_id == kept.customer_id
                        && asked.origin == kept.origin
                        && *user == kept.user_id
                })
    }

    /// The consignment to store: ids made here, `vessel_id` set, owned by the authenticated
    /// `caller`, and containers without a `user_id` attributed to the caller. (That a `user_id`
    /// sent by a client names nobody but the caller is checked at the edge, with the rest of the
    /// access model.)
    pub fn assign(self, vessel_id: String, caller: &str) -> Consignment {
        Consignment {
            id: new_id(),
            description: self.description,
            weight: self.weight,
            containers: self
                .containers
                .into_iter()
                .map(|k| Container {
                    id: new_container_id(),
                    customer_id: k.customer_id,
                    origin: k.origin,
                    user_id: if k.user_id.is_empty() {
                        caller.to_owned()
                    } else {
                        k.user_id
                    },
                })
                .collect(),
            vessel_id,
            owner_id: caller.to_owned(),
        }
    }
}

/// What can go wrong in the consignment service itself. Authentication and the failures of the
/// services it calls are the edge's business (`grpc.rs`).
#[derive(Debug, thiserror::Error)]
pub enum ConsignmentError {
    /// A field of the request is not acceptable.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No vessel fits; the text is the vessel service's explanation.
    #[error("{0}")]
    NoVessel(String),
    /// The caller used this idempotency key before, for a different consignment.
    #[error(
        "idempotency-key: already used for a different consignment; a new consignment needs a new key"
    )]
    KeyReused,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container<'a>(customer_id: &'a str, origin: &'a str) -> ContainerFields<'a> {
        ContainerFields {
            customer_id,
            origin,
            user_id: "",
        }
    }

    fn refused(description: &str, weight: i64, containers: &[ContainerFields<'_>]) -> FieldError {
        NewConsignment::parse(description, weight, containers.iter().copied()).expect_err("invalid")
    }

    #[test]
    fn valid_consignment_gets_ids_vessel_and_caller() {
        let new = NewConsignment::parse(
            " This is a test consignment ",
            55_000,
            [
                container("cust001", "Manchester, United Kingdom"),
                container("cust002", "Derby"),
                ContainerFields {
                    user_id: " user-9 ",
                    ..container("cust003", "Leeds")
                },
            ]
            .into_iter(),
        )
        .expect("valid");
        assert_eq!((new.container_count(), new.weight()), (3, 55_000));
        let stored = new.assign("vessel001".into(), "user-42");
        assert_eq!(stored.vessel_id, "vessel001");
        assert_eq!(stored.owner_id, "user-42");
        assert_eq!(stored.description, "This is a test consignment");
        assert!(!stored.id.is_empty());
        let users: Vec<&str> = stored
            .containers
            .iter()
            .map(|k| k.user_id.as_str())
            .collect();
        assert_eq!(users, ["user-42", "user-42", "user-9"]);
        assert!(stored.containers.iter().all(|k| !k.id.is_empty()));
        assert_ne!(stored.containers[0].id, stored.containers[1].id);
    }

    #[test]
    fn ids_are_fresh_and_consignment_ids_sort_by_creation() {
        let ids: Vec<String> = (0..50).map(|_| new_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids, "unique and in creation order");
        assert_ne!(new_container_id(), new_container_id());
    }

    #[test]
    fn each_invalid_field_is_named_with_the_reason_clients_see() {
        let ok = [container("c", "o")];
        assert_eq!(
            refused("  ", 1, &ok).to_string(),
            "description: must not be empty"
        );
        assert_eq!(
            refused(&"x".repeat(MAX_DESCRIPTION + 1), 1, &ok).to_string(),
            format!("description: longer than {MAX_DESCRIPTION} characters")
        );
        assert_eq!(
            refused("d", 0, &ok).to_string(),
            "weight: must be at least 1 (got 0)"
        );
        assert_eq!(
            refused("d", -5, &ok).to_string(),
            "weight: must be at least 1 (got -5)"
        );
        assert_eq!(
            refused("d", 1, &[]).to_string(),
            "containers: at least one container is needed"
        );
        assert_eq!(
            refused("d", 1, &vec![container("c", "o"); MAX_CONTAINERS + 1]).to_string(),
            "containers: at most 10000 per consignment"
        );
        assert_eq!(
            refused("d", 1, &[container("c", "o"), container("c", "")]).to_string(),
            "containers[1].origin: must not be empty"
        );
        assert_eq!(
            refused("d", 1, &[container("", "o")]).field(),
            "containers[0].customer_id"
        );
        let long_user = "u".repeat(MAX_FIELD + 1);
        let with_long_user = ContainerFields {
            user_id: &long_user,
            ..container("c", "o")
        };
        assert_eq!(
            refused("d", 1, &[with_long_user]).to_string(),
            format!("containers[0].user_id: longer than {MAX_FIELD} characters")
        );
    }

    #[test]
    fn a_repeated_request_is_recognised_and_a_different_one_is_not() {
        let parse = |description: &str, weight: i64, user: &'static str| {
            NewConsignment::parse(
                description,
                weight,
                [
                    container("cust001", "Derby"),
                    ContainerFields {
                        user_id: user,
                        ..container("cust002", "Leeds")
                    },
                ]
                .into_iter(),
            )
            .expect("valid")
        };
        let stored = parse("cargo", 10, "").assign("vessel001".into(), "user-1");
        // The same request, whether the caller left its user id out or named itself.
        assert!(parse("cargo", 10, "").is_same_as(&stored));
        assert!(parse(" cargo ", 10, "user-1").is_same_as(&stored));
        assert!(!parse("other cargo", 10, "").is_same_as(&stored));
        assert!(!parse("cargo", 11, "").is_same_as(&stored));
        assert!(!parse("cargo", 10, "user-2").is_same_as(&stored));
        let one = NewConsignment::parse("cargo", 10, [container("cust001", "Derby")].into_iter())
            .expect("valid");
        assert!(!one.is_same_as(&stored));
    }

    #[test]
    fn limits_are_inclusive() {
        let max = vec![container("c", "o"); MAX_CONTAINERS];
        let new = NewConsignment::parse(&"x".repeat(MAX_DESCRIPTION), 1, max.iter().copied())
            .expect("at the limits");
        assert_eq!(new.container_count(), 10_000);
    }

    #[test]
    fn what_is_stored_stays_readable() {
        // 10 000 containers of 150-byte fields: about 3 MB, under 4 MiB as a request, but about
        // 3.9 MB once ids are added.
        let field = "f".repeat(150);
        let full = vec![container(&field, &field); MAX_CONTAINERS];
        assert_eq!(
            refused("d", 1, &full).to_string(),
            "containers: 3868 KiB in all once stored; a consignment may take at most 3584 KiB"
        );
        let field = "f".repeat(130);
        let fits = vec![container(&field, &field); MAX_CONTAINERS];
        NewConsignment::parse("d", 1, fits.iter().copied()).expect("3.4 MiB once stored");
    }
}
