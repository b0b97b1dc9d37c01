//! Authentication of incoming calls: `authorization: Bearer <jwt>` metadata, checked by the user
//! service's `ValidateToken` (found through discovery). One implementation, and one mapping of its
//! errors to a `Status`, for every service that needs a caller; a handler runs it at the edge and
//! hands the domain only the caller's id.
//!
//! The access model's one rule for what a caller may claim lives here too ([`own`]): a field that
//! names a user (a container's `user_id`, a vessel's `owner_id`) may be empty (the caller is meant)
//! or the caller's own id, never another user's.

use shippy_proto::user::v1::{Token, user_service_client::UserServiceClient};
use tonic::{Code, Status, metadata::MetadataMap};

use crate::discovery::balance::BalancedChannel;

/// Why a call is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token, a malformed header, or a token the user service refused (message safe for clients).
    #[error("{0}")]
    Unauthenticated(String),
    /// The user service could not answer.
    #[error("user service: {0}")]
    UserService(Status),
    /// The caller is known but may not do this (message safe for clients).
    #[error("{0}")]
    Forbidden(String),
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthenticated(message) => Status::unauthenticated(message),
            AuthError::UserService(status) => crate::status::upstream("user", &status),
            AuthError::Forbidden(message) => Status::permission_denied(message),
        }
    }
}

/// Checks bearer tokens with the user service.
#[derive(Debug, Clone)]
pub struct Authenticator {
    users: UserServiceClient<BalancedChannel>,
}

impl Authenticator {
    /// Validates tokens through `users`, a balanced channel to the user service.
    pub fn new(users: BalancedChannel) -> Self {
        Self {
            users: UserServiceClient::new(users),
        }
    }

    /// The caller's user id.
    pub async fn caller(&self, metadata: &MetadataMap) -> Result<String, AuthError> {
        let token = bearer(metadata)?;
        let request = Token {
            token: token.to_owned(),
            ..Default::default()
        };
        match self.users.clone().validate_token(request).await {
            Ok(answer) if answer.get_ref().valid => Ok(answer.into_inner().user_id),
            Ok(_) => Err(AuthError::Unauthenticated("invalid token".into())),
            Err(status) if status.code() == Code::Unauthenticated => {
                Err(AuthError::Unauthenticated(status.message().to_owned()))
            }
            Err(status) => Err(AuthError::UserService(status)),
        }
    }
}

/// The token of `authorization: Bearer <token>` metadata, unchecked.
pub fn bearer(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let header = metadata.get("authorization").ok_or_else(|| {
        AuthError::Unauthenticated(
            "missing `authorization: Bearer <token>` metadata; log in first".into(),
        )
    })?;
    header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            AuthError::Unauthenticated("authorization metadata must be `Bearer <token>`".into())
        })
}

/// Checks that `value`, the request field `field` naming a user, is empty or the `caller`'s own id:
/// nobody may act in another user's name. `PERMISSION_DENIED` naming the field otherwise. The
/// field's name is built only for that answer (`containers[7].user_id` costs an allocation).
pub fn own<F: std::fmt::Display>(
    caller: &str,
    field: impl FnOnce() -> F,
    value: &str,
) -> Result<(), AuthError> {
    let value = value.trim();
    if value.is_empty() || value == caller {
        Ok(())
    } else {
        Err(AuthError::Forbidden(format!(
            "{}: must be empty or your own user id; you may not act for another user",
            field()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn only_the_caller_or_nobody_may_be_named() {
        assert!(own("u1", || "owner_id", "").is_ok());
        assert!(own("u1", || "owner_id", " u1 ").is_ok());
        let refused = Status::from(own("u1", || "containers[2].user_id", "u2").expect_err("other"));
        assert_eq!(
            (refused.code(), refused.message()),
            (
                Code::PermissionDenied,
                "containers[2].user_id: must be empty or your own user id; you may not act for \
                 another user"
            )
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut metadata = MetadataMap::new();
        let missing = Status::from(bearer(&metadata).expect_err("missing"));
        assert_eq!(missing.code(), Code::Unauthenticated);
        metadata.insert("authorization", "Basic abc".parse().expect("value"));
        assert!(bearer(&metadata).is_err());
        metadata.insert("authorization", "Bearer  abc ".parse().expect("value"));
        assert_eq!(bearer(&metadata).expect("token"), "abc");
    }
}
