//! When a policy runs: `every 250ms`, or a 6-field cron line with seconds evaluated
//! in a time zone. Pure: the scheduler asks for the next tick after a time.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Local, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::config::yaml::parse_duration;

/// The time zone cron lines are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    /// The machine's local time zone.
    #[default]
    Local,
    Named(Tz),
}

impl FromStr for Zone {
    type Err = String;
    fn from_str(s: &str) -> Result<Zone, String> {
        match s {
            "local" | "Local" => Ok(Zone::Local),
            name => name
                .parse::<Tz>()
                .map(Zone::Named)
                .map_err(|_| format!("unknown time zone `{name}`")),
        }
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Local => f.write_str("local"),
            Zone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron {
        line: String,
        cron: Box<Cron>,
        zone: Zone,
    },
}

/// The shortest interval we accept: below it the processlist query itself
/// would be most of the work.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

impl Schedule {
    /// Parses `every <duration>` or a cron line with seconds.
    pub fn parse(text: &str, zone: Zone) -> Result<Schedule, (String, String)> {
        let t = text.trim();
        if let Some(rest) = t.strip_prefix("every ") {
            let d = parse_duration(rest).map_err(|e| {
                (
                    format!("schedule `{t}`: {e}"),
                    "write `every 250ms`, `every 5s` or `every 1m`".to_owned(),
                )
            })?;
            if d < MIN_INTERVAL {
                return Err((
                    format!("`{t}` is shorter than the minimum interval of 10ms"),
                    "use `every 10ms` or more".to_owned(),
                ));
            }
            return Ok(Schedule::Every(d));
        }
        let fields = t.split_whitespace().count();
        if fields == 5 {
            return Err((
                format!(
                    "cron line `{t}` has 5 fields; session-reaper reads 6, starting with seconds"
                ),
                format!("write `0 {t}` to run at second 0"),
            ));
        }
        if fields != 6 {
            return Err((
                format!("`{t}` is neither `every <duration>` nor a 6-field cron line"),
                "write `every 5s`, or a cron line with seconds such as `*/10 * * * * *`".to_owned(),
            ));
        }
        let parser = CronParser::builder().seconds(Seconds::Required).build();
        let cron = parser.parse(t).map_err(|e| {
            (
                format!("bad cron line `{t}`: {e}"),
                "fields are: second minute hour day-of-month month day-of-week".to_owned(),
            )
        })?;
        Ok(Schedule::Cron {
            line: t.to_owned(),
            cron: Box::new(cron),
            zone,
        })
    }

    /// The first tick strictly after `after`, if there is one.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => Some(after + chrono::Duration::from_std(*d).ok()?),
            Schedule::Cron { cron, zone, .. } => match zone {
                Zone::Local => cron
                    .find_next_occurrence(&after.with_timezone(&Local), false)
                    .ok()
                    .map(|t| t.with_timezone(&Utc)),
                Zone::Named(tz) => cron
                    .find_next_occurrence(&after.with_timezone(tz), false)
                    .ok()
                    .map(|t| t.with_timezone(&Utc)),
            },
        }
    }

    pub fn interval(&self) -> Option<Duration> {
        match self {
            Schedule::Every(d) => Some(*d),
            Schedule::Cron { .. } => None,
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}", crate::core::policy::format_duration(*d)),
            Schedule::Cron { line, zone, .. } => write!(f, "{line} ({zone})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn every_parses_intervals() {
        assert!(
            matches!(Schedule::parse("every 250ms", Zone::Local), Ok(Schedule::Every(d)) if d == Duration::from_millis(250))
        );
        assert!(Schedule::parse("every 5ms", Zone::Local).is_err());
        assert!(Schedule::parse("every", Zone::Local).is_err());
        assert!(Schedule::parse("every five seconds", Zone::Local).is_err());
    }

    #[test]
    fn five_field_cron_is_refused_with_a_hint() {
        let Err((msg, hint)) = Schedule::parse("*/5 * * * *", Zone::Local) else {
            panic!("accepted a 5-field line");
        };
        assert!(msg.contains("5 fields"), "{msg}");
        assert_eq!(hint, "write `0 */5 * * * *` to run at second 0");
    }

    #[test]
    fn cron_runs_in_the_named_zone() {
        let zone: Zone = "Asia/Shanghai".parse().unwrap();
        let s = Schedule::parse("0 30 2 * * *", zone).unwrap();
        // 02:30 in Shanghai is 18:30 UTC the day before.
        let after = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        assert_eq!(
            s.next_after(after),
            Some(Utc.with_ymd_and_hms(2026, 11, 25, 18, 30, 0).unwrap())
        );
    }

    #[test]
    fn cron_with_seconds_ticks_every_ten_seconds() {
        let s = Schedule::parse("*/10 * * * * *", Zone::Named(chrono_tz::UTC)).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 3).unwrap();
        assert_eq!(
            s.next_after(after),
            Some(Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 10).unwrap())
        );
        let on = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 10).unwrap();
        assert_eq!(
            s.next_after(on),
            Some(Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 20).unwrap())
        );
    }
}
