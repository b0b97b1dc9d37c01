//! Reading shippy's `consignment.json`.

use std::io::Read;

use serde::Deserialize;
use shippy_proto::consignment::v1 as pb;

use crate::error::CliError;

/// The file format of the original shippy: `{"description", "weight", "containers": [{"customer_id",
/// "user_id", "origin"}]}`. Missing fields are left for the service to name; unknown fields are
/// refused so typos do not pass silently.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsignmentFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    weight: i32,
    #[serde(default)]
    containers: Vec<ContainerFile>,
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
}

/// Reads `file` (`-` for stdin) and parses it as a consignment.
pub fn read_consignment(file: &str) -> Result<pb::Consignment, CliError> {
    parse_consignment(file, &read_text(file)?)
}

/// Reads `file` as text; `-` reads stdin.
pub fn read_text(file: &str) -> Result<String, CliError> {
    Ok(if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::Input(format!("cannot read stdin: {e}")))?;
        text
    } else {
        std::fs::read_to_string(file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CliError::Input(format!("{file}: no such file")),
            _ => CliError::Input(format!("cannot read {file}: {e}")),
        })?
    })
}

/// Parses consignment JSON; errors carry `name:line:column`.
pub fn parse_consignment(name: &str, text: &str) -> Result<pb::Consignment, CliError> {
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
    Ok(pb::Consignment {
        description: parsed.description,
        weight: parsed.weight,
        containers: parsed
            .containers
            .into_iter()
            .map(|c| pb::Container {
                customer_id: c.customer_id,
                user_id: c.user_id,
                origin: c.origin,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
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
        let c = parse_consignment("consignment.json", &text).expect("valid");
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
}
