//! Times and durations as the transactional messages say them and the
//! command line shows them: "30 minutes", "2026-12-01 17:30 UTC".

use super::values::Micros;

/// A duration as people say it: "30 minutes", "1 hour", "90 seconds".
pub fn spoken_duration(micros: i64) -> String {
    let seconds = micros / 1_000_000;
    let (amount, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(size, _)| seconds >= *size && seconds % size == 0)
        .map(|(size, unit)| (seconds / size, unit))
        .unwrap_or((seconds, "second"));
    if amount == 1 {
        format!("1 {unit}")
    } else {
        format!("{amount} {unit}s")
    }
}

/// A time as "2026-12-01 17:30 UTC" (to the minute; seconds when not zero).
pub fn spoken_time(at: Micros) -> String {
    let (date, hour, minute, second) = civil_time(at);
    if second == 0 {
        format!("{date} {hour:02}:{minute:02} UTC")
    } else {
        format!("{date} {hour:02}:{minute:02}:{second:02} UTC")
    }
}

/// A time as "2026-12-01 17:30:00 UTC", always to the second (for tables,
/// where every row should line up).
pub fn exact_time(at: Micros) -> String {
    let (date, hour, minute, second) = civil_time(at);
    format!("{date} {hour:02}:{minute:02}:{second:02} UTC")
}

/// The UTC date ("2026-12-01") and time of day of `at`.
fn civil_time(at: Micros) -> (String, i64, i64, i64) {
    let seconds = at.0.div_euclid(1_000_000);
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
    )
}

/// Days since 1970-01-01 as a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_said_in_the_largest_whole_unit() {
        assert_eq!(spoken_duration(30 * 60 * 1_000_000), "30 minutes");
        assert_eq!(spoken_duration(3_600 * 1_000_000), "1 hour");
        assert_eq!(spoken_duration(90 * 1_000_000), "90 seconds");
        assert_eq!(spoken_duration(2 * 86_400 * 1_000_000), "2 days");
        assert_eq!(spoken_duration(1_000_000), "1 second");
    }

    #[test]
    fn times_are_said_in_utc() {
        assert_eq!(spoken_time(Micros(0)), "1970-01-01 00:00 UTC");
        // 2026-12-01 17:30:00 UTC
        assert_eq!(
            spoken_time(Micros(1_796_146_200_000_000)),
            "2026-12-01 17:30 UTC"
        );
        assert_eq!(
            spoken_time(Micros(951_782_401_000_000)),
            "2000-02-29 00:00:01 UTC"
        );
    }
}
