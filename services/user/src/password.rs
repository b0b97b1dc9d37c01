//! Password hashing with argon2id (the argon2 crate's defaults: 19 MiB, 2 passes), bounded.
//!
//! Each hash needs 19 MiB of working memory. Unbounded, a burst of log-ins (no account needed)
//! holds that much per concurrent call, and the allocator keeps it after the burst: 256 concurrent
//! wrong passwords once took the service to 4.9 GB. So a [`Hasher`] computes at most `capacity`
//! hashes at once (a semaphore), each in a working-memory buffer taken from a pool of at most
//! `capacity` buffers that are reused, never freed: the hashing memory is bounded by
//! `capacity × 19 MiB` however many calls arrive, and stays at that bound after a burst. Callers
//! beyond the capacity wait for a slot as long as they may ([`Hasher::hash`]'s `wait`), then get
//! [`UserError::Busy`].
//!
//! Hashing is deliberately slow, so it runs on the blocking pool, off the async workers.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::{Output, ParamsString, PasswordHash as Phc, SaltString},
};
use tokio::sync::Semaphore;

use crate::domain::{Password, PasswordHash, UserError};

/// A stored-looking hash with the default parameters, checked when the user is unknown so the
/// answer takes as long as for a wrong password (its salt and output are arbitrary bytes).
const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2hpcHB5LWR1bW15LXNhbHQ$\
                     PD1n+w5wdI6gl67dzejDI2zBmigHf8J2AQW1wRSaZog";

/// Working memory of one hash: `Params::block_count` blocks of 1 KiB.
type Blocks = Vec<Block>;

/// Computes argon2id hashes, at most `capacity` at a time, in reused working memory.
#[derive(Debug, Clone)]
pub struct Hasher {
    slots: Arc<Semaphore>,
    /// Idle working-memory buffers; never more than `capacity`, since each in use holds a slot.
    pool: Arc<Mutex<Vec<Blocks>>>,
    capacity: usize,
    queue_timeout: Duration,
}

impl Hasher {
    /// A hasher running at most `capacity` (at least 1) hashes at once; a caller waits at most
    /// `queue_timeout` for a slot.
    pub fn new(capacity: usize, queue_timeout: Duration) -> Self {
        let capacity = capacity.max(1);
        Self {
            slots: Arc::new(Semaphore::new(capacity)),
            pool: Arc::new(Mutex::new(Vec::with_capacity(capacity))),
            capacity,
            queue_timeout,
        }
    }

    /// Most hashes computed at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Hashes `password` with a fresh random salt, waiting at most `wait` (and never longer than
    /// the configured queue timeout) for a slot.
    pub async fn hash(
        &self,
        password: &Password,
        wait: Option<Duration>,
    ) -> Result<PasswordHash, UserError> {
        let password = password.clone();
        self.run(wait, move |blocks| {
            let salt = new_salt();
            let params = Params::default();
            let output = compute(
                Algorithm::Argon2id,
                Version::V0x13,
                params.clone(),
                password.expose(),
                &salt,
                Params::DEFAULT_OUTPUT_LEN,
                blocks,
            )?;
            let phc = Phc {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params: ParamsString::try_from(&params).map_err(internal("hash parameters"))?,
                salt: Some(salt.as_salt()),
                hash: Some(output),
            };
            Ok(PasswordHash::hashed(phc.to_string()))
        })
        .await
    }

