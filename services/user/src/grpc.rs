//! The `UserService` gRPC handler.

use std::{sync::Arc, time::SystemTime};

use shippy_proto::user::v1::{self as pb, user_service_server::UserService};
use tonic::{Request, Response, Status};

use crate::{
    domain::{NewUser, User, UserError, normalize_email},
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

#[tonic::async_trait]
impl UserService for UserHandler {
    async fn create(&self, request: Request<pb::User>) -> Result<Response<pb::Response>, Status> {
        let new = NewUser::try_from(request.into_inner())?;
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            password_hash: password::hash(new.password).await?,
            name: new.name,
            company: new.company,
            email: new.email,
        };
        self.store.create(&user).await.map_err(UserError::from)?;
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
            self.store
                .find_by_email(&normalize_email(&query.email)?)
                .await
        } else {
            return Err(UserError::Invalid {
                field: "id",
                reason: "give an id or an email".into(),
            }
            .into());
        }
        .map_err(UserError::from)?
        .ok_or(UserError::NotFound)?;
        Ok(Response::new(pb::Response {
            user: Some(user.into()),
            users: Vec::new(),
        }))
    }

    async fn get_all(
        &self,
        _request: Request<pb::Request>,
    ) -> Result<Response<pb::Response>, Status> {
        let users = self.store.list().await.map_err(UserError::from)?;
        Ok(Response::new(pb::Response {
            user: None,
            users: users.into_iter().map(Into::into).collect(),
        }))
    }

    async fn auth(&self, request: Request<pb::User>) -> Result<Response<pb::Token>, Status> {
        let credentials = request.into_inner();
        // A malformed email cannot belong to anyone: same answer as a wrong password.
        let email =
            normalize_email(&credentials.email).map_err(|_| UserError::InvalidCredentials)?;
        let user = self
            .store
            .find_by_email(&email)
            .await
            .map_err(UserError::from)?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        if !password::verify(credentials.password, hash).await? {
            tracing::info!(%email, "authentication failed");
            return Err(UserError::InvalidCredentials.into());
        }
        let user = user.ok_or(UserError::InvalidCredentials)?;
        let token = self
            .tokens
            .issue(&user.id, &user.email, SystemTime::now())
            .map_err(|e| UserError::Internal(format!("signing failed: {e}")))?;
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
        let claims = self.tokens.validate(&token).map_err(UserError::from)?;
        Ok(Response::new(pb::Token {
            token,
            valid: true,
            user_id: claims.sub,
        }))
    }
}
