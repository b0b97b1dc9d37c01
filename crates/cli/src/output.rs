//! Rendering results as tables or JSON, and writing them to standard output.
//!
//! Everything printed comes from services and so from other users: every control character in it
//! is shown as a visible escape (`\u{1b}`, `\n`), in tables, messages and JSON alike, so no text
//! can move the cursor, retitle or clear another user's terminal. Writes that fail because the
//! reader went away (`shippy ... | head -1`) end the command quietly ([`CliError::BrokenPipe`]).

use std::{
    borrow::Cow,
    io::{self, Write},
};

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};
use shippy_proto::{consignment::v1 as consignment, user::v1 as user, vessel::v1 as vessel};

use crate::{args::Output, error::CliError};

/// A consignment as printed.
#[derive(Debug, Serialize)]
pub struct ConsignmentView {
    id: String,
    description: String,
    weight: i32,
    vessel_id: String,
    containers: Vec<ContainerView>,
}

#[derive(Debug, Serialize)]
struct ContainerView {
    id: String,
    customer_id: String,
    origin: String,
    user_id: String,
}

impl From<consignment::Consignment> for ConsignmentView {
    fn from(c: consignment::Consignment) -> Self {
        Self {
            id: c.id,
            description: c.description,
            weight: c.weight,
            vessel_id: c.vessel_id,
            containers: c
                .containers
                .into_iter()
                .map(|k| ContainerView {
                    id: k.id,
                    customer_id: k.customer_id,
                    origin: k.origin,
                    user_id: k.user_id,
                })
                .collect(),
        }
    }
}

/// A vessel as printed.
#[derive(Debug, Serialize)]
pub struct VesselView {
    id: String,
    name: String,
    capacity: i32,
    max_weight: i32,
    available: bool,
    owner_id: String,
}

impl From<vessel::Vessel> for VesselView {
    fn from(v: vessel::Vessel) -> Self {
        Self {
            id: v.id,
            name: v.name,
            capacity: v.capacity,
            max_weight: v.max_weight,
            available: v.available,
            owner_id: v.owner_id,
        }
    }
}

/// A user as printed (never with a password).
#[derive(Debug, Serialize)]
pub struct UserView {
    id: String,
    name: String,
    company: String,
    email: String,
}

impl From<user::User> for UserView {
    fn from(u: user::User) -> Self {
        Self {
            id: u.id,
            name: u.name,
            company: u.company,
            email: u.email,
        }
    }
}

/// One registered instance and its health, for `shippy status`.
#[derive(Debug, Serialize)]
pub struct InstanceView {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub id: String,
    /// Address.
    pub address: String,
    /// Version.
    pub version: String,
    /// Health status.
    pub health: String,
}

/// `text` with every control character (Unicode `Cc`: C0, DEL, C1) replaced by a visible escape:
/// `\n`, `\r`, `\t`, or `\u{1b}` for the rest.
pub fn visible(text: &str) -> Cow<'_, str> {
    escape_controls(text, |_| true)
}

/// Like [`visible`], but keeps newlines and tabs: for multi-line documents printed as they are.
pub fn visible_lines(text: &str) -> Cow<'_, str> {
    escape_controls(text, |c| c != '\n' && c != '\t')
}

fn escape_controls(text: &str, escaped: impl Fn(char) -> bool) -> Cow<'_, str> {
    let needs = |c: char| c.is_control() && escaped(c);
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !needs(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    Cow::Owned(out)
}

/// Runs `render` against standard output and flushes it.
fn emit(render: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<(), CliError> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    render(&mut out)
        .and_then(|()| out.flush())
        .map_err(CliError::output)
}

/// Prints one line for people; control characters in it are escaped.
pub fn line(text: &str) -> Result<(), CliError> {
    emit(|out| writeln!(out, "{}", visible(text)))
}

/// Prints a multi-line document as it is, but with control characters other than newline and tab
/// escaped.
pub fn document(text: &str) -> Result<(), CliError> {
    emit(|out| write!(out, "{}", visible_lines(text)))
}

