//! The edge of the user service: `shippy.user.v1.UserService` requests are validated into domain
//! types here, and every error becomes a `Status` in one place ([`status`]).

use std::{sync::Arc, time::SystemTime};

use shippy_proto::user::v1::{self as pb, user_service_server::UserService};
use shippy_shared::validate::FieldError;
use tonic::{Request, Response, Status};

use crate::{
    domain::{Email, NewUser, Password, User, UserError},
    password,
    store::UserStore,
    token::Tokens,
};

/// Serves `shippy.user.v1.UserService`.
#[derive(Debug, Clone)]
pub struct UserHandler {
    store: Arc<dyn UserStore>,
    tokens: Tokens,
}

impl UserHandler {
    /// A handler over `store`, issuing `tokens`.
    pub fn new(store: Arc<dyn UserStore>, tokens: Tokens) -> Self {
        Self { store, tokens }
    }
}

/// The one mapping of the user service's errors to what clients see.
fn status(error: UserError) -> Status {
    match &error {
        UserError::Invalid(_) => Status::invalid_argument(error.to_string()),
        UserError::InvalidCredentials | UserError::Token(_) => {
            Status::unauthenticated(error.to_string())
        }
        UserError::NotFound => Status::not_found(error.to_string()),
        UserError::Store(store) => shippy_shared::status::store(store),
        UserError::Internal(cause) => shippy_shared::status::internal(cause),
    }
}

impl From<User> for pb::User {
    /// The password field stays empty: neither the password nor its hash is ever returned.
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            name: user.name,
            company: user.company,
            email: user.email.as_str().to_owned(),
            password: String::new(),
        }
    }
}

#[tonic::async_trait]
impl UserService for UserHandler {
    async fn create(&self, request: Request<pb::User>) -> Result<Response<pb::Response>, Status> {
        // The id is always made here (`domain::new_id`); one sent by the client is ignored.
        let request = request.into_inner();
        let new = NewUser::parse(
            &request.name,
            &request.company,
            &request.email,
            request.password,
        )
        .map_err(|e| status(e.into()))?;
        let hash = password::hash(new.password()).await.map_err(status)?;
        let user = new.into_user(hash);
        self.store
            .create(&user)
            .await
            .map_err(|e| status(e.into()))?;
        tracing::info!(user = %user.id, email = %user.email, "user created");
        Ok(Response::new(pb::Response {
            user: Some(user.into()),
            users: Vec::new(),
        }))
    }

    async fn get(&self, request: Request<pb::User>) -> Result<Response<pb::Response>, Status> {
        let query = request.into_inner();
        let user = if !query.id.trim().is_empty() {
            self.store.get(query.id.trim()).await
        } else if !query.email.trim().is_empty() {
            let email = Email::parse(&query.email).map_err(|e| status(e.into()))?;
            self.store.find_by_email(&email).await
        } else {
            let missing = FieldError::new("id", "give an id or an email");
            return Err(status(missing.into()));
        }
        .map_err(|e| status(e.into()))?
        .ok_or_else(|| status(UserError::NotFound))?;
        Ok(Response::new(pb::Response {
            user: Some(user.into()),
            users: Vec::new(),
        }))
    }

