//! Log-ins cannot exhaust the user service: a burst of concurrent wrong-password `Auth` calls
//! against the real binary is answered in full (each call `UNAUTHENTICATED`, or
//! `RESOURCE_EXHAUSTED` when no hashing slot freed up in time) while the process's memory stays
//! within what its bounded number of concurrent hashes allows; one email gets only so many
//! attempts a minute; and one client only so many sign-ups and log-ins together.

use std::time::Duration;

use shippy_proto::user::v1::{User, user_service_client::UserServiceClient};
use shippy_test_support::{Cluster, ServiceProcess};
use tonic::{Code, Request, transport::Channel};

/// Hashes the service under test computes at once (`auth.max_concurrent_hashes`).
const HASHES: u64 = 2;
/// Log-in attempts a minute for one email (`auth.login_per_email_per_minute`).
const PER_EMAIL: usize = 3;
/// Concurrent wrong-password calls in the burst.
const BURST: usize = 96;
const MIB: u64 = 1024 * 1024;

/// `VmHWM` (peak resident memory) and `VmRSS` of a process, in bytes, from /proc.
fn memory(process: &ServiceProcess) -> (u64, u64) {
    let field = |name: &str| {
        process
            .status_kib(name)
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("{name} missing from /proc status"))
    };
    (field("VmHWM"), field("VmRSS"))
}

async fn user_service() -> (Cluster, ServiceProcess, UserServiceClient<Channel>) {
    let mut cluster = Cluster::local().expect("cluster");
    let hashes = HASHES.to_string();
    let per_email = PER_EMAIL.to_string();
    let user = cluster
        .start_with(
            "user",
            &[
                ("SHIPPY_AUTH__MAX_CONCURRENT_HASHES", hashes.as_str()),
                (
                    "SHIPPY_AUTH__LOGIN_PER_EMAIL_PER_MINUTE",
                    per_email.as_str(),
                ),
                // Every call of the burst comes from 127.0.0.1: only the email limit applies here.
                ("SHIPPY_AUTH__LOGIN_PER_CLIENT_PER_MINUTE", "0"),
            ],
        )
        .await
        .expect("user service starts");
    let client = UserServiceClient::connect(format!("http://{}", user.address()))
        .await
        .expect("connect");
    (cluster, user, client)
}

fn credentials(email: &str, password: &str) -> Request<User> {
    let mut request = Request::new(User {
        email: email.into(),
        password: password.into(),
        ..Default::default()
    });
    // Generous for a loaded 2-core machine; the service waits at most half of it for a slot.
    request.set_timeout(Duration::from_secs(60));
    request
}

#[tokio::test]
async fn a_burst_of_wrong_passwords_is_answered_within_bounded_memory() {
    let (_cluster, user, client) = user_service().await;
    let (_, idle) = memory(&user);

    let calls: Vec<_> = (0..BURST)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                // Unknown emails, each once: the dummy hash is checked, no limit applies.
                client
                    .auth(credentials(
                        &format!("nobody{i}@example.com"),
                        "wrong horse",
                    ))
                    .await
            })
        })
        .collect();
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for call in calls {
        let answer = call.await.expect("call task");
        let status = answer.expect_err("a wrong password never logs in");
        assert!(
            matches!(
                status.code(),
                Code::Unauthenticated | Code::ResourceExhausted
            ),
            "unexpected answer: {status:?}"
        );
        *answers
            .entry(format!("{:?}: {}", status.code(), status.message()))
            .or_default() += 1;
    }
    assert!(
        answers.contains_key("Unauthenticated: invalid email or password"),
        "{answers:?}"
    );

    let (peak, now) = memory(&user);
    eprintln!(
        "RSS idle {} MiB, peak {} MiB, after the burst {} MiB; answers: {answers:?}",
        idle / MIB,
        peak / MIB,
        now / MIB
    );
    // Each hash holds about 19 MiB; allow 20 per slot, 4 more for the allocator's slack, and
    // 64 MiB for the rest of the process (idle it is far less).
    let bound = (HASHES + 4) * 20 * MIB + 64 * MIB;
    assert!(
        peak < bound,
        "peak RSS {} MiB (idle {} MiB, now {} MiB) is over the bound of {} MiB for {HASHES} \
         concurrent hashes; answers: {answers:?}",
        peak / MIB,
        idle / MIB,
        now / MIB,
        bound / MIB
    );

    // And the service still logs people in afterwards.
    let mut client = client.clone();
    let mut register = Request::new(User {
        name: "After".into(),
        email: "after@example.com".into(),
        password: "correct horse".into(),
        ..Default::default()
    });
    register.set_timeout(Duration::from_secs(60));
    client.create(register).await.expect("registered");
    client
        .auth(credentials("after@example.com", "correct horse"))
        .await
        .expect("logged in after the burst");
}

