//! Points in time as Kubernetes and join tickets write them: RFC 3339 in
//! UTC with whole seconds (`2026-11-22T19:37:34Z`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::jiff::Timestamp;

/// `t` as RFC 3339 UTC with whole seconds (fractions dropped; before 1970
/// it is the epoch, beyond year 9999 jiff's maximum).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_second(secs)
        .unwrap_or(Timestamp::MAX)
        .to_string()
}

/// `t` as the timestamp type of Kubernetes objects (whole seconds).
pub fn timestamp(t: SystemTime) -> Timestamp {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_second(secs).unwrap_or(Timestamp::MAX)
}

/// Parses RFC 3339 with any offset (`2026-11-23T15:00:00Z`,
/// `2026-11-23T17:00:00+02:00`), to whole seconds; `None` when it is not
/// RFC 3339 or lies before 1970.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let ts: Timestamp = text.parse().ok()?;
    let secs = u64::try_from(ts.as_second()).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// `t` without its fraction of a second (tickets and Secrets carry whole
/// seconds).
pub fn whole_seconds(t: SystemTime) -> SystemTime {
    t.duration_since(UNIX_EPOCH)
        .map(|d| UNIX_EPOCH + Duration::from_secs(d.as_secs()))
        .unwrap_or(t)
}

/// A span in words for plans and messages: `42 s`, `12 min`, `3 h 5 min`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        _ if s % 3600 < 60 => format!("{} h", s / 3600),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_whole_seconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_376_254_500);
        assert_eq!(rfc3339(t), "2026-11-22T19:37:34Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn parses_offsets_and_refuses_junk() {
        let t = parse_rfc3339("2026-11-22T19:37:34Z").unwrap();
        assert_eq!(rfc3339(t), "2026-11-22T19:37:34Z");
        let t = parse_rfc3339("2026-11-22T21:37:34+02:00").unwrap();
        assert_eq!(rfc3339(t), "2026-11-22T19:37:34Z");
        for bad in ["", "2026-11-22", "yesterday", "1960-01-01T00:00:00Z"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn human_spans() {
        assert_eq!(human(Duration::from_secs(42)), "42 s");
        assert_eq!(human(Duration::from_secs(12 * 60 + 30)), "12 min");
        assert_eq!(human(Duration::from_secs(4 * 3600)), "4 h");
        assert_eq!(human(Duration::from_secs(3600)), "1 h");
        assert_eq!(human(Duration::from_secs(3599)), "59 min");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 5 * 60)), "3 h 5 min");
    }
}

/// Parses the time IMDS gives scheduled events (`NotBefore`):
/// `21 Jan 2019 09:00:43 GMT`, in UTC.
pub fn parse_imds_event_time(text: &str) -> Option<SystemTime> {
    let tm = k8s_openapi::jiff::fmt::strtime::parse("%d %b %Y %H:%M:%S GMT", text.trim()).ok()?;
    let dt = tm.to_datetime().ok()?;
    let ts = dt
        .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp();
    let secs = u64::try_from(ts.as_second()).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod imds_time_tests {
    use super::*;

    #[test]
    fn imds_event_times() {
        let t = parse_imds_event_time("21 Jan 2019 09:00:43 GMT").unwrap();
        assert_eq!(rfc3339(t), "2019-01-21T09:00:43Z");
        assert!(parse_imds_event_time("yesterday").is_none());
    }
}
