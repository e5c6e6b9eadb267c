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
    let millis = if let Some(millis) = parse_common(trimmed) {
        millis
    } else if let Ok(with_zone) = DateTime::parse_from_rfc3339(trimmed) {
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

/// The common forms, read without chrono (whose format-driven parsing is
/// most of an event's reading): `YYYY-MM-DD`, `T` or a space,
/// `HH:MM:SS`, an optional fraction of up to nine digits, then `Z`,
/// `+HH:MM`/`-HH:MM`, or nothing (UTC). `None` for anything else, even
/// valid (a leap second, a lowercase `t`, a long fraction): chrono reads
/// that as before, so this decides nothing, it only answers sooner.
fn parse_common(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = bytes.get(range)?;
        digits.iter().try_fold(0i64, |value, &digit| {
            digit
                .is_ascii_digit()
                .then(|| value * 10 + i64::from(digit - b'0'))
        })
    };
    let at = |index: usize, expected: &[u8]| bytes.get(index).is_some_and(|b| expected.contains(b));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"T ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = 19;
    let mut fraction_millis = 0;
    if at(rest, b".") {
        let digits = bytes[rest + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        // The first three digits, as many as there are: truncated, as
        // chrono's timestamp_millis does.
        let shown = digits.min(3);
        fraction_millis = number(rest + 1..rest + 1 + shown)? * 10i64.pow(3 - shown as u32);
        rest += 1 + digits;
    }
    let offset_minutes = match bytes.get(rest..)? {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (number(rest + 1..rest + 3)?, number(rest + 4..rest + 6)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 60 + minutes;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    Some(seconds * 1000 + fraction_millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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

    /// What chrono alone reads: the parser before the common forms'.
    fn parse_with_chrono(text: &str) -> Option<i64> {
        let trimmed = text.trim();
        DateTime::parse_from_rfc3339(trimmed)
            .map(|time| time.timestamp_millis())
            .ok()
            .or_else(|| {
                NAIVE_FORMATS.iter().find_map(|format| {
                    NaiveDateTime::parse_from_str(trimmed, format)
                        .ok()
                        .map(|naive| naive.and_utc().timestamp_millis())
                })
            })
    }

    #[test]
    fn common_forms_read_as_chrono_reads_them() {
        let mut rng = fastrand::Rng::with_seed(16);
        let mut answered = 0;
        for round in 0..50_000 {
            let mut text = format!(
                "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}",
                rng.i64(1960..2500),
                rng.u8(0..14),
                rng.u8(0..33),
                [" ", "T", "t", "_"][rng.usize(..4)],
                rng.u8(0..25),
                rng.u8(0..61),
                rng.u8(0..62)
            );
            if rng.bool() {
                let digits = rng.usize(0..12);
                text.push('.');
                text.extend((0..digits).map(|_| char::from(b'0' + rng.u8(0..10))));
            }
            text.push_str(
                [
                    "", "Z", "z", "+00:00", "-08:00", "+05:45", "+23:59", "+24:00", "-00:60",
                    "+0100", " ", "Z ",
                ][rng.usize(..12)],
            );
            if round % 7 == 0 && !text.is_empty() {
                // A character cut or replaced.
                let at = rng.usize(..text.len());
                text.replace_range(at..at + 1, ["", "x", "9", ":"][rng.usize(..4)]);
            }
            let fast = parse_common(text.trim());
            if let Some(millis) = fast {
                answered += 1;
                assert_eq!(Some(millis), parse_with_chrono(&text), "{text}");
            }
            assert_eq!(
                parse_timestamp(&text).ok(),
                parse_with_chrono(&text).filter(|millis| (0..=MAX_EPOCH_MILLIS).contains(millis)),
                "{text}"
            );
        }
        assert!(answered > 5_000, "{answered}");
    }

    #[test]
    fn formats_back_to_rfc3339() {
        assert_eq!(
            format_rfc3339_millis(SEED_MILLIS),
            "2022-11-19T23:23:16.792Z"
        );
    }
}
