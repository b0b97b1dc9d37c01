//! Paging of list calls: every list answer is bounded, both in items and in bytes, and a client
//! follows `next_page_token` until it is empty.
//!
//! Pages are keyset pages: the token names the last id of the previous page (opaque to clients,
//! hex-encoded), and the next page is the items after it in id order. So a page never repeats or
//! skips an item when items are added meanwhile, and a token stays valid forever. The byte budget
//! keeps an answer under the 4 MiB a gRPC message may have whatever the items weigh: a page ends
//! early (with a token) when the next item would not fit, and holds at least one item.

use crate::validate::FieldError;

/// Items in a page when the client asks for none (`page_size` 0).
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The most items in a page; larger requests are served this many (as AIP-158 recommends).
pub const MAX_PAGE_SIZE: usize = 1_000;
/// The most bytes of items in one answer: room below the 4 MiB message limit.
pub const MAX_PAGE_BYTES: usize = 3 * 1024 * 1024;

/// Tokens start with this, so a token of another kind or version is recognised as foreign.
const TOKEN_PREFIX: &str = "p1:";

/// A validated page request; only [`PageRequest::parse`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    after: Option<String>,
    size: usize,
}

impl PageRequest {
    /// Checks `page_size` (0 = the default; negative refused; above the maximum, the maximum) and
    /// `page_token` (empty = from the start; otherwise a token this service issued).
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self, FieldError> {
        let size = match usize::try_from(page_size) {
            Err(_) => {
                return Err(FieldError::new(
                    "page_size",
                    format!("must not be negative (got {page_size})"),
                ));
            }
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(size) => size.min(MAX_PAGE_SIZE),
        };
        let after = match page_token.trim() {
            "" => None,
            token => Some(decode(token).ok_or_else(|| {
                FieldError::new(
                    "page_token",
                    "is not a token this service issued; use the `next_page_token` of the \
                     previous answer, or none for the first page",
                )
            })?),
        };
        Ok(Self { after, size })
    }

    /// The first page of the default size.
    pub fn first() -> Self {
        Self {
            after: None,
            size: DEFAULT_PAGE_SIZE,
        }
    }

    /// The id after which this page starts, if it is not the first.
    pub fn after(&self) -> Option<&str> {
        self.after.as_deref()
    }

    /// How many items to fetch: one more than the page holds, to tell whether another page follows.
    pub fn fetch_limit(&self) -> usize {
        self.size + 1
    }

    /// Cuts `fetched` (in id order, at most [`PageRequest::fetch_limit`] items) into this page and
    /// the token of the next one (`None` on the last page). `bytes` is an item's encoded size; the
    /// page ends early when the next item would pass [`MAX_PAGE_BYTES`], and holds at least one.
    pub fn cut<T>(
        &self,
        mut fetched: Vec<T>,
        id: impl Fn(&T) -> &str,
        bytes: impl Fn(&T) -> usize,
    ) -> (Vec<T>, Option<String>) {
        let more = fetched.len() > self.size;
        fetched.truncate(self.size);
        let mut used = 0;
        let mut fit = fetched.len();
        for (i, item) in fetched.iter().enumerate() {
            used += bytes(item);
            if used > MAX_PAGE_BYTES && i > 0 {
                fit = i;
                break;
            }
        }
        let cut_short = fit < fetched.len();
        fetched.truncate(fit);
        let next = if more || cut_short {
            fetched.last().map(|last| encode(id(last)))
        } else {
            None
        };
        (fetched, next)
    }
}

fn encode(id: &str) -> String {
    format!("{TOKEN_PREFIX}{id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) || token.len() > 1_024 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    text.strip_prefix(TOKEN_PREFIX)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("id{i:03}")).collect()
    }

    #[test]
    fn sizes_default_are_capped_and_never_negative() {
        assert_eq!(
            PageRequest::parse(0, "").expect("default").size,
            DEFAULT_PAGE_SIZE
        );
        assert_eq!(PageRequest::parse(5, "").expect("five").size, 5);
        assert_eq!(
            PageRequest::parse(i32::MAX, "").expect("capped").size,
            MAX_PAGE_SIZE
        );
        let err = PageRequest::parse(-1, "").expect_err("negative");
        assert_eq!(err.to_string(), "page_size: must not be negative (got -1)");
    }

    #[test]
    fn tokens_round_trip_and_foreign_ones_are_refused() {
        let page = PageRequest::parse(2, "").expect("first");
        let (items, next) = page.cut(ids(3), String::as_str, |_| 1);
        assert_eq!(items, ["id000", "id001"]);
        let next = next.expect("a next page");
        let second = PageRequest::parse(2, &next).expect("our own token");
        assert_eq!(second.after(), Some("id001"));
        for bad in ["zz", "abc", "6869", "70313a", &"00".repeat(600)] {
            let err = PageRequest::parse(2, bad).expect_err("foreign token");
            assert_eq!(err.field(), "page_token", "{bad}");
        }
    }

    #[test]
    fn the_last_page_has_no_token() {
        let page = PageRequest::parse(5, "").expect("page");
        let (items, next) = page.cut(ids(5), String::as_str, |_| 1);
        assert_eq!(items.len(), 5);
        assert_eq!(next, None);
    }

    #[test]
    fn a_page_ends_early_at_the_byte_budget_but_holds_one_item() {
        let page = PageRequest::parse(10, "").expect("page");
        let heavy = MAX_PAGE_BYTES / 2 + 1;
        let (items, next) = page.cut(ids(4), String::as_str, |_| heavy);
        assert_eq!(items, ["id000"], "two would pass the budget");
        assert!(next.is_some());
        let (items, _) = page.cut(ids(1), String::as_str, |_| MAX_PAGE_BYTES * 2);
        assert_eq!(items.len(), 1, "a single huge item still goes out");
    }
}