    /// Whether `password` matches `hash`. With no hash (unknown user) a dummy hash is checked, so
    /// the answer takes as long either way and does not reveal which emails exist. Waits for a
    /// slot like [`Hasher::hash`].
    pub async fn verify(
        &self,
        password: Password,
        hash: Option<PasswordHash>,
        wait: Option<Duration>,
    ) -> Result<bool, UserError> {
        self.run(wait, move |blocks| {
            let known = hash.is_some();
            let phc = hash.as_ref().map_or(DUMMY, PasswordHash::as_phc);
            let phc = Phc::new(phc).map_err(internal("stored hash unreadable"))?;
            let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else {
                return Err(UserError::Internal(
                    "stored hash has no salt or output".into(),
                ));
            };
            let algorithm = Algorithm::try_from(phc.algorithm).map_err(internal("algorithm"))?;
            let version = phc
                .version
                .map(Version::try_from)
                .transpose()
                .map_err(internal("version"))?
                .unwrap_or_default();
            let params = Params::try_from(&phc).map_err(internal("parameters"))?;
            let output = compute(
                algorithm,
                version,
                params,
                password.expose(),
                &SaltString::from_b64(salt.as_str()).map_err(internal("salt"))?,
                expected.len(),
                blocks,
            )?;
            // `Output`'s comparison takes constant time.
            Ok(known && output == expected)
        })
        .await
    }

    /// Runs `work` on the blocking pool once a slot is free, with a working-memory buffer from
    /// the pool, and puts the buffer back afterwards.
    async fn run<T: Send + 'static>(
        &self,
        wait: Option<Duration>,
        work: impl FnOnce(&mut Blocks) -> Result<T, UserError> + Send + 'static,
    ) -> Result<T, UserError> {
        let wait = wait.map_or(self.queue_timeout, |w| w.min(self.queue_timeout));
        let slot = match tokio::time::timeout(wait, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(closed)) => return Err(UserError::Internal(format!("hash slots: {closed}"))),
            Err(_elapsed) => {
                tracing::warn!(
                    capacity = self.capacity,
                    waited_ms = wait.as_millis(),
                    "every hashing slot busy: call refused"
                );
                return Err(UserError::Busy);
            }
        };
        let pool = Arc::clone(&self.pool);
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let mut blocks = pool
                .lock()
                .map_err(|_| UserError::Internal("hash buffer pool poisoned".into()))?
                .pop()
                .unwrap_or_default();
            let result = work(&mut blocks);
            if let Ok(mut idle) = pool.lock() {
                idle.push(blocks);
            }
            result
        })
        .await
        .map_err(|e| UserError::Internal(format!("hashing task failed: {e}")))?
    }
}

/// The argon2 output of `password` and `salt`, `output_len` bytes long, computed in `blocks`
/// (grown to the size `params` need once, then reused).
fn compute(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &str,
    salt: &SaltString,
    output_len: usize,
    blocks: &mut Blocks,
) -> Result<Output, UserError> {
    let needed = params.block_count();
    if blocks.len() < needed {
        blocks.resize(needed, Block::default());
    }
    let mut salt_bytes = [0u8; 64];
    let salt = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(internal("salt"))?;
    let mut output = vec![0u8; output_len];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut output,
            &mut blocks[..needed],
        )
        .map_err(internal("hashing failed"))?;
    Output::new(&output).map_err(internal("hash output"))
}

/// Wraps a hashing library error as an internal error saying `what` failed.
fn internal<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> UserError {
    move |e| UserError::Internal(format!("{what}: {e}"))
}

/// A fresh random salt of 16 bytes (the PHC string format's recommendation) from `rand`'s
/// thread-local CSPRNG, which the operating system seeds.
fn new_salt() -> SaltString {
    let bytes: [u8; 16] = rand::random();
    SaltString::encode_b64(&bytes).expect("16 bytes are a valid salt length")
}

#[cfg(test)]
mod tests {
    use argon2::PasswordVerifier;

    use super::*;

    fn password(text: &str) -> Password {
        Password::parse(text.into()).expect("valid password")
    }

    fn hasher() -> Hasher {
        Hasher::new(2, Duration::from_secs(30))
    }

