//! Header work on the request path, as pure functions, one job per file:
//! `edit` (changing a head's headers in place), `hop_by_hop` (what never crosses the
//! gateway: connection headers, on the way up and back), `forwarded` (who the
//! client is behind trusted proxies; what `X-Forwarded-For` says upstream), `host`
//! (which host a request names, and whether it names one acceptably) and `framing`
//! (what the head says about the body: lengths, sizes, ambiguous framing).
//! The names the gateway reads and writes are here, parsed once.

pub mod edit;
pub mod forwarded;
pub mod framing;
pub mod hop_by_hop;
pub mod host;

use http::header::HeaderName;

pub use edit::{edit_request, edit_response, header_value, remove_listed};
pub use forwarded::{client_ip, forwarded_for, ip_text, is_trusted};
pub use host::{ascii_lowercase, host_acceptable, request_host};

// Names as `HeaderName` constants for lookups: given as `&str`, every lookup would
// parse the name again (callgrind showed name parsing at ~4% of a request's
// instructions).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
