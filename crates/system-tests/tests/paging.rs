//! Lists are paged: no answer grows without bound. Five consignments of 10,000 containers each (the
//! documented maximum) once made `shippy consignment list` fail for everyone; now the service
//! answers in pages bounded by count and bytes, and the CLI follows them.

use shippy_proto::consignment::v1::{GetRequest, shipping_service_client::ShippingServiceClient};
use shippy_test_support::{Cluster, consignment_json, with_token};
use tonic::{Code, transport::Channel};

async fn page(
    client: &mut ShippingServiceClient<Channel>,
    token: &str,
    page_size: i32,
    page_token: &str,
) -> Result<(usize, String), tonic::Status> {
    let answer = client
        .get_consignments(with_token(
            GetRequest {
                page_size,
                page_token: page_token.to_owned(),
            },
            token,
        ))
        .await?
        .into_inner();
    Ok((answer.consignments.len(), answer.next_page_token))
}

#[tokio::test]
async fn huge_consignments_are_listed_in_pages() {
    let mut cluster = Cluster::local().expect("cluster");
    let processes = cluster.start_all(1).await.expect("services start");
    let token = cluster.sign_up_and_login("pager@example.com");
    let file = cluster.dir().join("huge.json");
    std::fs::write(&file, consignment_json(1_000, 10_000)).expect("write");
    for _ in 0..5 {
        cluster.cli_ok(["consignment", "create", file.to_str().expect("utf-8")]);
    }

    // The CLI follows the pages and shows all five.
    let listed = cluster.cli_ok(["--output", "json", "consignment", "list"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    let items = listed["items"]
        .as_array()
        .or_else(|| listed.as_array())
        .expect("a list");
    assert_eq!(
        items.len(),
        5,
        "{}",
        &listed.to_string()[..200.min(listed.to_string().len())]
    );

    let consignment = processes.last().expect("consignment service");
    let mut client = ShippingServiceClient::connect(format!("http://{}", consignment.address()))
        .await
        .expect("connect")
        .max_decoding_message_size(16 * 1024 * 1024);
    // The default page stops before 4 MiB: not all five ~1 MB consignments fit in one answer.
    let (first, next) = page(&mut client, &token, 0, "").await.expect("first page");
    assert!((1..5).contains(&first), "{first} in the first page");
    assert!(!next.is_empty(), "a token for the rest");
    // Explicit page sizes walk the list without repeats or gaps.
    let mut seen = 0;
    let mut token_in = String::new();
    let mut pages = 0;
    loop {
        let (n, next) = page(&mut client, &token, 2, &token_in).await.expect("page");
        assert!(n <= 2);
        seen += n;
        pages += 1;
        if next.is_empty() {
            break;
        }
        token_in = next;
        assert!(pages < 10, "paging must end");
    }
    assert_eq!((seen, pages), (5, 3));

    // Bad paging input is a clear INVALID_ARGUMENT.
    let bad = page(&mut client, &token, -1, "")
        .await
        .expect_err("negative");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("page_size:"), "{}", bad.message());
    let bad = page(&mut client, &token, 2, "not-a-token")
        .await
        .expect_err("foreign");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().starts_with("page_token:"),
        "{}",
        bad.message()
    );
}