#[tokio::test]
async fn one_email_gets_only_so_many_attempts_a_minute() {
    let (_cluster, _user, mut client) = user_service().await;
    let mut register = Request::new(User {
        name: "Target".into(),
        email: "target@example.com".into(),
        password: "correct horse".into(),
        ..Default::default()
    });
    register.set_timeout(Duration::from_secs(60));
    client.create(register).await.expect("registered");

    for attempt in 1..=PER_EMAIL {
        let refused = client
            .auth(credentials("target@example.com", "wrong horse"))
            .await
            .expect_err("wrong password");
        assert_eq!(refused.code(), Code::Unauthenticated, "attempt {attempt}");
    }
    // Over the limit even with the right password, and however the email is spelled.
    let limited = client
        .auth(credentials(" TARGET@example.com", "correct horse"))
        .await
        .expect_err("over the limit");
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    let message = limited.message();
    let seconds = message
        .strip_prefix("too many login attempts; try again in ")
        .and_then(|rest| rest.strip_suffix(" s"))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("unexpected message {message:?}"));
    assert!((1..=60).contains(&seconds), "{message}");

    // Another email is not affected.
    let other = client
        .auth(credentials("someone.else@example.com", "wrong horse"))
        .await
        .expect_err("unknown email");
    assert_eq!(other.code(), Code::Unauthenticated);
}

/// Sign-ups cost a hash as log-ins do, so they share the per-client allowance: an anonymous flood
/// of sign-ups cannot hold every hashing slot and lock everyone out of logging in. A refused
/// sign-up stores nothing, and another client keeps its own allowance.
#[tokio::test]
async fn one_client_gets_only_so_many_sign_ups_and_log_ins_a_minute() {
    let mut cluster = Cluster::local().expect("cluster");
    let user = cluster
        .start_with("user", &[("SHIPPY_AUTH__LOGIN_PER_CLIENT_PER_MINUTE", "3")])
        .await
        .expect("user service starts");
    let connect_from = |ip: [u8; 4]| {
        tonic::transport::Endpoint::from_shared(format!("http://{}", user.address()))
            .expect("endpoint")
            .local_address(Some(std::net::IpAddr::from(ip)))
            .connect_lazy()
    };
    let mut first = UserServiceClient::new(connect_from([127, 0, 0, 1]));
    let sign_up = |email: &str| {
        let mut request = Request::new(User {
            name: "Flood".into(),
            email: email.into(),
            password: "correct horse".into(),
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(60));
        request
    };

    first
        .create(sign_up("one@example.com"))
        .await
        .expect("first sign-up");
    first
        .auth(credentials("one@example.com", "correct horse"))
        .await
        .expect("log-in");
    first
        .create(sign_up("two@example.com"))
        .await
        .expect("second sign-up");
    let refused = first
        .create(sign_up("three@example.com"))
        .await
        .expect_err("the fourth attempt is over the allowance");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let message = refused.message();
    assert!(
        message.starts_with("too many sign-ups from this client; try again in "),
        "{message}"
    );
    let log_in = first
        .auth(credentials("one@example.com", "correct horse"))
        .await
        .expect_err("log-ins share the allowance");
    assert_eq!(log_in.code(), Code::ResourceExhausted, "{log_in:?}");

    // Another client: its own allowance, and the refused sign-up was not stored.
    let mut second = UserServiceClient::new(connect_from([127, 0, 0, 2]));
    let unknown = second
        .auth(credentials("three@example.com", "correct horse"))
        .await
        .expect_err("never registered");
    assert_eq!(unknown.code(), Code::Unauthenticated, "{unknown:?}");
    second
        .create(sign_up("three@example.com"))
        .await
        .expect("the same sign-up from another client");
}
