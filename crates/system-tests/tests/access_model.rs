//! Who may see and claim what, with two real users (alice and bob) through the real CLI and gRPC:
//! users see only themselves and only with a token, each lists only their own consignments, and
//! nobody names another user as a container's user or a vessel's owner. A token of a user that
//! does not exist is refused even when its signature is good.

use std::{
    process::Output,
    time::{Duration, SystemTime},
};

use shippy_proto::{
    consignment::v1::{GetRequest, shipping_service_client::ShippingServiceClient},
    user::v1::{Request as UsersRequest, Token, User, user_service_client::UserServiceClient},
};
use shippy_test_support::{Cluster, ServiceProcess, consignment_json, with_token};
use tonic::{Code, transport::Channel};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn users(process: &ServiceProcess) -> UserServiceClient<Channel> {
    UserServiceClient::connect(format!("http://{}", process.address()))
        .await
        .expect("connect")
}

/// The id of the user the CLI is logged in as, from `shippy user list`, which shows only them.
fn whoami(cluster: &Cluster, email: &str) -> String {
    let listed = cluster.cli_ok(["--output", "json", "user", "list"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    let listed = listed.as_array().expect("array");
    assert_eq!(listed.len(), 1, "a user sees only themselves: {listed:?}");
    assert_eq!(listed[0]["email"], email);
    listed[0]["id"].as_str().expect("id").to_owned()
}

fn consignment_ids(cluster: &Cluster) -> Vec<String> {
    let listed = cluster.cli_ok(["--output", "json", "consignment", "list"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    listed
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Submits a consignment whose containers name no user (so they are the caller's).
fn create_consignment(cluster: &Cluster) -> String {
    let created = cluster.cli_with_stdin(
        ["--output", "json", "consignment", "create", "-"],
        Some(&consignment_json(55_000, 3)),
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).expect("JSON");
    created[0]["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn users_see_and_claim_only_themselves() {
    let mut cluster = Cluster::local().expect("cluster");
    let processes = cluster.start_all(1).await.expect("services start");

    let alice_token = cluster.sign_up_and_login("alice@example.com");
    let alice = whoami(&cluster, "alice@example.com");
    // The token file now holds bob's token; alice's is given as SHIPPY_TOKEN when she acts.
    let bob_token = cluster.sign_up_and_login("bob@example.com");
    let bob = whoami(&cluster, "bob@example.com");
    assert_ne!(alice, bob);
    let bobs = create_consignment(&cluster);
    assert_eq!(consignment_ids(&cluster), std::slice::from_ref(&bobs));

    cluster.set_env("SHIPPY_TOKEN", alice_token.trim());
    assert_eq!(whoami(&cluster, "alice@example.com"), alice);
    assert_eq!(
        consignment_ids(&cluster),
        Vec::<String>::new(),
        "alice does not see bob's consignment"
    );
    let alices = create_consignment(&cluster);
    assert_eq!(consignment_ids(&cluster), [alices]);

    // Alice may not put bob's id on a container: the CLI drops the containers' `user_id` (saying
    // so), so the containers are hers...
    let mut claim: serde_json::Value =
        serde_json::from_str(&consignment_json(1_000, 2)).expect("JSON");
    claim["containers"][1]["user_id"] = bob.clone().into();
    let through_cli = cluster.cli_with_stdin(
        ["--output", "json", "consignment", "create", "-"],
        Some(&claim.to_string()),
    );
    assert!(through_cli.status.success(), "{}", stderr(&through_cli));
    let created: serde_json::Value = serde_json::from_slice(&through_cli.stdout).expect("JSON");
    assert_eq!(created[0]["containers"][1]["user_id"], alice.as_str());
    // ...and the service refuses it from any other client, naming the field.
    let mut shipping = ShippingServiceClient::connect(format!("http://{}", processes[2].address()))
        .await
        .expect("connect");
    let mut sent = shippy_proto::consignment::v1::Consignment {
        description: "claimed".into(),
        weight: 1_000,
        containers: ["", bob.as_str()]
            .iter()
            .map(|user| shippy_proto::consignment::v1::Container {
                customer_id: "c".into(),
                origin: "Felixstowe".into(),
                user_id: (*user).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let refused = shipping
        .create_consignment(with_token(sent.clone(), &alice_token))
        .await
        .expect_err("bob's id on alice's container");
    assert_eq!(
        (refused.code(), refused.message()),
        (
            Code::PermissionDenied,
            "containers[1].user_id: must be empty or your own user id; you may not act for \
             another user"
        )
    );
    // Her own id is fine.
    sent.containers[1].user_id = alice.clone();
    shipping
        .create_consignment(with_token(sent, &alice_token))
        .await
        .expect("her own id");

    // Nor make bob the owner of a vessel.
    let vessel = |owner: &str| {
        cluster.cli([
            "--output",
            "json",
            "vessel",
            "create",
            "--name",
            "Alice's",
            "--capacity",
            "5",
            "--max-weight",
            "5000",
            "--owner-id",
            owner,
        ])
    };
    let refused = vessel(&bob);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("owner_id: must be empty or your own user id"),
        "{}",
        stderr(&refused)
    );
    let own = vessel(&alice);
    assert!(own.status.success(), "{}", stderr(&own));

    // The same rules over gRPC, with their codes.
    let bobs_list = shipping
        .get_consignments(with_token(GetRequest::default(), &bob_token))
        .await
        .expect("bob lists")
        .into_inner()
        .consignments;
    assert_eq!(
        bobs_list.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [bobs.as_str()]
    );
    let mut user = users(&processes[0]).await;
    let denied = user
        .get(with_token(
            User {
                id: bob.clone(),
                ..Default::default()
            },
            &alice_token,
        ))
        .await
        .expect_err("bob's record");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = user
        .get(with_token(
            User {
                email: "bob@example.com".into(),
                ..Default::default()
            },
            &alice_token,
        ))
        .await
        .expect_err("bob's record by email");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let everyone = user
        .get_all(with_token(UsersRequest::default(), &alice_token))
        .await
        .expect("alice lists users")
        .into_inner()
        .users;
    assert_eq!(
        everyone.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        [alice.as_str()]
    );
}

#[tokio::test]
async fn reading_users_needs_a_token_and_the_token_a_user() {
    let mut cluster = Cluster::local().expect("cluster");
    let processes = cluster.start_all(1).await.expect("services start");
    let token = cluster.sign_up_and_login("carol@example.com");
    let carol = whoami(&cluster, "carol@example.com");
    let mut user = users(&processes[0]).await;

    let anonymous = user
        .get_all(UsersRequest::default())
        .await
        .expect_err("GetAll without a token");
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let anonymous = user
        .get(User {
            id: carol.clone(),
            ..Default::default()
        })
        .await
        .expect_err("Get without a token");
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let own = user
        .get(with_token(User::default(), &token))
        .await
        .expect("own record")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(
        (own.id.as_str(), own.password.as_str()),
        (carol.as_str(), "")
    );

    // A well-signed token (the public dev secret these services run with) for a user that does
    // not exist, as a deleted user's would be: the user service's own check refuses it.
    let stray = shippy_user::token::Tokens::new(
        shippy_user::token::DEV_SECRET.as_bytes(),
        None,
        "shippy.user",
        Duration::from_secs(3600),
    )
    .issue(
        &format!("ghost-{}", shippy_test_support::uuid_like()),
        "ghost@example.com",
        SystemTime::now(),
    )
    .expect("sign");
    let refused = user
        .validate_token(Token {
            token: stray.clone(),
            ..Default::default()
        })
        .await
        .expect_err("no such user");
    assert_eq!(
        (refused.code(), refused.message()),
        (
            Code::Unauthenticated,
            "token of a user that does not exist; log in again"
        )
    );
    // The other services verify the signature themselves and ask the user service once per token
    // whether its user exists: the ghost's token is refused there too, with the same sentence.
    cluster.set_env("SHIPPY_TOKEN", &stray);
    let ghost = cluster.cli(["consignment", "list"]);
    assert!(!ghost.status.success());
    assert!(
        stderr(&ghost).contains("token of a user that does not exist; log in again"),
        "{}",
        stderr(&ghost)
    );
    // The other services verify tokens themselves, with the user service's public keys: a token
    // signed with any other key is refused there, without asking the user service.
    let forged = shippy_user::token::Tokens::new(
        b"not the secret these services run with, 0123456789",
        None,
        "shippy.user",
        Duration::from_secs(3600),
    )
    .issue(&carol, "carol@example.com", SystemTime::now())
    .expect("sign");
    cluster.set_env("SHIPPY_TOKEN", &forged);
    let listed = cluster.cli(["consignment", "list"]);
    assert!(!listed.status.success());
    assert!(
        stderr(&listed).contains("invalid token"),
        "{}",
        stderr(&listed)
    );
}

/// A burst of calls with a token the consignment service has not seen yet (a client's first
/// calls after logging in, or every client after a restart) asks the user service once whether
/// its user exists, not once per call.
#[tokio::test]
async fn a_burst_with_a_new_token_asks_the_user_service_once() {
    let mut cluster = Cluster::local().expect("cluster");
    let processes = cluster.start_all(1).await.expect("services start");
    let consignment = ServiceProcess::of(&processes, "consignment");
    let token = cluster.sign_up_and_login("burst@example.com");
    let channel = Channel::from_shared(format!("http://{}", consignment.address()))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let mut client = ShippingServiceClient::new(channel.clone());
            let request = with_token(GetRequest::default(), &token);
            tokio::spawn(async move { client.get_consignments(request).await })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("listed");
    }
    let checks = consignment
        .metric("shippy_auth_user_checks_total", &[])
        .expect("metrics");
    assert_eq!(checks, 1.0, "32 concurrent calls, one user check");
}

/// A token in steady use has its user checked again before its minute of trust runs out, from a
/// call that does not wait for the answer: past the minute, a call still does not wait for the
/// user service, even when it has stopped answering. (Without the early check, the first call
/// past the minute would ask the frozen user service and miss its own deadline.) Takes a minute.
#[tokio::test]
async fn a_token_in_steady_use_is_rechecked_before_its_trust_runs_out_and_no_call_waits() {
    let mut cluster = Cluster::local().expect("cluster");
    let processes = cluster.start_all(1).await.expect("services start");
    let user = ServiceProcess::of(&processes, "user");
    let consignment = ServiceProcess::of(&processes, "consignment");
    let token = cluster.sign_up_and_login("steady@example.com");
    let mut client = ShippingServiceClient::connect(format!("http://{}", consignment.address()))
        .await
        .expect("connect");
    let started = std::time::Instant::now();
    let checks = || {
        consignment
            .metric("shippy_auth_user_checks_total", &[("outcome", "confirmed")])
            .expect("metrics")
    };
    let mut list = async || {
        let mut request = with_token(GetRequest::default(), &token);
        request.set_timeout(Duration::from_secs(2));
        client.get_consignments(request).await.map(|_| ())
    };
    list()
        .await
        .expect("first call: verified, its user checked");
    assert_eq!(checks(), 1.0);

    // The client keeps using the token; in the last quarter of the minute one call starts a
    // check of its user in the background.
    while checks() < 2.0 {
        assert!(
            started.elapsed() < Duration::from_secs(59),
            "no second user check within the minute"
        );
        list().await.expect("a call within the minute");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(40),
        "checked again after {:?}, before the last quarter of the minute",
        started.elapsed()
    );

    // The user service stops answering; past the first minute the token is still trusted on
    // the renewed check, and calls go on without asking it.
    user.freeze();
    tokio::time::sleep(Duration::from_secs(62).saturating_sub(started.elapsed())).await;
    let outcome = list().await;
    user.thaw();
    outcome.expect("a call past the first minute, the user service frozen");
    assert_eq!(checks(), 2.0, "no check past the minute");
}
