//! Users and the rules for what clients may send. Pure domain: nothing here knows of protobuf or
//! gRPC; `grpc.rs` turns requests into these types and errors into statuses.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use shippy_shared::{
    store::StoreError,
    validate::{self, FieldError, Presence},
};

use crate::token::{OidcError, TokenError};

/// Shortest accepted password.
pub const MIN_PASSWORD: usize = 8;
/// Longest accepted password (bounds hashing work).
pub const MAX_PASSWORD: usize = 256;
/// Longest accepted name or company.
pub const MAX_FIELD: usize = 200;
/// Longest accepted email, in bytes (the limit of RFC 5321).
pub const MAX_EMAIL: usize = 254;

/// Passwords refused at registration however long they are: the most common ones of at least
/// [`MIN_PASSWORD`] characters in public breach lists, plus this service's own name. Compared
/// case-insensitively. Deliberately small: a first line, not a breach database.
pub const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "passw0rd",
    "p@ssw0rd",
    "12345678",
    "123456789",
    "1234567890",
    "0123456789",
    "87654321",
    "12341234",
    "123123123",
    "11223344",
    "qwertyui",
    "qwertyuiop",
    "qwerty123",
    "qwerty12",
    "1q2w3e4r",
    "1qaz2wsx",
    "zaq12wsx",
    "q1w2e3r4",
    "asdfghjk",
    "asdf1234",
    "abcd1234",
    "abc12345",
    "abcdefgh",
    "iloveyou",
    "iloveyou1",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "superman",
    "trustno1",
    "whatever",
    "starwars",
    "letmein1",
    "letmein123",
    "welcome1",
    "welcome123",
    "admin123",
    "administrator",
    "changeme",
    "computer",
    "internet",
    "shippy123",
    "shippypassword",
];

/// The one place user ids are made: a random UUID. Clients never choose one.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A normalised email address (trimmed, lower-case, shaped `local@domain.tld`); only
/// [`Email::parse`] makes one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Email(String);

