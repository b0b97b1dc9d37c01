//! Reading shippy's `consignment.json` and other input files: bounded in size, a UTF-8 byte-order
//! mark accepted, and the consignment checked against the 4 MiB gRPC message limit before sending.

use std::io::Read;

use prost::Message;
use serde::{Deserialize, de::IgnoredAny};
use shippy_proto::consignment::v1 as pb;

use crate::error::CliError;

/// The most the CLI reads from one input file or stdin: 8 MiB, twice the largest message a service
/// accepts, so any JSON that can encode to an acceptable message fits, and `/dev/zero` cannot
/// exhaust memory.
pub const MAX_INPUT: u64 = 8 * 1024 * 1024;

/// The largest message a shippy service decodes: tonic's default of 4 MiB, which the services keep.
/// Checked before sending so that an oversized consignment gets a sentence, not a decoder error.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

const MIB: f64 = 1024.0 * 1024.0;

/// The file format of the original shippy: `{"description", "weight", "containers": [{"customer_id",
/// "user_id", "origin"}]}`. Missing fields are left for the service to name; unknown fields are
/// refused so typos do not pass silently. What the server decides (`id`, `vessel_id`, a container's
/// `id` and `user_id`: the submitting user, who is the caller), which the original tutorial's files
/// carried, is accepted and ignored with a note.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsignmentFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    weight: i32,
    #[serde(default)]
    containers: Vec<ContainerFile>,
    #[serde(default)]
    id: Option<IgnoredAny>,
    #[serde(default)]
    vessel_id: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerFile {
    #[serde(default)]
    customer_id: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    origin: String,
    #[serde(default)]
    id: Option<IgnoredAny>,
}

/// A parsed consignment file, with notes for the user about what was ignored.
#[derive(Debug)]
pub struct Parsed {
    /// The consignment to send.
    pub consignment: pb::Consignment,
    /// One line each, for stderr: fields the file set that the server chooses.
    pub notes: Vec<String>,
}

/// Reads `file` (`-` for stdin) and parses it as a consignment; prints notes about ignored fields
/// to stderr; refuses a consignment too large to send.
pub fn read_consignment(file: &str) -> Result<pb::Consignment, CliError> {
    let parsed = parse_consignment(file, &read_text(file)?)?;
    for note in &parsed.notes {
        // A note is advice; a closed stderr must not stop the command.
        let _ =
            std::io::Write::write_all(&mut std::io::stderr(), format!("note: {note}\n").as_bytes());
    }
    check_size(&parsed.consignment)?;
    Ok(parsed.consignment)
}

