//! Delivery intervals: how often a destination receives files (issue 18).
//!
//! A destination is `hourly` (the default: an hour's compacted parts once
//! the hour has closed) or receives a file every few minutes, with the
//! events staged since its previous file, as Airkit's exports do. The
//! coordinator runs on the flush schedule (the template's `FlushSchedule`,
//! given to the functions as `FLUSH_SCHEDULE`), so a destination cannot
//! receive files more often than the schedule fires: such a destination is
//! refused at cold start ([`schedule_minutes`]).

use std::fmt;

/// How often a destination receives files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Interval {
    /// An hour's compacted parts once it has closed.
    #[default]
    Hourly,
    /// A new file every this many minutes (a divisor of 60 below 60) with
    /// the events staged since the previous one; the hour's last once it
    /// has closed.
    Minutes(u32),
}

/// The minute counts an interval may have: those that divide an hour.
pub const INTERVAL_MINUTES: [u32; 11] = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30];

impl Interval {
    /// Reads a destination's `interval`: `"hourly"`, or a number of minutes
    /// of [`INTERVAL_MINUTES`] (as a number or a string of digits). The
    /// error says what is accepted.
    pub fn parse(value: &serde_json::Value) -> Result<Self, String> {
        let minutes = match value {
            serde_json::Value::String(text) if text.trim() == "hourly" => {
                return Ok(Self::Hourly);
            }
            serde_json::Value::String(text) => text.trim().parse::<u64>().ok(),
            serde_json::Value::Number(number) => number.as_u64(),
            _ => None,
        };
        match minutes {
            Some(minutes) if INTERVAL_MINUTES.contains(&(minutes as u32)) && minutes < 60 => {
                Ok(Self::Minutes(minutes as u32))
            }
            _ => Err(format!(
                "`{value}` is not `hourly` or a number of minutes that divides an hour ({})",
                INTERVAL_MINUTES.map(|m| m.to_string()).join(", ")
            )),
        }
    }

    /// Whether files come every few minutes (not hourly).
    pub fn is_minutes(self) -> bool {
        matches!(self, Self::Minutes(_))
    }

    /// Minutes between two files: 60 for an hourly destination.
    pub fn minutes(self) -> u32 {
        match self {
            Self::Hourly => 60,
            Self::Minutes(minutes) => minutes,
        }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hourly => f.write_str("hourly"),
            Self::Minutes(1) => f.write_str("every minute"),
            Self::Minutes(minutes) => write!(f, "every {minutes} minutes"),
        }
    }
}

/// The longest gap, in minutes, between two runs of an EventBridge
/// schedule expression: `rate(N minute(s)|hour(s)|day(s))`, or
/// `cron(minutes hours …)` whose hours field is `*` (a minutes field of
/// one number: 60; `*/N` or `A/N`: N, or the wrap to the next hour when
/// longer; a list: its longest gap, around the hour; `*`: 1). A cron with
/// a narrower hours field runs less than hourly: its gap is taken as a
/// day. `None` when the expression is none of these.
pub fn schedule_minutes(expression: &str) -> Option<u32> {
    let expression = expression.trim();
    if let Some(rate) = expression
        .strip_prefix("rate(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let mut words = rate.split_whitespace();
        let count: u32 = words.next()?.parse().ok().filter(|n| *n > 0)?;
        let unit = words.next()?;
        if words.next().is_some() {
            return None;
        }
        return match unit.trim_end_matches('s') {
            "minute" => Some(count),
            "hour" => count.checked_mul(60),
            "day" => count.checked_mul(24 * 60),
            _ => None,
        };
    }
    let cron = expression
        .strip_prefix("cron(")
        .and_then(|c| c.strip_suffix(')'))?;
    let mut fields = cron.split_whitespace();
    let minutes = fields.next()?;
    let hours = fields.next()?;
    if hours != "*" {
        return Some(24 * 60);
    }
    let fired: Vec<u32> = if minutes == "*" {
        (0..60).collect()
    } else if let Some((start, step)) = minutes.split_once('/') {
        let start: u32 = if start == "*" { 0 } else { start.parse().ok()? };
        let step: u32 = step.parse().ok().filter(|s| *s > 0)?;
        (start..60).step_by(step as usize).collect()
    } else {
        let mut list = minutes
            .split(',')
            .map(|m| m.parse::<u32>().ok().filter(|m| *m < 60))
            .collect::<Option<Vec<u32>>>()?;
        list.sort_unstable();
        list.dedup();
        list
    };
    let first = *fired.first()?;
    let gaps = fired.windows(2).map(|pair| pair[1] - pair[0]);
    let wrap = first + 60 - fired.last()?;
    gaps.chain([wrap]).max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_interval_is_hourly_or_minutes_that_divide_an_hour() {
        assert_eq!(Interval::parse(&json!("hourly")), Ok(Interval::Hourly));
        assert_eq!(Interval::parse(&json!(5)), Ok(Interval::Minutes(5)));
        assert_eq!(Interval::parse(&json!("15")), Ok(Interval::Minutes(15)));
        for bad in [
            json!(7),
            json!(0),
            json!(60),
            json!(90),
            json!("daily"),
            json!(-5),
            json!(2.5),
        ] {
            let error = Interval::parse(&bad).unwrap_err();
            assert!(error.contains("divides an hour"), "{bad}: {error}");
        }
        assert_eq!(Interval::Minutes(5).to_string(), "every 5 minutes");
        assert_eq!(Interval::Hourly.minutes(), 60);
        assert!(Interval::Minutes(1).is_minutes() && !Interval::Hourly.is_minutes());
    }

    #[test]
    fn a_schedule_gives_its_longest_gap_between_runs() {
        assert_eq!(schedule_minutes("cron(15 * * * ? *)"), Some(60));
        assert_eq!(schedule_minutes("cron(0/5 * * * ? *)"), Some(5));
        assert_eq!(schedule_minutes("cron(*/10 * * * ? *)"), Some(10));
        assert_eq!(schedule_minutes("cron(3/10 * * * ? *)"), Some(10));
        // 50, then 7 past the next hour: 17 minutes around the hour.
        assert_eq!(schedule_minutes("cron(7/43 * * * ? *)"), Some(43));
        assert_eq!(schedule_minutes("cron(0,15,45 * * * ? *)"), Some(30));
        assert_eq!(schedule_minutes("cron(* * * * ? *)"), Some(1));
        assert_eq!(schedule_minutes("cron(15 8 * * ? *)"), Some(24 * 60));
        assert_eq!(schedule_minutes("rate(5 minutes)"), Some(5));
        assert_eq!(schedule_minutes("rate(1 minute)"), Some(1));
        assert_eq!(schedule_minutes("rate(1 hour)"), Some(60));
        for bad in [
            "",
            "cron()",
            "cron(x * * * ? *)",
            "rate(0 minutes)",
            "rate(5 weeks)",
            "at(2026-12-01T00:00:00)",
        ] {
            assert_eq!(schedule_minutes(bad), None, "{bad}");
        }
    }
}
