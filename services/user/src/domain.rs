//! Users: validation of what clients send, and the errors of the user service.

use std::fmt;

use shippy_proto::user::v1 as pb;
use shippy_shared::store::StoreError;
use tonic::Status;

use crate::token::TokenError;

/// Shortest accepted password.
pub const MIN_PASSWORD: usize = 8;
/// Longest accepted password (bounds hashing work).
pub const MAX_PASSWORD: usize = 256;
const MAX_FIELD: usize = 200;
const MAX_EMAIL: usize = 254;

/// An argon2 PHC string. Its `Debug` never shows the hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Unique id.
    pub id: String,
    /// Full name.
    pub name: String,
    /// Company.
    pub company: String,
    /// Normalised (trimmed, lower-case) email; unique.
    pub email: String,
    /// Hash of the password; never leaves the service.
    pub password_hash: PasswordHash,
}

impl From<User> for pb::User {
    /// The password field stays empty: neither the password nor its hash is ever returned.
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            name: user.name,
            company: user.company,
            email: user.email,
            password: String::new(),
        }
    }
}

/// A validated registration request. `Debug` hides the password.
pub struct NewUser {
    /// Full name.
    pub name: String,
    /// Company.
    pub company: String,
    /// Normalised email.
    pub email: String,
    /// Plain password, to be hashed.
    pub password: String,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// What can go wrong in the user service.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A field of a request is not acceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Unknown email or wrong password (deliberately indistinguishable).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// The token is forged, expired or malformed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No such user.
    #[error("user not found")]
    NotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing or signing failed.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<UserError> for Status {
    fn from(error: UserError) -> Self {
        match &error {
            UserError::Invalid { .. } => Status::invalid_argument(error.to_string()),
            UserError::InvalidCredentials | UserError::Token(_) => {
                Status::unauthenticated(error.to_string())
            }
            UserError::NotFound => Status::not_found(error.to_string()),
            UserError::Store(store) => store.to_status(),
            UserError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> UserError {
    UserError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn bounded(field: &'static str, value: &str, required: bool) -> Result<String, UserError> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_FIELD {
        return Err(invalid(
            field,
            format!("longer than {MAX_FIELD} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// Trims and lower-cases an email and checks its shape (`local@domain.tld`).
pub fn normalize_email(email: &str) -> Result<String, UserError> {
    let email = email.trim().to_lowercase();
    if email.is_empty() {
        return Err(invalid("email", "must not be empty"));
    }
    if email.len() > MAX_EMAIL {
        return Err(invalid(
            "email",
            format!("longer than {MAX_EMAIL} characters"),
        ));
    }
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if valid {
        Ok(email)
    } else {
        Err(invalid(
            "email",
            format!("{email:?} is not an email address"),
        ))
    }
}

/// Checks a password's length, without ever echoing it.
pub fn check_password(password: &str) -> Result<(), UserError> {
    let len = password.chars().count();
    if len < MIN_PASSWORD {
        return Err(invalid(
            "password",
            format!("must be at least {MIN_PASSWORD} characters"),
        ));
    }
    if len > MAX_PASSWORD {
        return Err(invalid(
            "password",
            format!("must be at most {MAX_PASSWORD} characters"),
        ));
    }
    Ok(())
}

impl TryFrom<pb::User> for NewUser {
    type Error = UserError;

    fn try_from(user: pb::User) -> Result<Self, Self::Error> {
        let name = bounded("name", &user.name, true)?;
        let company = bounded("company", &user.company, false)?;
        let email = normalize_email(&user.email)?;
        check_password(&user.password)?;
        Ok(Self {
            name,
            company,
            email,
            password: user.password,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, email: &str, password: &str) -> pb::User {
        pb::User {
            name: name.into(),
            email: email.into(),
            password: password.into(),
            ..Default::default()
        }
    }

    #[test]
    fn valid_registration_is_normalised() {
        let user =
            NewUser::try_from(req(" Ewan ", " Ewan@Example.COM ", "correct horse")).expect("valid");
        assert_eq!(user.name, "Ewan");
        assert_eq!(user.email, "ewan@example.com");
        assert!(
            !format!("{user:?}").contains("correct horse"),
            "Debug leaks the password"
        );
    }

    #[test]
    fn invalid_fields_are_named() {
        for (request, field) in [
            (req("", "a@b.co", "12345678"), "name"),
            (req("x", "not-an-email", "12345678"), "email"),
            (req("x", "a@b", "12345678"), "email"),
            (req("x", "a@@b.co", "12345678"), "email"),
            (req("x", "a@b.co", "short"), "password"),
        ] {
            let err = NewUser::try_from(request).expect_err("invalid");
            let status = Status::from(err);
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with(field), "{status:?}");
        }
    }

    #[test]
    fn responses_never_carry_passwords_or_hashes() {
        let user = User {
            id: "1".into(),
            name: "n".into(),
            company: "c".into(),
            email: "e@x.io".into(),
            password_hash: PasswordHash("$argon2id$secret".into()),
        };
        assert!(!format!("{user:?}").contains("secret"));
        assert!(pb::User::from(user).password.is_empty());
    }
}