/// serde_json's pretty printer, also escaping DEL and the C1 controls (U+007F..=U+009F) that it
/// writes raw: a terminal in UTF-8 mode may act on U+009B as CSI.
struct SafeJson<'a>(PrettyFormatter<'a>);

impl Formatter for SafeJson<'_> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_control() {
                // serde_json already escaped C0 (never in a fragment); what is left is DEL and C1.
                w.write_all(&fragment.as_bytes()[start..i])?;
                write!(w, "\\u{:04x}", u32::from(c))?;
                start = i + c.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Writes `value` as pretty JSON with every control character escaped, and a newline.
fn write_json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut *out, SafeJson(PrettyFormatter::new()));
    value.serialize(&mut serializer).map_err(io::Error::from)?;
    writeln!(out)
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(header.to_vec());
    table
}

/// A table row with control characters escaped in every cell.
fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| visible(c).into_owned()).collect()
}

/// Prints consignments; `title` goes above the table.
pub fn consignments(
    format: Output,
    title: &str,
    items: Vec<ConsignmentView>,
) -> Result<(), CliError> {
    emit(|out| write_consignments(out, format, title, &items))
}

fn write_consignments(
    out: &mut dyn Write,
    format: Output,
    title: &str,
    items: &[ConsignmentView],
) -> io::Result<()> {
    if format == Output::Json {
        return write_json(out, items);
    }
    writeln!(out, "{}", visible(title))?;
    let mut t = table(&["id", "description", "weight", "containers", "vessel_id"]);
    for c in items {
        t.add_row(row([
            &c.id,
            &c.description,
            &c.weight.to_string(),
            &c.containers.len().to_string(),
            &c.vessel_id,
        ]));
    }
    writeln!(out, "{t}")?;
    if let [single] = items {
        let mut t = table(&["container", "customer_id", "origin", "user_id"]);
        for k in &single.containers {
            t.add_row(row([&k.id, &k.customer_id, &k.origin, &k.user_id]));
        }
        writeln!(out, "{t}")?;
    }
    Ok(())
}

/// Prints vessels.
pub fn vessels(format: Output, items: Vec<VesselView>) -> Result<(), CliError> {
    emit(|out| write_vessels(out, format, &items))
}

fn write_vessels(out: &mut dyn Write, format: Output, items: &[VesselView]) -> io::Result<()> {
    if format == Output::Json {
        return write_json(out, items);
    }
    let mut t = table(&[
        "id",
        "name",
        "capacity",
        "max_weight",
        "available",
        "owner_id",
    ]);
    for v in items {
        t.add_row(row([
            &v.id,
            &v.name,
            &v.capacity.to_string(),
            &v.max_weight.to_string(),
            &v.available.to_string(),
            &v.owner_id,
        ]));
    }
    writeln!(out, "{t}")
}

/// Prints users.
pub fn users(format: Output, items: Vec<UserView>) -> Result<(), CliError> {
    emit(|out| write_users(out, format, &items))
}

fn write_users(out: &mut dyn Write, format: Output, items: &[UserView]) -> io::Result<()> {
    if format == Output::Json {
        return write_json(out, items);
    }
    let mut t = table(&["id", "name", "company", "email"]);
    for u in items {
        t.add_row(row([&u.id, &u.name, &u.company, &u.email]));
    }
    writeln!(out, "{t}")
}

/// Prints instances.
pub fn instances(format: Output, items: &[InstanceView]) -> Result<(), CliError> {
    emit(|out| write_instances(out, format, items))
}

fn write_instances(out: &mut dyn Write, format: Output, items: &[InstanceView]) -> io::Result<()> {
    if format == Output::Json {
        return write_json(out, items);
    }
    let mut t = table(&["service", "instance", "address", "version", "health"]);
    for i in items {
        t.add_row(row([&i.service, &i.id, &i.address, &i.version, &i.health]));
    }
    writeln!(out, "{t}")
}

/// Prints a message for people, or a JSON object for scripts.
pub fn message(format: Output, text: &str, value: &serde_json::Value) -> Result<(), CliError> {
    emit(|out| write_message(out, format, text, value))
}