    async fn get_all(
        &self,
        _request: Request<pb::Request>,
    ) -> Result<Response<pb::Response>, Status> {
        let users = self.store.list().await.map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::Response {
            user: None,
            users: users.into_iter().map(Into::into).collect(),
        }))
    }

    async fn auth(&self, request: Request<pb::User>) -> Result<Response<pb::Token>, Status> {
        let credentials = request.into_inner();
        // A malformed email cannot belong to anyone: same answer as a wrong password.
        let email =
            Email::parse(&credentials.email).map_err(|_| status(UserError::InvalidCredentials))?;
        let user = self
            .store
            .find_by_email(&email)
            .await
            .map_err(|e| status(e.into()))?;
        // An unknown email is checked against a dummy hash: it takes as long as a wrong password.
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let matches = password::verify(Password::attempt(credentials.password), hash)
            .await
            .map_err(status)?;
        let Some(user) = user.filter(|_| matches) else {
            tracing::info!(%email, "authentication failed");
            return Err(status(UserError::InvalidCredentials));
        };
        let token = self
            .tokens
            .issue(&user.id, user.email.as_str(), SystemTime::now())
            .map_err(|e| status(UserError::Internal(format!("signing failed: {e}"))))?;
        tracing::info!(user = %user.id, "token issued");
        Ok(Response::new(pb::Token {
            token,
            valid: true,
            user_id: user.id,
        }))
    }

    async fn validate_token(
        &self,
        request: Request<pb::Token>,
    ) -> Result<Response<pb::Token>, Status> {
        let token = request.into_inner().token;
        let claims = self.tokens.validate(&token).map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::Token {
            token,
            valid: true,
            user_id: claims.sub,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shippy_shared::store::StoreError;
    use tonic::Code;

    use super::*;
    use crate::{store::memory::MemoryStore, token::TokenError};

    fn handler() -> UserHandler {
        let tokens = Tokens::new(
            b"0123456789abcdef0123456789abcdef",
            "shippy.user",
            Duration::from_secs(60),
        );
        UserHandler::new(Arc::new(MemoryStore::default()), tokens)
    }

    fn user(id: &str, email: &str, password: &str) -> pb::User {
        pb::User {
            id: id.into(),
            name: "Ewan".into(),
            company: "Shippy".into(),
            email: email.into(),
            password: password.into(),
        }
    }

    #[test]
    fn each_error_has_its_code_and_no_internals() {
        let invalid = status(FieldError::new("email", "must not be empty").into());
        assert_eq!(
            (invalid.code(), invalid.message()),
            (Code::InvalidArgument, "email: must not be empty")
        );
        let credentials = status(UserError::InvalidCredentials);
        assert_eq!(
            (credentials.code(), credentials.message()),
            (Code::Unauthenticated, "invalid email or password")
        );
        let token = status(TokenError::Expired.into());
        assert_eq!(
            (token.code(), token.message()),
            (Code::Unauthenticated, "token expired; log in again")
        );
        let missing = status(UserError::NotFound);
        assert_eq!(
            (missing.code(), missing.message()),
            (Code::NotFound, "user not found")
        );
        let duplicate = status(StoreError::Duplicate("a user with email a@b.co".into()).into());
        assert_eq!(
            (duplicate.code(), duplicate.message()),
            (
                Code::AlreadyExists,
                "a user with email a@b.co already exists"
            )
        );
        let store = status(StoreError::Internal("db at 10.0.0.1".into()).into());
        assert_eq!(
            (store.code(), store.message()),
            (Code::Internal, "internal error")
        );
        let internal = status(UserError::Internal("signing failed: key".into()));
        assert_eq!(
            (internal.code(), internal.message()),
            (Code::Internal, "internal error")
        );
    }

    #[test]
    fn responses_never_carry_passwords_or_hashes() {
        let new = NewUser::parse("n", "c", "e@x.io", "password1".into()).expect("valid");
        let user = new.into_user(crate::domain::PasswordHash::from_stored(
            "$argon2id$secret".into(),
        ));
        let sent = pb::User::from(user);
        assert!(sent.password.is_empty());
        assert!(!format!("{sent:?}").contains("secret"));
    }

    #[tokio::test]
    async fn registration_makes_its_own_id_and_login_does_not_tell_who_exists() {
        let handler = handler();
        let created = handler
            .create(Request::new(user(
                "chosen-id",
                " Ewan@X.io ",
                "correct horse",
            )))
            .await
            .expect("created")
            .into_inner()
            .user
            .expect("user");
        assert_ne!(created.id, "chosen-id", "clients never choose ids");
        assert_eq!(created.email, "ewan@x.io");
        assert!(created.password.is_empty());

        let again = handler
            .create(Request::new(user("", "ewan@x.io", "another one")))
            .await
            .expect_err("email taken");
        assert_eq!(again.code(), Code::AlreadyExists);
        let short = handler
            .create(Request::new(user("", "a@x.io", "short")))
            .await
            .expect_err("short password");
        assert_eq!(
            (short.code(), short.message()),
            (
                Code::InvalidArgument,
                "password: must be at least 8 characters"
            )
        );

        let token = handler
            .auth(Request::new(user("", "EWAN@x.io", "correct horse")))
            .await
            .expect("logged in")
            .into_inner();
        assert_eq!(token.user_id, created.id);
        let checked = handler
            .validate_token(Request::new(token))
            .await
            .expect("valid token")
            .into_inner();
        assert_eq!(checked.user_id, created.id);

        let refusals = [
            user("", "ewan@x.io", "wrong horse"),
            user("", "nobody@x.io", "correct horse"),
            user("", "not an email", "correct horse"),
        ];
        for credentials in refusals {
            let refused = handler
                .auth(Request::new(credentials))
                .await
                .expect_err("refused");
            assert_eq!(
                (refused.code(), refused.message()),
                (Code::Unauthenticated, "invalid email or password")
            );
        }
    }

    #[tokio::test]
    async fn users_are_found_by_id_or_normalised_email() {
        let handler = handler();
        let created = handler
            .create(Request::new(user("", "ewan@x.io", "correct horse")))
            .await
            .expect("created")
            .into_inner()
            .user
            .expect("user");
        let get = |id: &str, email: &str| {
            handler.get(Request::new(pb::User {
                id: id.into(),
                email: email.into(),
                ..Default::default()
            }))
        };
        let by_email = get("", " EWAN@x.io").await.expect("found").into_inner();
        assert_eq!(by_email.user.map(|u| u.id), Some(created.id.clone()));
        let by_id = get(&created.id, "").await.expect("found").into_inner();
        assert_eq!(by_id.user.map(|u| u.email), Some("ewan@x.io".into()));
        assert_eq!(
            get("nobody", "").await.expect_err("missing").code(),
            Code::NotFound
        );
        let neither = get(" ", "").await.expect_err("neither");
        assert_eq!(
            (neither.code(), neither.message()),
            (Code::InvalidArgument, "id: give an id or an email")
        );
        assert!(
            get("", "bad")
                .await
                .expect_err("malformed")
                .message()
                .starts_with("email:")
        );
    }
}