impl Email {
    /// Trims and lower-cases `email` and checks its shape.
    pub fn parse(email: &str) -> Result<Self, FieldError> {
        let email = email.trim().to_lowercase();
        if email.is_empty() {
            return Err(FieldError::new("email", "must not be empty"));
        }
        if email.len() > MAX_EMAIL {
            return Err(FieldError::new(
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
                    // Control characters too: an address is shown in logs and terminals.
                    && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        };
        if valid {
            Ok(Self(email))
        } else {
            Err(FieldError::new(
                "email",
                format!("{email:?} is not an email address"),
            ))
        }
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A plain-text password. Its `Debug` never shows it, and it is wiped from memory when dropped.
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    /// A password chosen at registration: between [`MIN_PASSWORD`] and [`MAX_PASSWORD`]
    /// characters, not one character repeated, no control characters, and not one of the
    /// [`COMMON_PASSWORDS`]. The error never echoes it.
    pub fn parse(password: String) -> Result<Self, FieldError> {
        let refuse = |why: String| Err(FieldError::new("password", why));
        let len = password.chars().count();
        if len < MIN_PASSWORD {
            return refuse(format!("must be at least {MIN_PASSWORD} characters"));
        }
        if len > MAX_PASSWORD {
            return refuse(format!("must be at most {MAX_PASSWORD} characters"));
        }
        if password.chars().any(char::is_control) {
            return refuse("must not contain control characters".into());
        }
        let mut chars = password.chars();
        let first = chars.next();
        if chars.all(|c| Some(c) == first) {
            return refuse("must not be one character repeated; choose a longer phrase".into());
        }
        let lower = password.to_lowercase();
        if COMMON_PASSWORDS.contains(&lower.as_str()) {
            return refuse("is one of the most common passwords; choose another".into());
        }
        Ok(Self(SecretString::from(password)))
    }

    /// A password offered at login: no rules apply, the stored hash decides.
    pub fn attempt(password: String) -> Self {
        Self(SecretString::from(password))
    }

    /// The plain text, for the hasher.
    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// An argon2 PHC string. Its `Debug` never shows the hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// The PHC string the hasher produced.
    pub(crate) fn hashed(phc: String) -> Self {
        Self(phc)
    }

    /// A PHC string read back from the store. Not checked here: verification refuses one it
    /// cannot read.
    pub fn from_stored(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string, to verify a password against or to store.
    pub fn as_phc(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

/// A user, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Unique id, made by [`new_id`].
    pub id: String,
    /// Full name.
    pub name: String,
    /// Company.
    pub company: String,
    /// Email; unique.
    pub email: Email,
    /// Hash of the password; never leaves the service.
    pub password_hash: PasswordHash,
}

/// A validated registration request; only [`NewUser::parse`] makes one. `Debug` hides the
/// password.
#[derive(Debug)]
pub struct NewUser {
    name: String,
    company: String,
    email: Email,
    password: Password,
}

impl NewUser {
    /// Checks a registration sent by a client: a name, an optional company (each at most
    /// [`MAX_FIELD`] characters), an email and a password.
    pub fn parse(
        name: &str,
        company: &str,
        email: &str,
        password: String,
    ) -> Result<Self, FieldError> {
        Ok(Self {
            name: validate::text(|| "name".into(), name, MAX_FIELD, Presence::Required)?,
            company: validate::text(|| "company".into(), company, MAX_FIELD, Presence::Optional)?,
            email: Email::parse(email)?,
            password: Password::parse(password)?,
        })
    }

    /// The password, to hash.
    pub fn password(&self) -> &Password {
        &self.password
    }

    /// The user to store, with a new id and `password_hash`, the hash of [`Self::password`].
    pub fn into_user(self, password_hash: PasswordHash) -> User {
        User {
            id: new_id(),
            name: self.name,
            company: self.company,
            email: self.email,
            password_hash,
        }
    }
}

/// What can go wrong in the user service.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A field of a request is not acceptable.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// Unknown email or wrong password (deliberately indistinguishable).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// The token is forged, expired or malformed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// An external ID token was not accepted, or no provider is configured.
    #[error(transparent)]
    Oidc(#[from] OidcError),
    /// An external ID token verified, but no user is registered with its email (users are not
    /// created from ID tokens: they register first).
    #[error("no shippy user has the email address of this token; register first")]
    NotRegistered,
    /// No such user.
    #[error("user not found")]
    NotFound,
    /// The caller asked for another user's record.
    #[error("you may only read your own user")]
    NotYours,
    /// Every hashing slot stayed busy for as long as the caller could wait.
    #[error("the user service is busy checking other passwords; try again in a few seconds")]
    Busy,
    /// Too many log-in attempts for this email or from this client.
    #[error("too many login attempts; try again in {retry_after_secs} s")]
    TooManyAttempts {
        /// Seconds until the next attempt is accepted (at least 1).
        retry_after_secs: u64,
    },
    /// Too many sign-ups (or sign-ups and log-ins together) from this client.
    #[error("too many sign-ups from this client; try again in {retry_after_secs} s")]
    TooManySignUps {
        /// Seconds until the next attempt is accepted (at least 1).
        retry_after_secs: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing or signing failed.
    #[error("internal: {0}")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_registration_is_normalised() {
        let new = NewUser::parse(" Ewan ", "", " Ewan@Example.COM ", "correct horse".into())
            .expect("valid");
        assert!(
            !format!("{new:?}").contains("correct horse"),
            "Debug leaks the password"
        );
        assert_eq!(new.password().expose(), "correct horse");
        let user = new.into_user(PasswordHash::from_stored("$argon2id$x".into()));
        assert_eq!(user.name, "Ewan");
        assert_eq!(user.company, "");
        assert_eq!(user.email.as_str(), "ewan@example.com");
    }

    #[test]
    fn every_user_gets_a_fresh_id() {
        let make = || {
            NewUser::parse("x", "", "a@b.co", "correct horse".into())
                .expect("valid")
                .into_user(PasswordHash::from_stored(String::new()))
        };
        let (a, b) = (make(), make());
        assert!(!a.id.is_empty());
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn invalid_fields_are_named() {
        let long = "x".repeat(MAX_FIELD + 1);
        for (name, company, email, password, message) in [
            ("", "", "a@b.co", "correct horse", "name: must not be empty"),
            (
                "x",
                long.as_str(),
                "a@b.co",
                "correct horse",
                "company: longer than 200 characters",
            ),
            ("x", "", " ", "correct horse", "email: must not be empty"),
            (
                "x",
                "",
                "not-an-email",
                "correct horse",
                "email: \"not-an-email\" is not an email address",
            ),
            ("x", "", "a@b", "correct horse", "email"),
            ("x", "", "a@@b.co", "correct horse", "email"),
            ("x", "", "a@.b.co", "correct horse", "email"),
            ("x", "", "a @b.co", "correct horse", "email"),
            (
                "x",
                "",
                "a@b.co",
                "short",
                "password: must be at least 8 characters",
            ),
        ] {
            let err = NewUser::parse(name, company, email, password.into()).expect_err("invalid");
            assert!(err.to_string().starts_with(message), "{err}");
        }
    }

    #[test]
    fn password_errors_never_echo_it() {
        let long = "p".repeat(MAX_PASSWORD + 1);
        let err = Password::parse(long.clone()).expect_err("too long");
        assert_eq!(err.to_string(), "password: must be at most 256 characters");
        assert!(!err.to_string().contains(&long));
        assert!(!format!("{:?}", Password::attempt("hunter22".into())).contains("hunter22"));
    }

    #[test]
    fn weak_passwords_are_refused_with_the_reason() {
        for (password, reason) in [
            (
                "password",
                "is one of the most common passwords; choose another",
            ),
            (
                "PassWord1",
                "is one of the most common passwords; choose another",
            ),
            (
                "12345678",
                "is one of the most common passwords; choose another",
            ),
            (
                "zzzzzzzzzzzz",
                "must not be one character repeated; choose a longer phrase",
            ),
            ("\0\0\0\0\0\0\0\0", "must not contain control characters"),
            ("correct\nhorse", "must not contain control characters"),
            ("short", "must be at least 8 characters"),
        ] {
            let err = Password::parse(password.into()).expect_err(password);
            assert_eq!(
                err.to_string(),
                format!("password: {reason}"),
                "{password:?}"
            );
        }
        for fine in [
            "correct horse",
            "aaaaaaab",
            "pässwörd-très-long",
            "P@ss w0rd 2024!",
        ] {
            assert!(Password::parse(fine.into()).is_ok(), "{fine:?}");
        }
        assert!(
            COMMON_PASSWORDS
                .iter()
                .all(|p| p.chars().count() >= MIN_PASSWORD && *p == p.to_lowercase()),
            "every entry could otherwise pass: long enough and lower-case"
        );
    }

    #[test]
    fn emails_are_compared_normalised() {
        assert_eq!(
            Email::parse("A@B.CO").expect("valid"),
            Email::parse(" a@b.co ").expect("valid")
        );
        let long = format!("{}@b.co", "a".repeat(MAX_EMAIL));
        assert_eq!(
            Email::parse(&long).expect_err("long").to_string(),
            "email: longer than 254 characters"
        );
        for control in [
            "a\u{1b}[2J@x.io",
            "a\u{7f}@x.io",
            "a@x\u{0}.io",
            "a\u{85}@x.io",
        ] {
            let refused = Email::parse(control).expect_err("a control character");
            assert!(
                refused.to_string().contains("is not an email address"),
                "{refused}"
            );
        }
    }

    #[test]
    fn stored_users_never_show_their_hash() {
        let user = User {
            id: "1".into(),
            name: "n".into(),
            company: "c".into(),
            email: Email::parse("e@x.io").expect("valid"),
            password_hash: PasswordHash::from_stored("$argon2id$secret".into()),
        };
        assert!(!format!("{user:?}").contains("secret"));
    }
}
