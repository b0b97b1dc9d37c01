//! The web console in a real headless Chromium (Debian's `chromium` and `chromedriver`, driven
//! over WebDriver), served by the real gateway in front of the real services: a newcomer logs
//! in, uploads the repository's `consignment.json`, sees it listed with its vessel, sees the
//! fleet and the three vessel instances of the distributed system, and sees a bad submission
//! refused with the gateway's sentence and request id; a create whose answer was lost, sent
//! again, is stored once. Server strings stay text, and the page breaks no rule of the gateway's
//! Content-Security-Policy.
//!
//! `SHIPPY_SCREENSHOT=1` saves a screenshot to `docs/console.png` (the README's), so CI never
//! rewrites it.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use shippy_test_support::{Cluster, browser::Browser, example_consignment};

/// How long the page may take to show the outcome of one step.
const WAIT: Duration = Duration::from_secs(30);

/// The rows of the table `table` (a CSS selector) as the text of their cells of class
/// `c-<column>`, one vector per row.
fn rows(browser: &Browser, table: &str, columns: &[&str]) -> anyhow::Result<Vec<Vec<String>>> {
    browser
        .find_all(&format!("{table} tbody tr"))?
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|column| row.find(&format!("td.c-{column}"))?.text())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn a_newcomer_logs_in_ships_consignment_json_and_sees_the_distributed_system() {
    let mut cluster = Cluster::local().expect("cluster");
    let _user = cluster.start("user").await.expect("user starts");
    let mut vessels = Vec::new();
    for _ in 0..3 {
        vessels.push(cluster.start("vessel").await.expect("vessel starts"));
    }
    let _consignment = cluster
        .start("consignment")
        .await
        .expect("consignment starts");
    let gateway = cluster
        .start_with("gateway", &[("SHIPPY_GATEWAY__INSTANCE_ADDRESSES", "true")])
        .await
        .expect("gateway starts");
    let url = gateway
        .http_url()
        .expect("the gateway registers its HTTP address");
    let email = "newcomer@example.com";
    cluster.sign_up_and_login(email);
    let vessel_addresses = vessels.iter().map(|v| v.address().to_owned()).collect();

    let browser = Browser::start().expect("chromedriver and headless Chromium start");
    if let Err(error) = story(&browser, &url, email, vessel_addresses) {
        panic!("{error:#}\ngateway log:\n{}", gateway.log());
    }
}

/// Wraps the page's `fetch` once: the next `POST /v1/consignments` goes to the gateway for real,
/// its answer is read into `window.shippyLost` (the stored id and the idempotency key sent), and
/// the page gets the error a dropped connection gives.
const LOSE_THE_NEXT_CREATE_ANSWER: &str = r#"
const realFetch = window.fetch;
window.fetch = async (input, init) => {
  const response = await realFetch(input, init);
  if (init?.method === "POST" && String(input) === "/v1/consignments") {
    window.fetch = realFetch;
    const answer = await response.json();
    window.shippyLost = {
      id: answer.consignment?.id ?? "",
      key: new Headers(init.headers).get("Idempotency-Key") ?? "",
    };
    throw new TypeError("Failed to fetch");
  }
  return response;
};
"#;

