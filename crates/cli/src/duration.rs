//! Durations as users type them (`--ttl 90d`, `--deadline 250ms`: [`parse_duration`], the value
//! parser of every duration flag) and as they read them (`3d 4h`, `12m`, `expired`:
//! [`human_duration_ms`], for expiry and ages in lists).

/// A value that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    #[error("'{0}' is not a duration (e.g. 12s, 250ms, 5m, 90d)")]
    NotADuration(String),
    #[error("unknown unit '{unit}' in '{input}' (use ms, s, m, h or d)")]
    UnknownUnit { unit: String, input: String },
    #[error("'{0}' must be a positive duration")]
    NotPositive(String),
}

/// Parses `12s`, `250ms`, `2m`, `1h`, `90d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, DurationError> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| DurationError::NotADuration(s.to_owned()))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1e3,
        "m" | "min" | "mins" => n * 60.0,
        "h" | "hour" | "hours" => n * 3600.0,
        "d" | "day" | "days" => n * 86400.0,
        other => return Err(DurationError::UnknownUnit { unit: other.to_owned(), input: s.to_owned() }),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(DurationError::NotPositive(s.to_owned()));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// "3d 4h", "12m", "expired".
pub fn human_duration_ms(ms: i128) -> String {
    if ms <= 0 {
        return "expired".into();
    }
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("12s"), Ok(Duration::from_secs(12)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86400)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration_ms(0), "expired");
        assert_eq!(human_duration_ms(59_000), "59s");
        assert_eq!(human_duration_ms(3_600_000 * 5 + 60_000 * 3), "5h 3m");
        assert_eq!(human_duration_ms(86_400_000 * 90), "90d 0h");
    }
}
