//! Weekly deploy windows in a time zone: is a deploy allowed now, and if not, when?
//! Pure arithmetic on instants; daylight-saving changes are handled by converting
//! each candidate boundary through the time zone.

use jiff::{
    Timestamp, ToSpan,
    civil::{DateTime, Weekday},
    tz::TimeZone,
};

use crate::api::environment::{DeployWindows, WeeklyRange};

const MINUTES_PER_WEEK: u32 = 7 * 24 * 60;

/// Deploy windows ready to be asked (the time zone is resolved once).
#[derive(Clone, Debug)]
pub struct Windows {
    tz: TimeZone,
    allow: Vec<Range>,
    deny: Vec<Range>,
}

/// A weekly range in minutes since Monday 00:00 local time; `from > to` wraps over Sunday.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    from: u32,
    to: u32,
}

impl Range {
    fn contains(self, minute: u32) -> bool {
        if self.from < self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

/// Whether a deploy may start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Inside the windows.
    Open,
    /// Outside; the windows open at this instant.
    OpensAt(Timestamp),
    /// The windows never open (every minute of the week is denied).
    Never,
}

/// Why windows cannot be built from a spec.
#[derive(Debug, thiserror::Error)]
pub enum WindowsError {
    /// The time zone is not in the time zone database.
    #[error("unknown time zone {name:?}")]
    TimeZone {
        /// The name given.
        name: String,
    },
    /// A range bound is not `Ddd HH:MM`.
    #[error("{value:?} is not a weekday and time such as \"Fri 16:00\"")]
    Bound {
        /// `allow[0].from`.
        field: String,
        /// The text given.
        value: String,
    },
}

impl WindowsError {
    /// The field of `spec.windows` at fault.
    #[must_use]
    pub fn field(&self) -> String {
        match self {
            Self::TimeZone { .. } => "timeZone".to_owned(),
            Self::Bound { field, .. } => field.clone(),
        }
    }
}

fn parse_bound(text: &str) -> Option<u32> {
    let (day, time) = text.split_once(' ')?;
    let day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        .iter()
        .position(|d| *d == day)?;
    let (h, m) = time.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 23 || m > 59 || time.len() != 5 {
        return None;
    }
    Some(u32::try_from(day).ok()? * 1440 + h * 60 + m)
}

fn parse_ranges(list: &str, ranges: &[WeeklyRange]) -> Result<Vec<Range>, WindowsError> {
    ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let bound = |name: &str, value: &str| {
                parse_bound(value).ok_or_else(|| WindowsError::Bound {
                    field: format!("{list}[{i}].{name}"),
                    value: value.to_owned(),
                })
            };
            Ok(Range {
                from: bound("from", &r.from)?,
                to: bound("to", &r.to)?,
            })
        })
        .collect()
}

impl Windows {
    /// Resolves the time zone and parses the ranges.
    pub fn new(spec: &DeployWindows) -> Result<Self, WindowsError> {
        let tz = TimeZone::get(&spec.time_zone).map_err(|_| WindowsError::TimeZone {
            name: spec.time_zone.clone(),
        })?;
        Ok(Self {
            tz,
            allow: parse_ranges("allow", &spec.allow)?,
            deny: parse_ranges("deny", &spec.deny)?,
        })
    }

    fn minute_of_week(&self, at: Timestamp) -> u32 {
        let local = at.to_zoned(self.tz.clone());
        let day = u32::try_from(local.weekday().to_monday_zero_offset()).unwrap_or(0);
        let hour = u32::try_from(local.hour()).unwrap_or(0);
        let minute = u32::try_from(local.minute()).unwrap_or(0);
        day * 1440 + hour * 60 + minute
    }

    /// Whether a deploy may start at `at`.
    #[must_use]
    pub fn allows(&self, at: Timestamp) -> bool {
        let m = self.minute_of_week(at);
        (self.allow.is_empty() || self.allow.iter().any(|r| r.contains(m)))
            && !self.deny.iter().any(|r| r.contains(m))
    }

