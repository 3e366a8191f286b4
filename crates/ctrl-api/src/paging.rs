//! Page sizes and opaque page tokens for List RPCs.

use ctrl_proto::ctrl::v1::{PageRequest, PageResponse};

use crate::error::ApiError;

/// Default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 200;

/// A validated page request: the cursor and the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Opaque cursor from the previous page (0 = first page).
    pub cursor: u64,
    /// Rows to return.
    pub size: u32,
}

impl Page {
    /// Validates the request's paging fields.
    pub fn from_request(page: Option<&PageRequest>) -> Result<Self, ApiError> {
        let Some(page) = page else {
            return Ok(Self {
                cursor: 0,
                size: DEFAULT_PAGE_SIZE,
            });
        };
        let size = match page.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 || n as u32 > MAX_PAGE_SIZE => {
                return Err(ApiError::invalid(
                    "page.page_size",
                    format!("must be between 1 and {MAX_PAGE_SIZE}"),
                ));
            }
            n => n as u32,
        };
        let cursor = if page.page_token.is_empty() {
            0
        } else {
            decode_token(&page.page_token).ok_or_else(|| {
                ApiError::invalid("page.page_token", "is not a token from a previous response")
            })?
        };
        Ok(Self { cursor, size })
    }
}

/// The response paging for a next cursor.
pub fn response(next_cursor: Option<u64>) -> PageResponse {
    PageResponse {
        next_page_token: next_cursor.map(encode_token).unwrap_or_default(),
    }
}

fn encode_token(cursor: u64) -> String {
    format!("p1.{cursor:x}")
}

fn decode_token(token: &str) -> Option<u64> {
    u64::from_str_radix(token.strip_prefix("p1.")?, 16)
        .ok()
        .filter(|c| *c > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_input_is_named() {
        let page = |size, token: &str| {
            Page::from_request(Some(&PageRequest {
                page_size: size,
                page_token: token.into(),
            }))
        };
        assert_eq!(
            Page::from_request(None),
            Ok(Page {
                cursor: 0,
                size: 50
            })
        );
        assert_eq!(
            page(0, ""),
            Ok(Page {
                cursor: 0,
                size: 50
            })
        );
        let next = response(Some(1234)).next_page_token;
        assert_eq!(
            page(10, &next),
            Ok(Page {
                cursor: 1234,
                size: 10
            })
        );
        assert_eq!(response(None).next_page_token, "");
        for bad in ["x", "p1.", "p1.zz", "p1.0"] {
            assert!(
                matches!(page(10, bad), Err(ApiError::InvalidArgument { ref field, .. }) if field == "page.page_token"),
                "{bad}"
            );
        }
        for size in [-1, 201] {
            assert!(
                matches!(page(size, ""), Err(ApiError::InvalidArgument { ref field, .. }) if field == "page.page_size")
            );
        }
    }
}
