//! Authentication of incoming calls: `authorization: Bearer <jwt>` metadata, checked by the user
//! service's `ValidateToken` (found through discovery). One implementation, and one mapping of its
//! errors to a `Status`, for every service that needs a caller; a handler runs it at the edge and
//! hands the domain only the caller's id.

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
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthenticated(message) => Status::unauthenticated(message),
            AuthError::UserService(status) => crate::status::upstream("user", &status),
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
        let header = metadata.get("authorization").ok_or_else(|| {
            AuthError::Unauthenticated(
                "missing `authorization: Bearer <token>` metadata; log in first".into(),
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                AuthError::Unauthenticated("authorization metadata must be `Bearer <token>`".into())
            })?;
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
