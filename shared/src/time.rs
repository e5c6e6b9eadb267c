//! Event timestamps: every format the stream profiles accept, read as UTC
//! epoch milliseconds.
//!
//! Accepted, as docs/design.md lists them:
//! - RFC 3339 with any offset and any fraction (`2022-11-19T23:23:16.792323Z`,
//!   `2022-11-19T15:23:16-08:00`), with `T`, `t` or a space between date and time;
//! - zone-less timestamps, read as UTC, with `T` or a space
//!   (`2022-11-19 23:23:16.792`, Snowflake's TIMESTAMP_NTZ form);
//! - epoch milliseconds as a JSON integer.
//!
//! Anything else is an error that says what was expected. Times before 1970 or
//! after 9999 are refused: they cannot name an hour folder.

use chrono::{DateTime, NaiveDateTime};

/// The largest epoch millisecond accepted: 9999-12-31T23:59:59.999Z.
pub const MAX_EPOCH_MILLIS: i64 = 253_402_300_799_999;

const NAIVE_FORMATS: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"];

/// Why a timestamp could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error(
        "`{0}` is not a timestamp (expected RFC 3339, a zone-less `YYYY-MM-DD HH:MM:SS[.fff]` read as UTC, or epoch milliseconds)"
    )]
    Unparsable(String),
    #[error("epoch milliseconds must be a whole number, got `{0}`")]
    NotWhole(String),
    #[error("`{0}` is outside the years 1970 to 9999")]
    OutOfRange(String),
}

/// Reads a timestamp string (RFC 3339 or zone-less UTC) as epoch milliseconds.
pub fn parse_timestamp(text: &str) -> Result<i64, TimeError> {
    let trimmed = text.trim();
    let millis = if let Ok(with_zone) = DateTime::parse_from_rfc3339(trimmed) {
        with_zone.timestamp_millis()
    } else {
        NAIVE_FORMATS
            .iter()
            .find_map(|format| NaiveDateTime::parse_from_str(trimmed, format).ok())
            .map(|naive| naive.and_utc().timestamp_millis())
            .ok_or_else(|| TimeError::Unparsable(shorten(text)))?
    };
    check_range(millis, text)
}

/// Reads the text of a JSON number as epoch milliseconds.
pub fn parse_epoch_millis(number: &str) -> Result<i64, TimeError> {
    let millis: i64 = number
        .parse()
        .map_err(|_| TimeError::NotWhole(shorten(number)))?;
    check_range(millis, number)
}

fn check_range(millis: i64, text: &str) -> Result<i64, TimeError> {
    if (0..=MAX_EPOCH_MILLIS).contains(&millis) {
        Ok(millis)
    } else {
        Err(TimeError::OutOfRange(shorten(text)))
    }
}

/// Error messages quote the value, but never more than a short prefix of it.
fn shorten(text: &str) -> String {
    const LIMIT: usize = 64;
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_rfc3339_millis(millis: i64) -> String {
    DateTime::from_timestamp_millis(millis)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| millis.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_MILLIS: i64 = 1_668_900_196_792;

    #[test]
    fn rfc3339_with_microseconds_and_z() {
        assert_eq!(
            parse_timestamp("2022-11-19T23:23:16.792323Z"),
            Ok(SEED_MILLIS)
        );
    }

    #[test]
    fn rfc3339_with_negative_offset_is_converted_to_utc() {
        assert_eq!(
            parse_timestamp("2022-11-19T15:23:16.792-08:00"),
            Ok(SEED_MILLIS)
        );
    }

    #[test]
    fn rfc3339_with_space_separator() {
        assert_eq!(parse_timestamp("2022-11-19 23:23:16.792Z"), Ok(SEED_MILLIS));
    }

    #[test]
    fn zone_less_timestamps_are_utc_with_t_or_space() {
        assert_eq!(parse_timestamp("2022-11-19 23:23:16.792"), Ok(SEED_MILLIS));
        assert_eq!(parse_timestamp("2022-11-19T23:23:16.792"), Ok(SEED_MILLIS));
        assert_eq!(
            parse_timestamp("2022-11-19 23:23:16"),
            Ok(SEED_MILLIS - 792)
        );
    }

    #[test]
    fn epoch_millis_are_read_as_is() {
        assert_eq!(parse_epoch_millis("1668900196792"), Ok(SEED_MILLIS));
    }

    #[test]
    fn fractional_epoch_is_refused() {
        assert!(matches!(
            parse_epoch_millis("1668900196792.5"),
            Err(TimeError::NotWhole(_))
        ));
    }

    #[test]
    fn negative_and_far_future_times_are_refused() {
        assert!(matches!(
            parse_epoch_millis("-1"),
            Err(TimeError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_epoch_millis("253402300800000"),
            Err(TimeError::OutOfRange(_))
        ));
    }

    #[test]
    fn garbage_is_refused_with_the_value_quoted() {
        let error = parse_timestamp("yesterday").unwrap_err();
        assert!(error.to_string().contains("`yesterday`"), "{error}");
    }

    #[test]
    fn long_garbage_is_quoted_shortened() {
        let error = parse_timestamp(&"x".repeat(5000)).unwrap_err().to_string();
        assert!(error.len() < 300, "{error}");
    }

    #[test]
    fn formats_back_to_rfc3339() {
        assert_eq!(
            format_rfc3339_millis(SEED_MILLIS),
            "2022-11-19T23:23:16.792Z"
        );
    }
}
