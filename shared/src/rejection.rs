//! Why a record was refused. Every refused record goes to `errors/` with one
//! of these reasons and a detail that names the field or part at fault.

use std::fmt;

/// The reason a record can never be accepted; retrying cannot fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The body, a line or an array element is not valid JSON.
    NotJson,
    /// The JSON is valid but not an object (`[1,2]`, `"text"`, `42`).
    NotAnObject,
    /// A field the stream's profile requires is absent or null.
    MissingField,
    /// A field is present with the wrong JSON type, or is empty.
    WrongType,
    /// The time field could not be read as a timestamp.
    BadTime,
    /// The event is larger than the configured maximum event size.
    TooLarge,
    /// The message names a stream the configuration does not know.
    UnknownStream,
    /// A compressed body (`content-encoding` attribute) could not be
    /// decoded: an unknown encoding, bad base64, not gzip or zstd data, or
    /// not UTF-8 once decompressed.
    BadEncoding,
    /// A routing field (tenant, time, id or type), or an object on its
    /// pointer path, appears more than once in its object: JSON readers
    /// disagree on which value counts, so the event is not routed by either.
    DuplicateField,
    /// The configuration maps senders to tenants (`senders`), and this
    /// message's sender is not mapped to the event's tenant, or the message
    /// has no `SenderId` to check.
    TenantNotAllowed,
}

impl RejectReason {
    /// The stable snake_case code used in `errors/` records and in logs.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::NotJson => "not_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::BadTime => "bad_time",
            RejectReason::TooLarge => "too_large",
            RejectReason::UnknownStream => "unknown_stream",
            RejectReason::BadEncoding => "bad_encoding",
            RejectReason::DuplicateField => "duplicate_field",
            RejectReason::TenantNotAllowed => "tenant_not_allowed",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refused record's reason and a human-readable detail naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}
