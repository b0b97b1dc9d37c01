//! Password hashing with argon2id (the argon2 crate's defaults: 19 MiB, 2 passes).
//!
//! Hashing is deliberately slow, so it runs on the blocking pool, off the async workers.

use std::sync::LazyLock;

use argon2::{
    Argon2, PasswordHasher, PasswordVerifier,
    password_hash::{PasswordHash as Phc, SaltString, rand_core::OsRng},
};

use crate::domain::{Password, PasswordHash, UserError};

/// Hashes `password` with a fresh random salt.
pub async fn hash(password: &Password) -> Result<PasswordHash, UserError> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || hash_blocking(password.expose()))
        .await
        .map_err(|e| UserError::Internal(format!("hashing task failed: {e}")))?
}

fn hash_blocking(password: &str) -> Result<PasswordHash, UserError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|phc| PasswordHash::hashed(phc.to_string()))
        .map_err(|e| UserError::Internal(format!("hashing failed: {e}")))
}

/// Whether `password` matches `hash`. With no hash (unknown user) a dummy hash is checked, so the
/// answer takes as long either way and does not reveal which emails exist.
pub async fn verify(password: Password, hash: Option<PasswordHash>) -> Result<bool, UserError> {
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let hash = hash.as_ref().unwrap_or(&*DUMMY);
        let phc = Phc::new(hash.as_phc())
            .map_err(|e| UserError::Internal(format!("stored hash unreadable: {e}")))?;
        let matches = Argon2::default()
            .verify_password(password.expose().as_bytes(), &phc)
            .is_ok();
        Ok(known && matches)
    })
    .await
    .map_err(|e| UserError::Internal(format!("verification task failed: {e}")))?
}

static DUMMY: LazyLock<PasswordHash> = LazyLock::new(|| {
    hash_blocking("shippy dummy password for unknown users").unwrap_or_else(|_| {
        PasswordHash::hashed(String::from(
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        ))
    })
});

#[cfg(test)]
mod tests {
    use super::*;

    fn password(text: &str) -> Password {
        Password::parse(text.into()).expect("valid password")
    }

    #[tokio::test]
    async fn hash_verifies_only_the_right_password() {
        let hashed = hash(&password("correct horse")).await.expect("hash");
        assert!(hashed.as_phc().starts_with("$argon2id$"));
        assert!(!hashed.as_phc().contains("correct horse"));
        assert!(
            verify(
                Password::attempt("correct horse".into()),
                Some(hashed.clone())
            )
            .await
            .expect("verify")
        );
        assert!(
            !verify(Password::attempt("wrong horse".into()), Some(hashed))
                .await
                .expect("verify")
        );
        assert!(
            !verify(Password::attempt("correct horse".into()), None)
                .await
                .expect("verify"),
            "unknown user never matches"
        );
    }

    #[tokio::test]
    async fn same_password_gets_different_salts() {
        let a = hash(&password("correct horse")).await.expect("hash");
        let b = hash(&password("correct horse")).await.expect("hash");
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn an_unreadable_stored_hash_is_internal() {
        let stored = PasswordHash::from_stored("not a phc string".into());
        let err = verify(Password::attempt("x".into()), Some(stored))
            .await
            .expect_err("unreadable");
        assert!(matches!(err, UserError::Internal(_)), "{err:?}");
    }
}