    #[tokio::test]
    async fn hash_verifies_only_the_right_password() {
        let hasher = hasher();
        let hashed = hasher
            .hash(&password("correct horse"), None)
            .await
            .expect("hash");
        assert!(
            hashed
                .as_phc()
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
        );
        assert!(!hashed.as_phc().contains("correct horse"));
        let verify = |attempt: &str, hash: Option<PasswordHash>| {
            hasher.verify(Password::attempt(attempt.into()), hash, None)
        };
        assert!(
            verify("correct horse", Some(hashed.clone()))
                .await
                .expect("verify")
        );
        assert!(!verify("wrong horse", Some(hashed)).await.expect("verify"));
        assert!(
            !verify("correct horse", None).await.expect("verify"),
            "unknown user never matches"
        );
    }

    #[tokio::test]
    async fn hashes_are_standard_phc_strings_both_ways() {
        // Made here, checked by the argon2 crate's own verifier...
        let hashed = hasher()
            .hash(&password("correct horse"), None)
            .await
            .expect("hash");
        let phc = Phc::new(hashed.as_phc()).expect("phc");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &phc)
                .is_ok()
        );
        // ...and made by the crate (other parameters too), checked here.
        let salt = new_salt();
        let theirs = argon2::PasswordHasher::hash_password(
            &Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(8 * 1024, 1, 1, Some(24)).expect("params"),
            ),
            b"correct horse",
            &salt,
        )
        .expect("hash")
        .to_string();
        let stored = PasswordHash::from_stored(theirs);
        let hasher = hasher();
        let check = |attempt: &str| {
            hasher.verify(
                Password::attempt(attempt.into()),
                Some(stored.clone()),
                None,
            )
        };
        assert!(check("correct horse").await.expect("verify"));
        assert!(!check("correct horsf").await.expect("verify"));
    }

    #[tokio::test]
    async fn the_dummy_hash_is_well_formed() {
        let phc = Phc::new(DUMMY).expect("phc");
        assert_eq!(
            Params::try_from(&phc).expect("params").block_count(),
            Params::default().block_count(),
            "same work as a real hash"
        );
        assert_eq!(phc.hash.map(|h| h.len()), Some(Params::DEFAULT_OUTPUT_LEN));
    }

    #[tokio::test]
    async fn same_password_gets_different_salts() {
        let hasher = hasher();
        let a = hasher
            .hash(&password("correct horse"), None)
            .await
            .expect("hash");
        let b = hasher
            .hash(&password("correct horse"), None)
            .await
            .expect("hash");
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn an_unreadable_stored_hash_is_internal() {
        let stored = PasswordHash::from_stored("not a phc string".into());
        let err = hasher()
            .verify(Password::attempt("x".into()), Some(stored), None)
            .await
            .expect_err("unreadable");
        assert!(matches!(err, UserError::Internal(_)), "{err:?}");
    }

    #[tokio::test]
    async fn at_most_capacity_hashes_run_and_buffers_are_reused() {
        let hasher = Hasher::new(2, Duration::from_secs(60));
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move {
                    hasher
                        .verify(Password::attempt("wrong horse".into()), None, None)
                        .await
                })
            })
            .collect();
        for call in calls {
            assert!(!call.await.expect("task").expect("verify"));
        }
        let idle = hasher.pool.lock().expect("pool").len();
        assert!(
            (1..=2).contains(&idle),
            "{idle} buffers for a capacity of 2"
        );
        assert_eq!(hasher.slots.available_permits(), 2);
    }

    #[tokio::test]
    async fn callers_beyond_capacity_give_up_after_their_wait() {
        let hasher = Hasher::new(1, Duration::from_secs(60));
        // Hold the only slot, as a long hash would.
        let held = Arc::clone(&hasher.slots)
            .acquire_owned()
            .await
            .expect("slot");
        let err = hasher
            .verify(
                Password::attempt("x".into()),
                None,
                Some(Duration::from_millis(20)),
            )
            .await
            .expect_err("busy");
        assert!(matches!(err, UserError::Busy), "{err:?}");
        drop(held);
        assert!(
            !hasher
                .verify(
                    Password::attempt("x".into()),
                    None,
                    Some(Duration::from_millis(20))
                )
                .await
                .is_ok_and(|m| m)
        );
    }
}
