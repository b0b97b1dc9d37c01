//! Field validation that every service's domain uses: one text rule (trimmed, required or not,
//! bounded in characters, free of control characters) and one error that names the field.
//!
//! A field's name is given as a closure and only built when the value is refused, so validating a
//! large valid request formats nothing (`containers[41].origin` costs only on error).

use std::fmt;

/// A refused field: which one, and why. Displays as `field: reason`, the text clients see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    field: String,
    reason: String,
}

impl FieldError {
    /// `field` is refused because of `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field, e.g. `containers[1].origin`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why it was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

/// Whether an empty value is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Empty (after trimming) is refused.
    Required,
    /// Empty is fine.
    Optional,
}

/// `value` trimmed, if it is present when `presence` requires it, at most `max` characters, and
/// free of control characters.
///
/// Every text field (names, descriptions, origins, ids a client names) is a one-line label that
/// other users see in `shippy` tables, so all control characters (Unicode `Cc`: C0 including tab
/// and newline, DEL and C1) are refused: an escape sequence would act on another user's terminal,
/// and a tab or newline would misalign or forge table rows. Leading and trailing whitespace,
/// where a pasted tab or newline usually sits, is trimmed first and so still accepted.
pub fn text(
    field: impl FnOnce() -> String,
    value: &str,
    max: usize,
    presence: Presence,
) -> Result<String, FieldError> {
    let value = value.trim();
    if presence == Presence::Required && value.is_empty() {
        return Err(FieldError::new(field(), "must not be empty"));
    }
    // Byte length bounds character count from above: count characters only when it matters.
    if value.len() > max && value.chars().count() > max {
        return Err(FieldError::new(
            field(),
            format!("longer than {max} characters"),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(FieldError::new(
            field(),
            format!(
                "must not contain control characters (found U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(value.to_owned())
}

/// `value` as a count that must be at least `min` (and fit in a `u32`).
pub fn at_least(field: impl FnOnce() -> String, value: i64, min: u32) -> Result<u32, FieldError> {
    match u32::try_from(value) {
        Ok(v) if v >= min => Ok(v),
        _ if value >= i64::from(min) => {
            Err(FieldError::new(field(), format!("too large (got {value})")))
        }
        _ if min == 0 => Err(FieldError::new(
            field(),
            format!("must not be negative (got {value})"),
        )),
        _ => Err(FieldError::new(
            field(),
            format!("must be at least {min} (got {value})"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_required_and_bounded() {
        let name = || "name".to_owned();
        assert_eq!(text(name, " a ", 3, Presence::Required), Ok("a".into()));
        assert_eq!(
            text(name, "  ", 3, Presence::Required)
                .expect_err("empty")
                .to_string(),
            "name: must not be empty"
        );
        assert_eq!(text(name, "", 3, Presence::Optional), Ok(String::new()));
        assert_eq!(
            text(name, "abcd", 3, Presence::Optional)
                .expect_err("long")
                .to_string(),
            "name: longer than 3 characters"
        );
        assert_eq!(text(name, "ééé", 3, Presence::Optional), Ok("ééé".into()));
    }

    #[test]
    fn control_characters_are_refused_naming_the_field() {
        let description = || "description".to_owned();
        let refused = |value: &str| {
            text(description, value, 100, Presence::Optional)
                .expect_err("control character")
                .to_string()
        };
        assert_eq!(
            refused("\x1b]0;pwned\x07\x1b[2J"),
            "description: must not contain control characters (found U+001B)"
        );
        // C0 inside the text, tab and newline included; DEL; C1 (U+009B is a one-character CSI).
        for value in [
            "a\tb",
            "a\nb",
            "a\rb",
            "a\0b",
            "a\x7fb",
            "a\u{9b}2Jb",
            "a\u{85}b",
        ] {
            assert!(
                refused(value).starts_with("description: must not contain control characters"),
                "{value:?}"
            );
        }
        // Surrounding whitespace is trimmed before the check; other Unicode is fine.
        assert_eq!(
            text(description, "\tcargo\n", 100, Presence::Optional),
            Ok("cargo".into())
        );
        assert_eq!(
            text(description, "Zürich → 東京 🚢", 100, Presence::Optional),
            Ok("Zürich → 東京 🚢".into())
        );
    }

    #[test]
    fn counts_name_their_bound() {
        let f = || "weight".to_owned();
        assert_eq!(at_least(f, 5, 1), Ok(5));
        assert_eq!(
            at_least(f, 0, 1).expect_err("zero").to_string(),
            "weight: must be at least 1 (got 0)"
        );
        assert_eq!(
            at_least(f, -5, 1).expect_err("negative").to_string(),
            "weight: must be at least 1 (got -5)"
        );
        assert_eq!(
            at_least(f, -5, 0).expect_err("negative").to_string(),
            "weight: must not be negative (got -5)"
        );
        assert_eq!(
            at_least(f, i64::from(u32::MAX) + 1, 0)
                .expect_err("too large")
                .to_string(),
            "weight: too large (got 4294967296)"
        );
    }

    #[test]
    fn field_names_are_built_only_on_error() {
        let built = std::cell::Cell::new(false);
        let field = || {
            built.set(true);
            "f".to_owned()
        };
        text(field, "fine", 10, Presence::Required).expect("valid");
        assert!(!built.get());
    }
}
