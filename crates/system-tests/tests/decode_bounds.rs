//! A small request cannot become a large one in a service's memory. Each empty element of a list
//! is two bytes on the wire and a whole struct once decoded, so 4 MiB of empty containers (the
//! most a message may have) would decode into two million containers, about 200 MiB, before the
//! consignment service's own rule (at most 10 000) could refuse them; and decoding comes before
//! the caller is checked. Against the real consignment service: such a request, sent without a
//! token, is refused with `INVALID_ARGUMENT` while the process's memory barely moves; a request
//! just over the service's own limit still gets the service's own refusal; and the service goes
//! on serving.

use shippy_proto::consignment::v1::{
    Consignment, Container, shipping_service_client::ShippingServiceClient,
};
use shippy_test_support::{Cluster, ServiceProcess, with_token};
use tonic::Code;

const MIB: u64 = 1024 * 1024;

fn consignment(containers: Vec<Container>) -> Consignment {
    Consignment {
        description: "decode bounds".into(),
        weight: 55_000,
        containers,
        ..Consignment::default()
    }
}

fn filled(n: usize) -> Vec<Container> {
    vec![
        Container {
            customer_id: "cust001".into(),
            origin: "Manchester, United Kingdom".into(),
            ..Container::default()
        };
        n
    ]
}

#[tokio::test]
async fn four_mib_of_empty_containers_is_refused_before_it_is_decoded() {
    let mut cluster = Cluster::local().expect("cluster");
    let processes = cluster.start_all(1).await.expect("services start");
    let service = ServiceProcess::of(&processes, "consignment");
    let mut client = ShippingServiceClient::connect(format!("http://{}", service.address()))
        .await
        .expect("connect");
    let peak = || service.status_kib("VmHWM").expect("VmHWM") * 1024;
    let before = peak();

    // Two million empty containers: 4 000 000 bytes, under the 4 MiB a message may have.
    let flood = consignment(vec![Container::default(); 2_000_000]);
    assert!(prost::Message::encoded_len(&flood) < 4 * MIB as usize);
    let refused = client.create_consignment(flood).await.expect_err("refused");
    let grown = peak().saturating_sub(before);
    eprintln!(
        "consignment service peak memory {} MiB before, grown by {} KiB; answer {refused:?}",
        before / MIB,
        grown / 1024
    );
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("more than 20000 fields"),
        "{refused:?}"
    );
    // The request's own 4 MiB is buffered, with room for HTTP/2's buffers; decoding it would
    // have taken about 200 MiB.
    assert!(
        grown < 32 * MIB,
        "peak memory grew by {} MiB on one refused request",
        grown / MIB
    );

    // Just over the service's own limit: its own refusal, naming the field.
    let token = cluster.sign_up_and_login("decode@example.com");
    let over = client
        .create_consignment(with_token(consignment(filled(10_001)), &token))
        .await
        .expect_err("over the limit");
    assert_eq!(over.code(), Code::InvalidArgument, "{over:?}");
    assert_eq!(over.message(), "containers: at most 10000 per consignment");

    // And the service goes on serving.
    let created = client
        .create_consignment(with_token(consignment(filled(3)), &token))
        .await
        .expect("created")
        .into_inner();
    let stored = created.consignment.expect("the stored consignment");
    assert!(!stored.vessel_id.is_empty(), "{stored:?}");
}