    /// Whether a deploy may start at `now`, and if not, from when.
    #[must_use]
    pub fn gate(&self, now: Timestamp) -> Gate {
        if self.allows(now) {
            return Gate::Open;
        }
        let local_today = now.to_zoned(self.tz.clone()).date();
        let bounds: Vec<u32> = self
            .allow
            .iter()
            .chain(&self.deny)
            .flat_map(|r| [r.from, r.to])
            .collect();
        let mut candidates: Vec<Timestamp> = Vec::new();
        // Every boundary in the next 8 local days, converted through the time zone so that
        // a boundary inside a DST gap moves forward and one inside a fold takes the first.
        for offset in 0..=8_i64 {
            let Ok(date) = local_today.checked_add(offset.days()) else {
                continue;
            };
            let day = u32::try_from(date.weekday().to_monday_zero_offset()).unwrap_or(0);
            for &b in &bounds {
                if b / 1440 != day % 7 {
                    continue;
                }
                let (h, m) = ((b % 1440) / 60, b % 60);
                let Ok(h) = i8::try_from(h) else { continue };
                let Ok(m) = i8::try_from(m) else { continue };
                let civil = DateTime::from_parts(date, jiff::civil::time(h, m, 0, 0));
                if let Ok(zoned) = self.tz.to_ambiguous_zoned(civil).compatible() {
                    let t = zoned.timestamp();
                    if t > now {
                        candidates.push(t);
                    }
                }
            }
        }
        candidates.sort();
        candidates
            .into_iter()
            .find(|t| self.allows(*t))
            .map_or(Gate::Never, Gate::OpensAt)
    }
}

