//! Vessels and the rule that picks one for a consignment. Pure domain: nothing here knows of
//! protobuf or gRPC; `grpc.rs` turns requests into these types and errors into statuses.

use shippy_shared::{
    idempotency::IdempotencyKey,
    store::StoreError,
    validate::{self, FieldError, Presence},
};

/// Longest accepted name.
pub const MAX_NAME: usize = 200;

/// A vessel of the fleet, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vessel {
    /// Unique id, made by [`new_id`] or [`keyed_id`] (or a fixed id for the default fleet).
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

/// The one place vessel ids are made: a random UUID. Clients never choose one.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The id of the vessel `owner` asks for with `key`: a name-based UUID (v5) of the owner's key,
/// the same for every repeat of the request, so the store itself refuses a second vessel; another
/// owner's equal key names another id. A client still cannot choose an id: only the digest of its
/// key and its own user id.
pub fn keyed_id(owner: &str, key: &IdempotencyKey) -> String {
    /// This UUID namespace is shippy's vessels' own (a fixed random UUID).
    const VESSELS: uuid::Uuid = uuid::uuid!("6f1c2a8e-3b0d-4e57-9a64-0d2f5b7c9e13");
    uuid::Uuid::new_v5(&VESSELS, key.scoped_to(owner).as_bytes()).to_string()
}

/// A validated request to add a vessel; only [`NewVessel::parse`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVessel {
    name: String,
    capacity: u32,
    max_weight: u32,
    available: bool,
}

impl NewVessel {
    /// Checks a vessel sent by a client: a name, and a capacity and maximum weight of at least 1.
    pub fn parse(
        name: &str,
        capacity: i64,
        max_weight: i64,
        available: bool,
    ) -> Result<Self, FieldError> {
        Ok(Self {
            name: validate::text(|| "name".into(), name, MAX_NAME, Presence::Required)?,
            capacity: validate::at_least(|| "capacity".into(), capacity, 1)?,
            max_weight: validate::at_least(|| "max_weight".into(), max_weight, 1)?,
            available,
        })
    }

    /// The vessel to store, owned by `owner_id`, with a new id, or with the id its owner's `key`
    /// names ([`keyed_id`]).
    pub fn into_vessel(self, owner_id: String, key: Option<&IdempotencyKey>) -> Vessel {
        Vessel {
            id: key.map_or_else(new_id, |key| keyed_id(&owner_id, key)),
            name: self.name,
            capacity: self.capacity,
            max_weight: self.max_weight,
            available: self.available,
            owner_id,
        }
    }
}

impl Vessel {
    /// Whether this vessel is what `asked` (of the same owner) asks for: a repeat of the request
    /// that created it.
    pub fn is_what(&self, asked: &NewVessel) -> bool {
        self.name == asked.name
            && self.capacity == asked.capacity
            && self.max_weight == asked.max_weight
            && self.available == asked.available
    }
}

/// What a consignment needs from a vessel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Specification {
    /// Containers to carry.
    pub capacity: u32,
    /// Total weight to carry.
    pub max_weight: u32,
}

impl Specification {
    /// Checks a specification sent by a client: neither number may be negative.
    pub fn parse(capacity: i64, max_weight: i64) -> Result<Self, FieldError> {
        Ok(Self {
            capacity: validate::at_least(|| "capacity".into(), capacity, 0)?,
            max_weight: validate::at_least(|| "max_weight".into(), max_weight, 0)?,
        })
    }

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

/// What can go wrong in the vessel service.
#[derive(Debug, thiserror::Error)]
pub enum VesselError {
    /// A field of a request is not acceptable.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The caller used this idempotency key before, for a different vessel.
    #[error("idempotency-key: already used for a different vessel; a new vessel needs a new key")]
    KeyReused,
    /// No available vessel is large enough.
    #[error(
        "no available vessel can carry {} containers weighing {} in total",
        .0.capacity, .0.max_weight
    )]
    NoneFits(Specification),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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
    fn none_fits_says_what_was_asked_for() {
        let error = VesselError::NoneFits(Specification {
            capacity: 3,
            max_weight: 9,
        });
        assert_eq!(
            error.to_string(),
            "no available vessel can carry 3 containers weighing 9 in total"
        );
    }

    #[test]
    fn negative_specification_is_rejected_naming_the_field() {
        let err = Specification::parse(-1, 5).expect_err("negative");
        assert_eq!(err.to_string(), "capacity: must not be negative (got -1)");
        assert_eq!(
            Specification::parse(0, 0),
            Ok(Specification {
                capacity: 0,
                max_weight: 0
            })
        );
    }

    #[test]
    fn new_vessels_are_validated_and_get_a_fresh_id() {
        let vessel = NewVessel::parse(" Ship ", 3, 10, true)
            .expect("valid")
            .into_vessel("owner".into(), None);
        assert_eq!(vessel.name, "Ship");
        assert_eq!(vessel.owner_id, "owner");
        let other = NewVessel::parse("Ship", 3, 10, true)
            .expect("valid")
            .into_vessel(String::new(), None);
        assert_ne!(vessel.id, other.id, "every vessel gets its own id");
        for (name, capacity, max_weight, field) in [
            ("", 1, 1, "name"),
            ("x", 0, 1, "capacity"),
            ("x", 1, -4, "max_weight"),
        ] {
            let err = NewVessel::parse(name, capacity, max_weight, true).expect_err("invalid");
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn a_key_names_one_vessel_per_owner_and_a_repeat_is_recognised() {
        let key = IdempotencyKey::parse("fleet-1").expect("key");
        let asked = NewVessel::parse("Ship", 3, 10, true).expect("valid");
        let vessel = asked.clone().into_vessel("ann".into(), Some(&key));
        assert_eq!(vessel.id, keyed_id("ann", &key));
        assert_eq!(vessel.id.len(), 36, "a UUID: {}", vessel.id);
        assert_ne!(vessel.id, keyed_id("bob", &key), "another owner's key");
        assert_ne!(
            vessel.id,
            keyed_id("ann", &IdempotencyKey::parse("fleet-2").expect("key"))
        );
        assert!(vessel.is_what(&asked));
        for other in [
            NewVessel::parse("Other", 3, 10, true),
            NewVessel::parse("Ship", 4, 10, true),
            NewVessel::parse("Ship", 3, 11, true),
            NewVessel::parse("Ship", 3, 10, false),
        ] {
            assert!(!vessel.is_what(&other.expect("valid")));
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
