//! Consignments: validation of what clients send, and the errors of the consignment service.

use shippy_proto::consignment::v1 as pb;
use shippy_shared::{auth::AuthError, store::StoreError};
use tonic::Status;

/// Longest description.
pub const MAX_DESCRIPTION: usize = 2_000;
/// Most containers in one consignment.
pub const MAX_CONTAINERS: usize = 10_000;
const MAX_FIELD: usize = 200;

/// A container of a consignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Unique id, generated.
    pub id: String,
    /// Customer owning the goods.
    pub customer_id: String,
    /// Where it comes from.
    pub origin: String,
    /// User who submitted it.
    pub user_id: String,
}

/// A stored consignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consignment {
    /// Unique, time-ordered id.
    pub id: String,
    /// What is shipped.
    pub description: String,
    /// Total weight.
    pub weight: u32,
    /// At least one container.
    pub containers: Vec<Container>,
    /// The vessel carrying it.
    pub vessel_id: String,
}

/// A validated consignment that has no vessel or ids yet.
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

/// What can go wrong in the consignment service.
#[derive(Debug, thiserror::Error)]
pub enum ConsignmentError {
    /// No token, or a token the user service refused.
    #[error("{0}")]
    Unauthenticated(String),
    /// A field of the request is not acceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending field, e.g. `containers[1].origin`.
        field: String,
        /// Why.
        reason: String,
    },
    /// The vessel service found no vessel that fits.
    #[error("{0}")]
    NoVessel(String),
    /// Another service failed or could not be reached.
    #[error("{service} service: {status}")]
    Dependency {
        /// `vessel` or `user`.
        service: &'static str,
        /// What it answered.
        status: Status,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AuthError> for ConsignmentError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthenticated(message) => Self::Unauthenticated(message),
            AuthError::UserService(status) => Self::Dependency {
                service: "user",
                status,
            },
        }
    }
}

impl From<ConsignmentError> for Status {
    fn from(error: ConsignmentError) -> Self {
        match error {
            ConsignmentError::Unauthenticated(message) => Status::unauthenticated(message),
            invalid @ ConsignmentError::Invalid { .. } => {
                Status::invalid_argument(invalid.to_string())
            }
            ConsignmentError::NoVessel(message) => Status::not_found(message),
            ConsignmentError::Dependency { service, status } => {
                shippy_shared::upstream::status(service, &status)
            }
            ConsignmentError::Store(store) => store.to_status(),
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConsignmentError {
    ConsignmentError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn text(
    field: impl Into<String>,
    value: &str,
    max: usize,
    required: bool,
) -> Result<String, ConsignmentError> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("longer than {max} characters")));
    }
    Ok(value.to_owned())
}

impl TryFrom<pb::Consignment> for NewConsignment {
    type Error = ConsignmentError;

    fn try_from(c: pb::Consignment) -> Result<Self, Self::Error> {
        let description = text("description", &c.description, MAX_DESCRIPTION, true)?;
        let weight = u32::try_from(c.weight)
            .ok()
            .filter(|w| *w > 0)
            .ok_or_else(|| {
                invalid(
                    "weight",
                    format!("must be greater than 0 (got {})", c.weight),
                )
            })?;
        if c.containers.is_empty() {
            return Err(invalid("containers", "at least one container is needed"));
        }
        if c.containers.len() > MAX_CONTAINERS {
            return Err(invalid(
                "containers",
                format!("at most {MAX_CONTAINERS} per consignment"),
            ));
        }
        let containers = c
            .containers
            .iter()
            .enumerate()
            .map(|(i, k)| {
                Ok(NewContainer {
                    customer_id: text(
                        format!("containers[{i}].customer_id"),
                        &k.customer_id,
                        MAX_FIELD,
                        true,
                    )?,
                    origin: text(
                        format!("containers[{i}].origin"),
                        &k.origin,
                        MAX_FIELD,
                        true,
                    )?,
                    user_id: text(
                        format!("containers[{i}].user_id"),
                        &k.user_id,
                        MAX_FIELD,
                        false,
                    )?,
                })
            })
            .collect::<Result<_, ConsignmentError>>()?;
        Ok(Self {
            description,
            weight,
            containers,
        })
    }
}

impl NewConsignment {
    /// Containers to carry: the capacity a vessel needs.
    pub fn container_count(&self) -> u32 {
        // Bounded by MAX_CONTAINERS.
        u32::try_from(self.containers.len()).unwrap_or(u32::MAX)
    }

    /// Total weight: the max_weight a vessel needs.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The consignment to store: ids generated, `vessel_id` set, and containers without a `user_id`
    /// attributed to the authenticated caller.
    pub fn assign(self, vessel_id: String, caller: &str) -> Consignment {
        Consignment {
            id: uuid::Uuid::now_v7().to_string(),
            description: self.description,
            weight: self.weight,
            containers: self
                .containers
                .into_iter()
                .map(|k| Container {
                    id: uuid::Uuid::new_v4().to_string(),
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
        }
    }
}

impl From<Consignment> for pb::Consignment {
    fn from(c: Consignment) -> Self {
        Self {
            id: c.id,
            description: c.description,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn container(customer: &str, origin: &str) -> pb::Container {
        pb::Container {
            customer_id: customer.into(),
            origin: origin.into(),
            ..Default::default()
        }
    }

    fn consignment(
        description: &str,
        weight: i32,
        containers: Vec<pb::Container>,
    ) -> pb::Consignment {
        pb::Consignment {
            description: description.into(),
            weight,
            containers,
            ..Default::default()
        }
    }

    fn field_of(request: pb::Consignment) -> String {
        let status = Status::from(NewConsignment::try_from(request).expect_err("invalid"));
        assert_eq!(status.code(), Code::InvalidArgument);
        status
            .message()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn valid_consignment_gets_ids_vessel_and_caller() {
        let new = NewConsignment::try_from(consignment(
            " This is a test consignment ",
            55_000,
            vec![
                container("cust001", "Manchester, United Kingdom"),
                container("cust002", "Derby"),
            ],
        ))
        .expect("valid");
        assert_eq!((new.container_count(), new.weight()), (2, 55_000));
        let stored = new.assign("vessel001".into(), "user-42");
        assert_eq!(stored.vessel_id, "vessel001");
        assert_eq!(stored.description, "This is a test consignment");
        assert!(!stored.id.is_empty());
        assert!(
            stored
                .containers
                .iter()
                .all(|k| k.user_id == "user-42" && !k.id.is_empty())
        );
    }

    #[test]
    fn each_invalid_field_is_named() {
        let ok = || vec![container("c", "o")];
        assert_eq!(field_of(consignment("  ", 1, ok())), "description");
        assert_eq!(field_of(consignment("d", 0, ok())), "weight");
        assert_eq!(field_of(consignment("d", -5, ok())), "weight");
        assert_eq!(field_of(consignment("d", 1, vec![])), "containers");
        assert_eq!(
            field_of(consignment(
                "d",
                1,
                vec![container("c", "o"), container("c", "")]
            )),
            "containers[1].origin"
        );
        assert_eq!(
            field_of(consignment("d", 1, vec![container("", "o")])),
            "containers[0].customer_id"
        );
        assert_eq!(
            field_of(consignment(&"x".repeat(MAX_DESCRIPTION + 1), 1, ok())),
            "description"
        );
        assert_eq!(
            field_of(consignment(
                "d",
                1,
                vec![container("c", "o"); MAX_CONTAINERS + 1]
            )),
            "containers"
        );
    }
}
