//! Tokens verified where they arrive, with real processes: the consignment service verifies with
//! the user service's public keys, fetches new ones when a token names a key it has not seen (a
//! rotation), accepts tokens of the previous key during the overlap, and refuses them once the
//! rotation is over.

use std::time::Duration;

use shippy_proto::user::v1::{Request, user_service_client::UserServiceClient};
use shippy_test_support::{Cluster, ServiceProcess};

const SECRET_A: &str = "first secret, 0123456789abcdefghijklmnop";
const SECRET_B: &str = "second secret, qrstuvwxyz9876543210ABCDEF";
const SECRET_C: &str = "third secret, GHIJKLMNOPQRSTUV0123456789";
const PASSWORD: &str = "correct horse";

/// Starts the user service signing with `secret`, still accepting `previous`'s tokens.
async fn user_service(cluster: &mut Cluster, secret: &str, previous: &str) -> ServiceProcess {
    cluster
        .start_with(
            "user",
            &[
                ("SHIPPY_AUTH__DEV_MODE", "false"),
                ("SHIPPY_AUTH__JWT_SECRET", secret),
                ("SHIPPY_AUTH__PREVIOUS_JWT_SECRET", previous),
            ],
        )
        .await
        .expect("user service starts")
}

fn login(cluster: &Cluster) -> String {
    cluster.cli_ok([
        "login",
        "--email",
        "keys@example.com",
        "--password",
        PASSWORD,
    ]);
    std::fs::read_to_string(cluster.dir().join("token")).expect("token saved")
}

/// Whether the consignment service accepts `token` (a list call needs a caller).
fn accepted(cluster: &mut Cluster, token: &str) -> Result<(), String> {
    cluster.set_env("SHIPPY_TOKEN", token.trim());
    // Just after the user service restarts, consignment may not have seen its new instance yet
    // (discovery is polled): it then answers "unavailable" (never "invalid token"), and a client
    // tries again. Only that answer is retried, for a bounded time; any other is the verdict.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let result = loop {
        let out = cluster.cli(["consignment", "list"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            break Ok(());
        }
        if !stderr.contains("unavailable") || std::time::Instant::now() >= deadline {
            break Err(stderr);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    cluster.unset_env("SHIPPY_TOKEN");
    result
}

#[tokio::test]
async fn keys_rotate_without_a_restart_of_the_verifiers() {
    let mut cluster = Cluster::local().expect("cluster");
    let mut user = user_service(&mut cluster, SECRET_A, "").await;
    let _vessel = cluster.start("vessel").await.expect("vessel");
    let consignment = cluster.start("consignment").await.expect("consignment");
    cluster.cli_ok([
        "user",
        "create",
        "--name",
        "Keys",
        "--email",
        "keys@example.com",
        "--company",
        "Acme",
        "--password",
        PASSWORD,
    ]);

    // The user service publishes one key; a token it signs is accepted by consignment.
    let mut users = UserServiceClient::connect(format!("http://{}", user.address()))
        .await
        .expect("connect");
    let set = users
        .public_keys(Request::default())
        .await
        .expect("key set")
        .into_inner();
    assert_eq!(set.keys.len(), 1);
    assert_eq!(
        (
            set.keys[0].kty.as_str(),
            set.keys[0].crv.as_str(),
            set.keys[0].alg.as_str()
        ),
        ("OKP", "Ed25519", "EdDSA")
    );
    let token_a = login(&cluster);
    accepted(&mut cluster, &token_a).expect("token of key A");

    // Rotation: B signs, A still verifies. Consignment has never seen B's key id: it fetches the
    // key set again and accepts the new token, and the old one still works.
    user.stop(Duration::from_secs(20)).expect("user stops");
    user = user_service(&mut cluster, SECRET_B, SECRET_A).await;
    let token_b = login(&cluster);
    assert_ne!(token_a, token_b);
    accepted(&mut cluster, &token_b).expect("token of the new key B");
    accepted(&mut cluster, &token_a).expect("token of the previous key A, during the overlap");

    // The rotation goes on: C signs, B is the previous key, A is gone. Once consignment fetches
    // the key set (it sees C's key id), tokens of A are refused: that is how a key is revoked.
    user.stop(Duration::from_secs(20)).expect("user stops");
    let _user = user_service(&mut cluster, SECRET_C, SECRET_B).await;
    let token_c = login(&cluster);
    accepted(&mut cluster, &token_c).expect("token of the new key C");
    accepted(&mut cluster, &token_b).expect("token of the previous key B");
    let refused = accepted(&mut cluster, &token_a).expect_err("key A was withdrawn");
    assert!(refused.contains("invalid token"), "{refused}");

    // All of it with one fetch per new key, none per call. (Attempts while the restarted user
    // service was not yet in discovery failed without an answer; they are not counted.)
    let fetched = consignment
        .metric(
            "grpc_client_handled_total",
            &[
                ("target", "user"),
                ("grpc_method", "PublicKeys"),
                ("grpc_code", "OK"),
            ],
        )
        .expect("metrics");
    assert_eq!(fetched, 3.0, "one fetch at start and one per new key id");
}
