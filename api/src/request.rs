//! Reading requests: bodies within the size limit, JSON bodies, paging arguments and byte
//! ranges, each failing with an [`ApiError`] that says what was wrong and what is expected.
//! The extractors' own errors (path, query) are mapped here too, so that every client mistake
//! is a problem+json answer.

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::Limits;
use crate::error::ApiError;

/// Items per page when the client does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// The most items a page may hold.
pub const MAX_LIMIT: u32 = 500;

/// The whole body, refused with 413 as soon as it exceeds the body limit, and with 408 when it
/// has not arrived whole within the body timeout (a client that trickles its body would
/// otherwise hold a connection and its buffer forever).
pub async fn body(
    req: &HttpRequest,
    payload: web::Payload,
    limits: &Limits,
) -> Result<web::Bytes, ApiError> {
    let within = limits.body_timeout;
    let mut received = 0;
    let read = read_body(req, payload, limits.max_body, &mut received);
    match tokio::time::timeout(within, read).await {
        Ok(read) => read,
        Err(_) => Err(ApiError::RequestTimeout {
            after: within,
            received,
        }),
    }
}

async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    received: &mut usize,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|err| ApiError::InvalidArgument {
            name: "the request body".into(),
            value: "unreadable".into(),
            expected: format!("a complete body ({err})"),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
        *received = body.len();
    }
    Ok(body.freeze())
}

/// The request's media type, without parameters, lowercased; `None` without a header.
pub fn media_type(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::CONTENT_TYPE)?;
    let text = value.to_str().unwrap_or("(not ASCII)");
    Some(
        text.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

/// A JSON body; an empty body is `empty` when that is given.
pub async fn json<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    limits: &Limits,
    empty: Option<T>,
) -> Result<T, ApiError> {
    let bytes = body(req, payload, limits).await?;
    if let Some(value) = empty.filter(|_| bytes.is_empty()) {
        return Ok(value);
    }
    match media_type(req).as_deref() {
        Some("application/json") => {}
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType {
                got: other.to_owned(),
                expected: "application/json",
            });
        }
        None => {}
    }
    serde_json::from_slice(&bytes).map_err(|err| ApiError::InvalidJson {
        reason: err.to_string(),
    })
}

/// `limit` from a query, within 1..=[`MAX_LIMIT`].
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::argument(
            "query parameter `limit`",
            &n.to_string(),
            &format!("a number from 1 to {MAX_LIMIT}"),
        )),
    }
}

/// Bytes `start..end` (end exclusive) of a log of `length` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// The single range of a `Range: bytes=...` header over `length` bytes: `a-b` (inclusive),
/// `a-` (to the end) or `-n` (the last n bytes).
pub fn parse_range(header: &str, length: u64) -> Result<ByteRange, ApiError> {
    let expected = "`bytes=START-END`, `bytes=START-` or `bytes=-SUFFIX`, one range";
    let bad = || ApiError::argument("header `Range`", header, expected);
    let spec = header.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (first, last) = spec.split_once('-').ok_or_else(bad)?;
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    let range = match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, true) => return Err(bad()),
        (true, false) => {
            let suffix = number(last)?;
            ByteRange {
                start: length.saturating_sub(suffix),
                end: length,
            }
        }
        (false, true) => ByteRange {
            start: number(first)?,
            end: length,
        },
        (false, false) => {
            let (start, last) = (number(first)?, number(last)?);
            if last < start {
                return Err(bad());
            }
            ByteRange {
                start,
                end: last.saturating_add(1).min(length),
            }
        }
    };
    if range.start >= length && !(length == 0 && range.start == 0) {
        return Err(ApiError::RangeNotSatisfiable {
            start: range.start,
            length,
        });
    }
    Ok(range)
}

/// The range of `?from=&to=` (to exclusive) over `length` bytes.
pub fn query_range(from: Option<u64>, to: Option<u64>, length: u64) -> Result<ByteRange, ApiError> {
    let start = from.unwrap_or(0);
    let end = to.unwrap_or(length).min(length);
    if let Some(to) = to.filter(|to| *to < start) {
        return Err(ApiError::argument(
            "query parameter `to`",
            &to.to_string(),
            &format!("an offset not before `from` ({start})"),
        ));
    }
    if start > length {
        return Err(ApiError::RangeNotSatisfiable { start, length });
    }
    Ok(ByteRange {
        start,
        end: end.max(start),
    })
}

/// Path segments that do not parse (`/runs/abc`): 400, naming the segment.
pub fn path_error(err: actix_web::error::PathError, req: &HttpRequest) -> actix_web::Error {
    ApiError::InvalidArgument {
        name: "the path".into(),
        value: req.path().to_owned(),
        expected: format!("ids as decimal numbers ({err})"),
    }
    .into()
}

/// Query strings that do not parse or name unknown parameters: 400.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    req: &HttpRequest,
) -> actix_web::Error {
    ApiError::InvalidArgument {
        name: "the query string".into(),
        value: req.query_string().to_owned(),
        expected: format!("the documented parameters ({err})"),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(header: &str, length: u64) -> Result<(u64, u64), &'static str> {
        parse_range(header, length)
            .map(|r| (r.start, r.end))
            .map_err(|e| e.code())
    }

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        assert_eq!(range("bytes=0-4", 10), Ok((0, 5)));
        assert_eq!(range("bytes=5-", 10), Ok((5, 10)));
        assert_eq!(range("bytes=-3", 10), Ok((7, 10)));
        assert_eq!(range("bytes=-30", 10), Ok((0, 10)));
        assert_eq!(range("bytes=8-100", 10), Ok((8, 10)));
        assert_eq!(range("bytes=10-", 10), Err("range-not-satisfiable"));
        assert_eq!(range("bytes=4-2", 10), Err("invalid-argument"));
        assert_eq!(range("bytes=0-1,4-5", 10), Err("invalid-argument"));
        assert_eq!(range("items=0-1", 10), Err("invalid-argument"));
        assert_eq!(range("bytes=x-1", 10), Err("invalid-argument"));
        assert_eq!(range("bytes=-", 10), Err("invalid-argument"));
    }

    #[test]
    fn query_ranges_stop_at_the_end_of_the_log() {
        let r = |from, to, len| query_range(from, to, len).map(|r| (r.start, r.end));
        assert_eq!(r(None, None, 10).ok(), Some((0, 10)));
        assert_eq!(r(Some(4), Some(100), 10).ok(), Some((4, 10)));
        assert_eq!(r(Some(10), None, 10).ok(), Some((10, 10)));
        assert!(r(Some(11), None, 10).is_err());
        assert!(r(Some(5), Some(2), 10).is_err());
    }

    #[test]
    fn page_limits_stay_within_bounds() {
        assert_eq!(page_limit(None).ok(), Some(DEFAULT_LIMIT));
        assert_eq!(page_limit(Some(1)).ok(), Some(1));
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(MAX_LIMIT + 1)).is_err());
    }
}