/// Reads `file` as text, at most [`MAX_INPUT`] bytes; `-` reads stdin. A leading UTF-8 byte-order
/// mark (as some Windows editors write) is dropped.
pub fn read_text(file: &str) -> Result<String, CliError> {
    let name = if file == "-" { "stdin" } else { file };
    let mut bytes = Vec::new();
    let read = if file == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_INPUT + 1)
            .read_to_end(&mut bytes)
    } else {
        let opened = std::fs::File::open(file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CliError::Input(format!("{file}: no such file")),
            _ => CliError::Input(format!("cannot read {file}: {e}")),
        })?;
        opened.take(MAX_INPUT + 1).read_to_end(&mut bytes)
    };
    read.map_err(|e| CliError::Input(format!("cannot read {name}: {e}")))?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(CliError::Input(format!(
            "{name} is larger than {} MiB, the most shippy reads from one input",
            MAX_INPUT / (1024 * 1024)
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        CliError::Input(format!(
            "{name} is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

/// Parses consignment JSON; errors carry `name:line:column`. A leading byte-order mark is accepted.
pub fn parse_consignment(name: &str, text: &str) -> Result<Parsed, CliError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let parsed: ConsignmentFile = serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; we put the position in front instead.
        let message = message.split(" at line ").next().unwrap_or(&message);
        CliError::Input(format!(
            "{name}:{}:{}: invalid consignment JSON: {message}",
            e.line(),
            e.column()
        ))
    })?;
    let mut notes = Vec::new();
    if parsed.id.is_some() {
        notes.push("ignoring `id`: the server assigns ids".to_owned());
    }
    if parsed.vessel_id.is_some() {
        notes.push("ignoring `vessel_id`: the server chooses the vessel".to_owned());
    }
    if parsed.containers.iter().any(|c| c.id.is_some()) {
        notes.push("ignoring the containers' `id`: the server assigns ids".to_owned());
    }
    if parsed
        .containers
        .iter()
        .any(|c| !c.user_id.trim().is_empty())
    {
        notes.push(
            "ignoring the containers' `user_id`: the server records you, the logged-in user"
                .to_owned(),
        );
    }
    let consignment = pb::Consignment {
        description: parsed.description,
        weight: parsed.weight,
        containers: parsed
            .containers
            .into_iter()
            .map(|c| pb::Container {
                customer_id: c.customer_id,
                origin: c.origin,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    Ok(Parsed { consignment, notes })
}

/// Refuses a consignment whose encoded message is over [`MAX_MESSAGE`], naming its largest part.
/// Field lengths and counts are left to the service, which names the field and its limit.
pub fn check_size(consignment: &pb::Consignment) -> Result<(), CliError> {
    let size = consignment.encoded_len();
    if size <= MAX_MESSAGE {
        return Ok(());
    }
    let description = consignment.description.len();
    let largest = if description * 2 >= size {
        format!(
            "the description alone is {:.1} MiB",
            description as f64 / MIB
        )
    } else {
        format!(
            "its {} containers are {:.1} MiB",
            consignment.containers.len(),
            (size - description) as f64 / MIB
        )
    };
    Err(CliError::Input(format!(
        "the consignment is {:.1} MiB encoded; the limit is {} MiB ({largest})",
        size as f64 / MIB,
        MAX_MESSAGE / (1024 * 1024)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shippy_example_parses() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../consignment.json"
        ))
        .expect("example file at the repo root");
        let c = parse_consignment("consignment.json", &text)
            .expect("valid")
            .consignment;
        assert_eq!(c.weight, 55_000);
        assert_eq!(c.containers.len(), 3);
        assert_eq!(c.containers[0].origin, "Manchester, United Kingdom");
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err = parse_consignment(
            "c.json",
            "{\n  \"description\": \"x\",\n  \"weight\": 5,,\n}",
        )
        .expect_err("bad");
        assert_eq!(
            err.to_string(),
            "c.json:3:15: invalid consignment JSON: key must be a string"
        );
    }

    #[test]
    fn typos_and_wrong_types_are_named() {
        let err = parse_consignment("c.json", r#"{"descripton": "x"}"#).expect_err("typo");
        assert!(
            err.to_string().contains("unknown field `descripton`"),
            "{err}"
        );
        let err = parse_consignment("c.json", r#"{"weight": "heavy"}"#).expect_err("type");
        assert!(
            err.to_string()
                .contains("invalid type: string \"heavy\", expected i32"),
            "{err}"
        );
    }

    #[test]
    fn byte_order_mark_is_accepted() {
        let parsed = parse_consignment("c.json", "\u{feff}{\"description\": \"x\", \"weight\": 5}")
            .expect("BOM accepted");
        assert_eq!(parsed.consignment.description, "x");
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bom.json");
        std::fs::write(&path, b"\xef\xbb\xbf{\"weight\": 7}").expect("write");
        let text = read_text(path.to_str().expect("UTF-8 path")).expect("read");
        assert_eq!(text, "{\"weight\": 7}");
    }

    #[test]
    fn server_chosen_ids_are_ignored_with_a_note() {
        let parsed = parse_consignment(
            "c.json",
            r#"{"id": "c9", "vessel_id": "vessel001", "description": "x",
                "containers": [{"id": 3, "customer_id": "cust001", "user_id": "user001"}]}"#,
        )
        .expect("tutorial fields accepted");
        assert_eq!(parsed.consignment.id, "");
        assert_eq!(parsed.consignment.vessel_id, "");
        assert_eq!(parsed.consignment.containers[0].id, "");
        assert_eq!(parsed.consignment.containers[0].customer_id, "cust001");
        assert_eq!(parsed.consignment.containers[0].user_id, "");
        assert_eq!(
            parsed.notes,
            [
                "ignoring `id`: the server assigns ids",
                "ignoring `vessel_id`: the server chooses the vessel",
                "ignoring the containers' `id`: the server assigns ids",
                "ignoring the containers' `user_id`: the server records you, the logged-in user",
            ]
        );
        // Other unknown fields are still refused, in containers too.
        let err =
            parse_consignment("c.json", r#"{"containers": [{"vessel": 1}]}"#).expect_err("unknown");
        assert!(err.to_string().contains("unknown field `vessel`"), "{err}");
    }

    #[test]
    fn input_is_capped() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("big.json");
        std::fs::write(
            &path,
            vec![b' '; usize::try_from(MAX_INPUT).expect("fits") + 1],
        )
        .expect("write");
        let err = read_text(path.to_str().expect("UTF-8 path")).expect_err("too big");
        assert_eq!(
            err.to_string(),
            format!(
                "{} is larger than 8 MiB, the most shippy reads from one input",
                path.display()
            )
        );
        let exact = dir.path().join("exact.json");
        std::fs::write(
            &exact,
            vec![b' '; usize::try_from(MAX_INPUT).expect("fits")],
        )
        .expect("write");
        assert!(read_text(exact.to_str().expect("UTF-8 path")).is_ok());
        #[cfg(unix)]
        assert!(
            read_text("/dev/zero")
                .expect_err("endless")
                .to_string()
                .starts_with("/dev/zero is larger than 8 MiB"),
        );
    }

    #[test]
    fn oversized_messages_are_refused_before_sending() {
        let small = pb::Consignment {
            description: "x".repeat(1000),
            ..Default::default()
        };
        assert!(check_size(&small).is_ok());
        let long = pb::Consignment {
            description: "x".repeat(5_000_000),
            ..Default::default()
        };
        assert_eq!(
            check_size(&long).expect_err("too large").to_string(),
            "the consignment is 4.8 MiB encoded; the limit is 4 MiB \
             (the description alone is 4.8 MiB)"
        );
        let many = pb::Consignment {
            description: "x".into(),
            containers: vec![
                pb::Container {
                    customer_id: "c".repeat(100),
                    origin: "o".repeat(100),
                    ..Default::default()
                };
                25_000
            ],
            ..Default::default()
        };
        assert_eq!(
            check_size(&many).expect_err("too large").to_string(),
            "the consignment is 4.9 MiB encoded; the limit is 4 MiB \
             (its 25000 containers are 4.9 MiB)"
        );
    }
}
