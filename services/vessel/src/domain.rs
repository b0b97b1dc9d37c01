//! Vessels and the rule that picks one for a consignment.

use shippy_proto::vessel::v1 as pb;
use shippy_shared::{auth::AuthError, store::StoreError};
use tonic::Status;

/// A vessel of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vessel {
    /// Unique id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Number of containers it carries.
    pub capacity: u32,
    /// Heaviest load it carries.
    pub max_weight: u32,
    /// Whether it takes new consignments.
    pub available: bool,
    /// Owning user, may be empty.
    pub owner_id: String,
}

/// What a consignment needs from a vessel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Specification {
    /// Containers to carry.
    pub capacity: u32,
    /// Total weight to carry.
    pub max_weight: u32,
}

/// What can go wrong in the vessel service.
#[derive(Debug, thiserror::Error)]
pub enum VesselError {
    /// A field of a request is not acceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No available vessel is large enough.
    #[error(
        "no available vessel can carry {} containers weighing {} in total",
        .0.capacity, .0.max_weight
    )]
    NoneFits(Specification),
    /// No token, or a token the user service refused.
    #[error("{0}")]
    Unauthenticated(String),
    /// The user service could not check the token.
    #[error("user service: {0}")]
    UserService(Status),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AuthError> for VesselError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthenticated(message) => Self::Unauthenticated(message),
            AuthError::UserService(status) => Self::UserService(status),
        }
    }
}

impl From<VesselError> for Status {
    fn from(error: VesselError) -> Self {
        match &error {
            VesselError::Invalid { .. } => Status::invalid_argument(error.to_string()),
            VesselError::NoneFits(_) => Status::not_found(error.to_string()),
            VesselError::Unauthenticated(message) => Status::unauthenticated(message.clone()),
            VesselError::UserService(status) => shippy_shared::upstream::status("user", status),
            VesselError::Store(store) => store.to_status(),
        }
    }
}

fn non_negative(field: &'static str, value: i32) -> Result<u32, VesselError> {
    u32::try_from(value).map_err(|_| VesselError::Invalid {
        field,
        reason: format!("must not be negative (got {value})"),
    })
}

impl TryFrom<pb::Specification> for Specification {
    type Error = VesselError;

    fn try_from(spec: pb::Specification) -> Result<Self, Self::Error> {
        Ok(Self {
            capacity: non_negative("capacity", spec.capacity)?,
            max_weight: non_negative("max_weight", spec.max_weight)?,
        })
    }
}

impl Specification {
    /// Whether `vessel` is available and large enough in both dimensions.
    pub fn fits(&self, vessel: &Vessel) -> bool {
        vessel.available && vessel.capacity >= self.capacity && vessel.max_weight >= self.max_weight
    }

    /// The best fit: the smallest sufficient vessel (capacity first, then weight), ties broken by
    /// id so the answer is deterministic. Store queries must order the same way.
    pub fn best_fit<'a>(&self, fleet: impl IntoIterator<Item = &'a Vessel>) -> Option<&'a Vessel> {
        fleet
            .into_iter()
            .filter(|v| self.fits(v))
            .min_by(|a, b| fit_order(a).cmp(&fit_order(b)))
    }
}

/// Sort key of the best-fit rule.
pub fn fit_order(vessel: &Vessel) -> (u32, u32, &str) {
    (vessel.capacity, vessel.max_weight, vessel.id.as_str())
}

/// Longest accepted name.
const MAX_NAME: usize = 200;

impl TryFrom<pb::Vessel> for Vessel {
    type Error = VesselError;