/// The newcomer's visit, step by step.
fn story(
    browser: &Browser,
    url: &str,
    email: &str,
    mut addresses: Vec<String>,
) -> anyhow::Result<()> {
    browser.resize(1280, 1100).context("window size")?;
    browser
        .goto(&format!("{url}/"))
        .context("the console loads")?;

    // Signed out: the login form, not the shipping form.
    browser
        .wait_visible("#email", WAIT)
        .context("login form")?
        .send_keys(email)
        .context("type the email")?;
    assert!(!browser.find("#consignment-json")?.is_displayed()?);
    browser.find("#password")?.send_keys("correct horse")?;
    browser.find("#login")?.click()?;
    browser
        .wait_visible("#consignment-json", WAIT)
        .context("signed in: the shipping form shows")?;
    let whoami = browser
        .wait_until("the signed-in user's name", WAIT, |b| {
            let text = b.find("#signed-in-as")?.text()?;
            Ok(text.contains(email).then_some(text))
        })
        .context("who is signed in")?;
    assert!(whoami.contains("Test User"), "{whoami}");
    assert!(!browser.find("#email")?.is_displayed()?);

    // Upload the repository's consignment.json through the file input, and submit it.
    let file: PathBuf = example_consignment()
        .canonicalize()
        .context("consignment.json")?;
    browser
        .find("#consignment-file")?
        .send_keys(&file.display().to_string())
        .context("choose the file")?;
    let expected = std::fs::read_to_string(&file)?;
    browser
        .wait_until("the file in the textarea", WAIT, |b| {
            let value = b.find("#consignment-json")?.property("value")?;
            Ok((value.as_str() == Some(expected.as_str())).then_some(()))
        })
        .context("the uploaded JSON shows in the textarea")?;
    browser.find("#submit")?.click()?;
    browser
        .wait_visible("#created", WAIT)
        .context("the created consignment is shown")?;
    let id = browser.find("#created-id")?.text()?;
    let vessel = browser.find("#created-vessel")?.text()?;
    assert!(
        !id.is_empty() && !vessel.is_empty(),
        "id {id:?} vessel {vessel:?}"
    );

    // Listed with its vessel, which is one of the fleet.
    browser
        .wait_until("the consignment listed with its vessel", WAIT, |b| {
            let listed = rows(b, "#consignments", &["id", "vessel", "containers"])?;
            Ok(listed
                .contains(&vec![id.clone(), vessel.clone(), "3".to_owned()])
                .then_some(()))
        })
        .context("my consignments")?;
    assert_eq!(
        browser.find("#consignments-count")?.text()?,
        "1 consignment"
    );
    browser
        .wait_until("the vessel in the fleet", WAIT, |b| {
            let fleet = rows(b, "#vessels", &["id", "name"])?;
            Ok(fleet.iter().any(|v| v[0] == vessel).then_some(()))
        })
        .context("the fleet")?;

    // Three vessel instances, at the addresses of the three processes, from discovery; and the
    // calls they served (the consignment service asked one of them for a vessel).
    let calls = |listed: &[Vec<String>]| -> f64 {
        listed.iter().filter_map(|r| r[1].parse::<f64>().ok()).sum()
    };
    addresses.sort();
    let selector = r#"#instances section[data-service="vessel"]"#;
    browser
        .wait_until("three vessel instances, and calls served", WAIT, |b| {
            let listed = rows(b, selector, &["address", "calls"])?;
            let mut shown: Vec<String> = listed.iter().map(|r| r[0].clone()).collect();
            shown.sort();
            let consignment = rows(
                b,
                r#"#instances section[data-service="consignment"]"#,
                &["address", "calls"],
            )?;
            Ok(
                (shown == addresses && calls(&listed) >= 1.0 && calls(&consignment) >= 1.0)
                    .then_some(()),
            )
        })
        .context("the live instances")?;
    for service in ["user", "consignment", "gateway"] {
        let section = format!(r#"#instances section[data-service="{service}"]"#);
        let listed = rows(browser, &section, &["address"]).context("instances")?;
        assert_eq!(listed.len(), 1, "{service}: {listed:?}");
    }

    if std::env::var_os("SHIPPY_SCREENSHOT").is_some_and(|v| v == "1") {
        let png = browser.screenshot().context("screenshot")?;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/console.png");
        std::fs::write(path, png).context("write docs/console.png")?;
    }

    // A consignment typed in with markup in it: listed as text, never as markup.
    let textarea = browser.find("#consignment-json")?;
    textarea.clear()?;
    textarea
        .send_keys(
            r#"{"description": "<img id=injected src=x>", "weight": 10, "containers": [{"customer_id": "c1", "origin": "Leeds"}]}"#,
        )
        ?;
    browser.find("#submit")?.click()?;
    browser
        .wait_until("the typed consignment listed", WAIT, |b| {
            let listed = rows(b, "#consignments", &["description"])?;
            Ok(listed
                .iter()
                .any(|r| r[0] == "<img id=injected src=x>")
                .then_some(()))
        })
        .context("the description listed as text")?;
    assert!(browser.find_all("#injected")?.is_empty());

    // The same draft shipped again is a second consignment; this time its answer is lost on
    // the way back (the page's fetch reads it for the test, then fails as a dropped connection
    // would): the consignment exists, the page says the gateway could not be reached. Submitted again, the
    // draft goes with the same idempotency key: the page shows the consignment stored the first
    // time, and the list holds it once.
    browser.execute(LOSE_THE_NEXT_CREATE_ANSWER, &[])?;
    browser.find("#submit")?.click()?;
    browser
        .wait_visible("#error", WAIT)
        .context("the lost answer reported")?;
    let detail = browser.find("#error-detail")?.text()?;
    assert!(detail.contains("could not be reached"), "{detail}");
    let lost = browser
        .wait_until("the lost answer seen by the test", WAIT, |b| {
            let lost = b.execute("return window.shippyLost ?? null;", &[])?;
            Ok((!lost.is_null()).then_some(lost))
        })
        .context("the first attempt's answer")?;
    let (lost_id, key) = (lost["id"].as_str(), lost["key"].as_str());
    assert!(
        lost_id.is_some_and(|id| !id.is_empty()) && key.is_some_and(|key| !key.is_empty()),
        "the first attempt stored nothing, or sent no key: {lost}"
    );
    browser.find("#submit")?.click()?;
    browser
        .wait_visible("#created", WAIT)
        .context("the retry answered")?;
    assert_eq!(
        browser.find("#created-id")?.text()?,
        lost_id.unwrap_or_default()
    );
    browser
        .wait_until("three consignments listed", WAIT, |b| {
            let count = b.find("#consignments-count")?.text()?;
            Ok((count == "3 consignments").then_some(()))
        })
        .context("one consignment for the lost answer and its retry")?;

    // Malformed JSON: the gateway's sentence and request id in the alert area.
    let textarea = browser.find("#consignment-json")?;
    textarea.clear()?;
    textarea.send_keys(r#"{"description": "#)?;
    browser.find("#submit")?.click()?;
    browser
        .wait_visible("#error", WAIT)
        .context("the error is shown")?;
    let detail = browser.find("#error-detail")?.text()?;
    let request_id = browser.find("#error-request-id")?.text()?;
    assert!(!detail.is_empty(), "no detail shown");
    assert!(
        !request_id.is_empty() && request_id != "none",
        "no request id shown: {request_id:?} (detail {detail:?})"
    );
    assert!(
        !detail.starts_with("The gateway answered"),
        "the problem's detail was not read: {detail:?}"
    );
    assert_eq!(
        browser.find("#error")?.attribute("role")?,
        Some("alert".to_owned())
    );
    assert!(!browser.find("#created")?.is_displayed()?);

    // Logging out forgets the token: the login form again.
    browser.find("#logout")?.click()?;
    browser.wait_visible("#email", WAIT).context("signed out")?;
    assert!(!browser.find("#consignment-json")?.is_displayed()?);
    let token = browser.execute("return sessionStorage.getItem('shippy.token');", &[])?;
    assert_eq!(token, serde_json::Value::Null);

    // A second newcomer registers through the console (a name with markup in it), signs in with
    // the filled-in form, sees the name as text and none of the first user's consignments.
    browser.find("#auth summary")?.click()?;
    let name = r#"<b id="injected-name">Mallory</b>"#;
    browser.wait_visible("#reg-name", WAIT)?.send_keys(name)?;
    browser.find("#reg-company")?.send_keys("Acme")?;
    browser
        .find("#reg-email")?
        .send_keys("second@example.com")?;
    browser
        .find("#reg-password")?
        .send_keys("another long passphrase")?;
    browser.find("#register")?.click()?;
    browser
        .wait_until("the login form filled in", WAIT, |b| {
            let email = b.find("#email")?.property("value")?;
            Ok((email == "second@example.com").then_some(()))
        })
        .context("registered")?;
    browser.find("#login")?.click()?;
    let whoami = browser
        .wait_until("the second user signed in", WAIT, |b| {
            let text = b.find("#signed-in-as")?.text()?;
            Ok(text.contains("second@example.com").then_some(text))
        })
        .context("the second user's name")?;
    assert!(whoami.contains(name), "{whoami}");
    assert!(browser.find_all("#injected-name")?.is_empty());
    browser
        .wait_until("the second user's consignments listed", WAIT, |b| {
            let count = b.find("#consignments-count")?.text()?;
            Ok((count == "0 consignments").then_some(()))
        })
        .context("the second user's list")?;
    assert!(rows(browser, "#consignments", &["id"])?.is_empty());

    // Nothing the page did broke the gateway's Content-Security-Policy.
    let messages = browser.console_messages().context("the page's console")?;
    let violations: Vec<_> = messages
        .iter()
        .filter(|m| m.contains("Content Security Policy") || m.contains("Uncaught"))
        .collect();
    assert!(violations.is_empty(), "{violations:#?}");
    Ok(())
}
