//! The W3C `traceparent` header (Trace Context, level 1), read and written directly.
//!
//! Every call crosses this code twice (written by the caller, read by the server), so it is
//! written here instead of going through the SDK's `TraceContextPropagator`: that one splits the
//! header into a `Vec`, formats a `String` per call and goes through the `Injector` /
//! `Extractor` traits, a few per cent of a hop's CPU in the profile. This one works on the bytes
//! in place and is stricter where the recommendation is strict: ids of exactly 32 and 16 lower-case
//! hex digits, not all zero; version `ff` refused; a version-00 header exactly 55 bytes; a later
//! version at least that long, with a `-` after the flags when it goes on.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// Length of a version-00 header: `vv-` + 32 + `-` + 16 + `-` + `ff`.
const LEN: usize = 55;

/// The header value for `context`: `00-<trace id>-<span id>-<flags>`, only the sampled flag kept.
pub(super) fn format(context: &SpanContext) -> [u8; LEN] {
    let mut out = [b'-'; LEN];
    out[0] = b'0';
    out[1] = b'0';
    hex(&context.trace_id().to_bytes(), &mut out[3..35]);
    hex(&context.span_id().to_bytes(), &mut out[36..52]);
    let sampled = u8::from(context.trace_flags().is_sampled());
    hex(&[sampled], &mut out[53..55]);
    out
}

/// The remote span context in `header` (and `state`, the `tracestate` header, when it is valid);
/// `None` when `header` is malformed, so the call starts a trace of its own.
pub(super) fn parse(header: &[u8], state: Option<&str>) -> Option<SpanContext> {
    let header = header.trim_ascii();
    if header.len() < LEN || [header[2], header[35], header[52]] != [b'-'; 3] {
        return None;
    }
    let [version] = unhex::<1>(&header[0..2])?;
    match version {
        0xff => return None,
        0 if header.len() != LEN => return None,
        _ if header.len() > LEN && header[LEN] != b'-' => return None,
        _ => {}
    }
    let trace_id = TraceId::from_bytes(unhex(&header[3..35])?);
    let span_id = SpanId::from_bytes(unhex(&header[36..52])?);
    let [flags] = unhex::<1>(&header[53..55])?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    // A malformed `tracestate` is dropped, the parent kept (as the recommendation says).
    let state = state
        .and_then(|state| state.parse::<TraceState>().ok())
        .unwrap_or_default();
    let flags = TraceFlags::new(flags) & TraceFlags::SAMPLED;
    Some(SpanContext::new(trace_id, span_id, flags, true, state))
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hex(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// `N` bytes from exactly `2 * N` lower-case hex digits.
fn unhex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_header_round_trips() {
        let context = parse(VALID.as_bytes(), None).expect("a valid header");
        assert!(context.is_remote() && context.is_sampled());
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(&format(&context)[..], VALID.as_bytes());

        let unsampled = VALID.replace("-01", "-00");
        let context = parse(unsampled.as_bytes(), None).expect("a valid header");
        assert!(!context.is_sampled());
        assert_eq!(&format(&context)[..], unsampled.as_bytes());
    }

    #[test]
    fn only_the_sampled_flag_is_kept_and_a_later_version_is_read_as_00() {
        let context = parse(VALID.replace("-01", "-09").as_bytes(), None).expect("a valid header");
        assert_eq!(context.trace_flags(), TraceFlags::SAMPLED);
        let later = format!("02{}-what-comes-next", &VALID[2..]);
        let context = parse(later.as_bytes(), None).expect("a valid header");
        assert_eq!(&format(&context)[..], VALID.as_bytes());
        assert!(parse(format!(" {VALID}\t").as_bytes(), None).is_some());
    }

    #[test]
    fn a_valid_tracestate_is_kept_and_a_malformed_one_dropped() {
        let context =
            parse(VALID.as_bytes(), Some("vendor=value,other=x")).expect("a valid header");
        assert_eq!(context.trace_state().get("vendor"), Some("value"));
        let context = parse(VALID.as_bytes(), Some("not a list entry")).expect("a valid header");
        assert_eq!(context.trace_state().header(), "");
    }

    #[test]
    fn malformed_headers_are_refused() {
        for (header, why) in [
            ("", "empty"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "no flags",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-",
                "empty flags",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                "00 with more",
            ),
            (
                "02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                "no dash after flags",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version ff",
            ),
            (
                "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "bad version",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "upper-case id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                "short trace id",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "zero trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "zero span id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0Z",
                "bad flags",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
                "no dashes",
            ),
        ] {
            assert!(parse(header.as_bytes(), None).is_none(), "{why}: {header}");
        }
    }
}