    /// Validates a vessel sent by a client; a missing id is generated.
    fn try_from(v: pb::Vessel) -> Result<Self, Self::Error> {
        let name = v.name.trim().to_owned();
        if name.is_empty() {
            return Err(VesselError::Invalid {
                field: "name",
                reason: "must not be empty".into(),
            });
        }
        if name.chars().count() > MAX_NAME {
            return Err(VesselError::Invalid {
                field: "name",
                reason: format!("longer than {MAX_NAME} characters"),
            });
        }
        let capacity = non_negative("capacity", v.capacity)?;
        let max_weight = non_negative("max_weight", v.max_weight)?;
        if capacity == 0 {
            return Err(VesselError::Invalid {
                field: "capacity",
                reason: "must be at least 1".into(),
            });
        }
        if max_weight == 0 {
            return Err(VesselError::Invalid {
                field: "max_weight",
                reason: "must be at least 1".into(),
            });
        }
        let id = v.id.trim();
        let id = if id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            id.to_owned()
        };
        Ok(Self {
            id,
            name,
            capacity,
            max_weight,
            available: v.available,
            owner_id: v.owner_id,
        })
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

/// The fleet a fresh store starts with (when `vessel.seed_fleet` is on). Fixed ids keep seeding
/// idempotent across instances.
pub fn default_fleet() -> Vec<Vessel> {
    let vessel = |id: &str, name: &str, capacity, max_weight| Vessel {
        id: id.into(),
        name: name.into(),
        capacity,
        max_weight,
        available: true,
        owner_id: String::new(),
    };
    vec![
        vessel("vessel001", "Boaty McBoatface", 500, 200_000),
        vessel("vessel002", "Small Fry", 5, 25_000),
        vessel("vessel003", "Ever Roomier", 20_000, 200_000_000),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, capacity: u32, max_weight: u32, available: bool) -> Vessel {
        Vessel {
            id: id.into(),
            name: id.into(),
            capacity,
            max_weight,
            available,
            owner_id: String::new(),
        }
    }

    #[test]
    fn best_fit_is_the_smallest_sufficient_available_vessel() {
        let fleet = [
            v("big", 100, 100_000, true),
            v("small", 3, 60_000, true),
            v("tiny", 2, 90_000, true),
        ];
        let spec = Specification {
            capacity: 3,
            max_weight: 55_000,
        };
        assert_eq!(spec.best_fit(&fleet).map(|v| v.id.as_str()), Some("small"));
    }

    #[test]
    fn both_dimensions_must_fit_and_vessel_must_be_available() {
        let fleet = [v("light", 10, 1_000, true), v("busy", 10, 100_000, false)];
        let spec = Specification {
            capacity: 3,
            max_weight: 55_000,
        };
        assert_eq!(spec.best_fit(&fleet), None);
        // Exactly at the limit fits (the original shippy compared the wrong way).
        let exact = [v("exact", 3, 55_000, true)];
        assert_eq!(spec.best_fit(&exact).map(|v| v.id.as_str()), Some("exact"));
    }

    #[test]
    fn ties_are_broken_by_id() {
        let fleet = [
            v("b", 5, 10, true),
            v("a", 5, 10, true),
            v("c", 5, 10, true),
        ];
        let spec = Specification {
            capacity: 1,
            max_weight: 1,
        };
        assert_eq!(spec.best_fit(&fleet).map(|v| v.id.as_str()), Some("a"));
    }

    #[test]
    fn none_fits_is_not_found_with_a_clear_message() {
        let status = Status::from(VesselError::NoneFits(Specification {
            capacity: 3,
            max_weight: 9,
        }));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(
            status.message(),
            "no available vessel can carry 3 containers weighing 9 in total"
        );
    }

    #[test]
    fn negative_specification_is_rejected_naming_the_field() {
        let err = Specification::try_from(pb::Specification {
            capacity: -1,
            max_weight: 5,
        })
        .expect_err("negative");
        assert_eq!(
            Status::from(err).message(),
            "capacity: must not be negative (got -1)"
        );
    }

    #[test]
    fn new_vessels_are_validated() {
        let ok = pb::Vessel {
            name: " Ship ".into(),
            capacity: 3,
            max_weight: 10,
            available: true,
            ..Default::default()
        };
        let vessel = Vessel::try_from(ok).expect("valid");
        assert_eq!(vessel.name, "Ship");
        assert!(!vessel.id.is_empty());
        for (bad, field) in [
            (
                pb::Vessel {
                    name: "".into(),
                    capacity: 1,
                    max_weight: 1,
                    ..Default::default()
                },
                "name",
            ),
            (
                pb::Vessel {
                    name: "x".into(),
                    capacity: 0,
                    max_weight: 1,
                    ..Default::default()
                },
                "capacity",
            ),
            (
                pb::Vessel {
                    name: "x".into(),
                    capacity: 1,
                    max_weight: -4,
                    ..Default::default()
                },
                "max_weight",
            ),
        ] {
            let err = Vessel::try_from(bad).expect_err("invalid");
            assert!(err.to_string().starts_with(field), "{err}");
        }
    }

    #[test]
    fn default_fleet_serves_the_example_consignment() {
        let fleet = default_fleet();
        let spec = Specification {
            capacity: 3,
            max_weight: 55_000,
        };
        assert_eq!(
            spec.best_fit(&fleet).map(|v| v.id.as_str()),
            Some("vessel001")
        );
    }
}