/// Monday-based weekday of a minute of the week (for messages and tests).
#[must_use]
pub fn weekday_of(minute: u32) -> Weekday {
    match (minute % MINUTES_PER_WEEK) / 1440 {
        0 => Weekday::Monday,
        1 => Weekday::Tuesday,
        2 => Weekday::Wednesday,
        3 => Weekday::Thursday,
        4 => Weekday::Friday,
        5 => Weekday::Saturday,
        _ => Weekday::Sunday,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(tz: &str, allow: &[(&str, &str)], deny: &[(&str, &str)]) -> Windows {
        let ranges = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(f, t)| WeeklyRange {
                    from: (*f).to_owned(),
                    to: (*t).to_owned(),
                })
                .collect()
        };
        Windows::new(&DeployWindows {
            time_zone: tz.to_owned(),
            allow: ranges(allow),
            deny: ranges(deny),
        })
        .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn weekend_freeze_in_brussels_winter_time() {
        let w = windows("Europe/Brussels", &[], &[("Fri 16:00", "Mon 08:00")]);
        // 2026-11-27 is a Friday; Brussels is UTC+1 in winter.
        assert_eq!(w.gate(ts("2026-11-27T14:59:00Z")), Gate::Open);
        assert_eq!(
            w.gate(ts("2026-11-27T15:00:00Z")),
            Gate::OpensAt(ts("2026-11-30T07:00:00Z"))
        );
        assert_eq!(
            w.gate(ts("2026-11-29T12:00:00Z")),
            Gate::OpensAt(ts("2026-11-30T07:00:00Z"))
        );
        assert_eq!(w.gate(ts("2026-11-30T07:00:00Z")), Gate::Open);
    }

    #[test]
    fn freeze_spanning_the_spring_forward_change() {
        // 2027-03-28: Brussels goes from UTC+1 to UTC+2 at 02:00 local.
        let w = windows("Europe/Brussels", &[], &[("Fri 16:00", "Mon 08:00")]);
        // Friday 2027-03-26 16:00 local is 15:00Z (still winter time).
        assert_eq!(
            w.gate(ts("2027-03-26T15:30:00Z")),
            Gate::OpensAt(ts("2027-03-29T06:00:00Z"))
        );
    }

    #[test]
    fn freeze_spanning_the_fall_back_change() {
        // 2026-10-25: Brussels goes from UTC+2 to UTC+1 at 03:00 local.
        let w = windows("Europe/Brussels", &[], &[("Fri 16:00", "Mon 08:00")]);
        // Friday 2026-10-23 16:00 local is 14:00Z (summer time); Monday 08:00 local is 07:00Z.
        assert_eq!(w.gate(ts("2026-10-23T13:59:00Z")), Gate::Open);
        assert_eq!(
            w.gate(ts("2026-10-23T14:00:00Z")),
            Gate::OpensAt(ts("2026-10-26T07:00:00Z"))
        );
    }

    #[test]
    fn a_boundary_inside_the_dst_gap_moves_forward() {
        // Deny Sunday 00:00–02:30 in Brussels; on 2027-03-28 02:30 does not exist.
        let w = windows("Europe/Brussels", &[], &[("Sun 00:00", "Sun 02:30")]);
        // Sunday 2027-03-28 00:30 local = 23:30Z Saturday.
        assert_eq!(
            w.gate(ts("2027-03-27T23:30:00Z")),
            Gate::OpensAt(ts("2027-03-28T01:30:00Z"))
        );
    }

    #[test]
    fn allow_ranges_restrict_and_deny_wins() {
        let w = windows(
            "UTC",
            &[("Tue 09:00", "Tue 17:00"), ("Thu 09:00", "Thu 17:00")],
            &[("Tue 12:00", "Tue 13:00")],
        );
        // 2026-11-24 is a Tuesday.
        assert_eq!(w.gate(ts("2026-11-24T10:00:00Z")), Gate::Open);
        assert_eq!(
            w.gate(ts("2026-11-24T12:30:00Z")),
            Gate::OpensAt(ts("2026-11-24T13:00:00Z"))
        );
        assert_eq!(
            w.gate(ts("2026-11-24T18:00:00Z")),
            Gate::OpensAt(ts("2026-11-26T09:00:00Z"))
        );
        assert_eq!(
            w.gate(ts("2026-11-23T08:00:00Z")),
            Gate::OpensAt(ts("2026-11-24T09:00:00Z"))
        );
    }

    #[test]
    fn other_time_zones() {
        // New York, Friday 2026-11-27 17:00 EST = 22:00Z; freeze Fri 16:00 -> Mon 08:00 (13:00Z).
        let w = windows("America/New_York", &[], &[("Fri 16:00", "Mon 08:00")]);
        assert_eq!(
            w.gate(ts("2026-11-27T22:00:00Z")),
            Gate::OpensAt(ts("2026-11-30T13:00:00Z"))
        );
        // Kathmandu is UTC+05:45: Mon 08:00 local is 02:15Z.
        let w = windows("Asia/Kathmandu", &[], &[("Fri 16:00", "Mon 08:00")]);
        assert_eq!(
            w.gate(ts("2026-11-28T00:00:00Z")),
            Gate::OpensAt(ts("2026-11-30T02:15:00Z"))
        );
    }

    #[test]
    fn a_window_that_never_opens() {
        let w = windows(
            "UTC",
            &[],
            &[("Mon 00:00", "Sun 23:59"), ("Sun 23:59", "Mon 00:00")],
        );
        assert_eq!(w.gate(ts("2026-11-24T10:00:00Z")), Gate::Never);
    }

    #[test]
    fn bad_specs_are_named() {
        let bad_tz = DeployWindows {
            time_zone: "Mars/Olympus".into(),
            allow: vec![],
            deny: vec![],
        };
        assert_eq!(Windows::new(&bad_tz).unwrap_err().field(), "timeZone");
        let bad_bound = DeployWindows {
            time_zone: "UTC".into(),
            allow: vec![],
            deny: vec![WeeklyRange {
                from: "Fri 16:00".into(),
                to: "Mon 8:00".into(),
            }],
        };
        let err = Windows::new(&bad_bound).unwrap_err();
        assert_eq!(err.field(), "deny[0].to");
        assert_eq!(weekday_of(4 * 1440 + 960), Weekday::Friday);
    }
}
