//! Idempotency keys: a client's name for one thing it asks to create, so that a repeat of the
//! request (after a timeout, a lost answer, an "it may have been saved") is answered with what the
//! first created and creates nothing more. Which calls honour one is `shippy_proto::idempotency`;
//! each service decides what "the same request" means for what it creates.

use tonic::metadata::MetadataMap;

use crate::validate::FieldError;

/// Longest idempotency key.
pub const MAX_KEY: usize = 128;

/// A key as a client sent it, checked: printable ASCII without spaces, 1 to [`MAX_KEY`]
/// characters (a UUID is a good one). Unique per user: two users' equal keys name different
/// things. Only [`IdempotencyKey::parse`] makes one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The field a refusal names: the metadata key (and HTTP header) clients send it in.
    pub const FIELD: &'static str = shippy_proto::idempotency::METADATA_KEY;

    /// Checks a key sent by a client.
    pub fn parse(key: &str) -> Result<Self, FieldError> {
        if key.is_empty() {
            return Err(FieldError::new(Self::FIELD, "must not be empty"));
        }
        if key.len() > MAX_KEY {
            return Err(FieldError::new(
                Self::FIELD,
                format!("longer than {MAX_KEY} characters"),
            ));
        }
        // Visible ASCII only: the key travels as a header, and what cannot be typed cannot be
        // compared by a person reading a log either.
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(FieldError::new(
                Self::FIELD,
                "only printable ASCII characters without spaces",
            ));
        }
        Ok(Self(key.to_owned()))
    }

    /// The key of a call, from its `idempotency-key` metadata: `None` when it sent none.
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Option<Self>, FieldError> {
        let Some(value) = metadata.get(shippy_proto::idempotency::METADATA_KEY) else {
            return Ok(None);
        };
        // Bytes that are not text are refused by the rule of `parse` (printable ASCII only).
        Self::parse(&String::from_utf8_lossy(value.as_bytes())).map(Some)
    }

    /// The key as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `owner`'s key as one text that no other (owner, key) pair makes: the owner's length
    /// first, whatever characters either holds. What a store indexes a key by.
    pub fn scoped_to(&self, owner: &str) -> String {
        format!("{}:{owner}{}", owner.len(), self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_printable_and_bounded() {
        assert_eq!(
            IdempotencyKey::parse("0d5c2f1e-7a4b-4c1d-9e8f-123456789abc")
                .expect("a UUID")
                .as_str(),
            "0d5c2f1e-7a4b-4c1d-9e8f-123456789abc"
        );
        IdempotencyKey::parse(&"k".repeat(MAX_KEY)).expect("at the limit");
        for (key, reason) in [
            ("", "idempotency-key: must not be empty"),
            (
                "two words",
                "idempotency-key: only printable ASCII characters without spaces",
            ),
            (
                "tab\there",
                "idempotency-key: only printable ASCII characters without spaces",
            ),
            (
                "caf\u{e9}",
                "idempotency-key: only printable ASCII characters without spaces",
            ),
        ] {
            assert_eq!(
                IdempotencyKey::parse(key).expect_err(key).to_string(),
                reason
            );
        }
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(MAX_KEY + 1))
                .expect_err("too long")
                .to_string(),
            "idempotency-key: longer than 128 characters"
        );
    }

    #[test]
    fn the_key_is_read_from_the_metadata_and_checked() {
        let mut metadata = MetadataMap::new();
        assert_eq!(
            IdempotencyKey::from_metadata(&metadata).expect("none"),
            None
        );
        metadata.insert("idempotency-key", "order-1".parse().expect("ASCII"));
        assert_eq!(
            IdempotencyKey::from_metadata(&metadata)
                .expect("a key")
                .expect("sent")
                .as_str(),
            "order-1"
        );
        metadata.insert("idempotency-key", "two words".parse().expect("ASCII"));
        assert_eq!(
            IdempotencyKey::from_metadata(&metadata)
                .expect_err("a space")
                .to_string(),
            "idempotency-key: only printable ASCII characters without spaces"
        );
    }

    #[test]
    fn scoped_keys_of_different_owners_never_meet() {
        let key = |k: &str| IdempotencyKey::parse(k).expect("key");
        assert_ne!(key("1b").scoped_to("a"), key("b").scoped_to("a1"));
        assert_eq!(key("k").scoped_to("ann"), "3:annk");
    }
}