fn write_message(
    out: &mut dyn Write,
    format: Output,
    text: &str,
    value: &serde_json::Value,
) -> io::Result<()> {
    if format == Output::Json {
        write_json(out, value)
    } else {
        writeln!(out, "{}", visible(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J";

    fn rendered(render: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        render(&mut out).expect("render");
        String::from_utf8(out).expect("UTF-8")
    }

    fn hostile_consignment() -> ConsignmentView {
        consignment::Consignment {
            id: "c1".into(),
            description: HOSTILE.into(),
            weight: 5,
            vessel_id: "v\u{9b}2J".into(),
            containers: vec![consignment::Container {
                id: "k1".into(),
                customer_id: "line\nbreak".into(),
                origin: "tab\there".into(),
                user_id: "del\x7f".into(),
            }],
        }
        .into()
    }

    /// No control character reaches the terminal, except the newlines between table lines.
    fn assert_no_controls(text: &str) {
        let found: Vec<char> = text
            .chars()
            .filter(|c| c.is_control() && *c != '\n')
            .collect();
        assert!(found.is_empty(), "raw controls {found:?} in:\n{text}");
    }

    #[test]
    fn visible_escapes_every_control_character() {
        assert_eq!(visible("plain → text"), "plain → text");
        assert!(matches!(visible("plain"), Cow::Borrowed(_)));
        assert_eq!(visible(HOSTILE), "\\u{1b}]0;pwned\\u{7}\\u{1b}[2J");
        assert_eq!(
            visible("a\nb\tc\rd\0\x7f\u{9b}"),
            "a\\nb\\tc\\rd\\u{0}\\u{7f}\\u{9b}"
        );
        assert_eq!(
            visible_lines("a: 1\n\tb\x1b[2J\r\n"),
            "a: 1\n\tb\\u{1b}[2J\\r\n"
        );
    }

    #[test]
    fn tables_escape_control_characters() {
        let text = rendered(|out| {
            write_consignments(out, Output::Table, HOSTILE, &[hostile_consignment()])
        });
        assert_no_controls(&text);
        assert!(text.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"), "{text}");
        assert!(text.contains("line\\nbreak"), "{text}");
        assert!(text.contains("v\\u{9b}2J"), "{text}");
        let vessel = VesselView::from(vessel::Vessel {
            name: HOSTILE.into(),
            ..Default::default()
        });
        assert_no_controls(&rendered(|out| {
            write_vessels(out, Output::Table, &[vessel])
        }));
        let user = UserView::from(user::User {
            name: HOSTILE.into(),
            company: "\u{85}".into(),
            ..Default::default()
        });
        assert_no_controls(&rendered(|out| write_users(out, Output::Table, &[user])));
        let instance = InstanceView {
            service: "user".into(),
            id: HOSTILE.into(),
            address: String::new(),
            version: "\x07".into(),
            health: String::new(),
        };
        assert_no_controls(&rendered(|out| {
            write_instances(out, Output::Table, &[instance])
        }));
        let message =
            rendered(|out| write_message(out, Output::Table, HOSTILE, &serde_json::Value::Null));
        assert_eq!(message, "\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\n");
    }

    #[test]
    fn json_escapes_c0_del_and_c1_and_stays_json() {
        let text =
            rendered(|out| write_consignments(out, Output::Json, "", &[hostile_consignment()]));
        assert_no_controls(&text);
        assert!(
            text.contains(r#""description": "\u001b]0;pwned\u0007\u001b[2J""#),
            "{text}"
        );
        assert!(text.contains(r#""vessel_id": "v\u009b2J""#), "{text}");
        assert!(text.contains(r#""user_id": "del\u007f""#), "{text}");
        // Still the same data for scripts.
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed[0]["description"], HOSTILE);
        assert_eq!(parsed[0]["vessel_id"], "v\u{9b}2J");
        assert_eq!(parsed[0]["containers"][0]["customer_id"], "line\nbreak");
    }
}
