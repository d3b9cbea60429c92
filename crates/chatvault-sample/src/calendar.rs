//! Dates for file names (`IMG-20240101-WA0001.jpg`), without a date library.

/// Milliseconds in a day.
pub(crate) const DAY_MS: i64 = 86_400_000;
/// The first day of generated history: 2024-01-01T00:00:00Z, in Unix milliseconds.
pub(crate) const HISTORY_START_MS: i64 = 1_704_067_200_000;

/// `(year, month, day)` of a count of days since 1970-01-01 (H. Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYYMMDD` of a Unix-millisecond timestamp (UTC).
pub(crate) fn yyyymmdd(ts_ms: i64) -> String {
    let (y, m, d) = civil_from_days(ts_ms.div_euclid(DAY_MS));
    format!("{y:04}{m:02}{d:02}")
}

/// `YYYYWW` folder name WhatsApp uses for voice notes (week = day of year / 7 + 1).
pub(crate) fn yyyyww(ts_ms: i64) -> String {
    let days = ts_ms.div_euclid(DAY_MS);
    let (y, _, _) = civil_from_days(days);
    let mut jan1 = days - 366;
    while civil_from_days(jan1 + 1).0 < y {
        jan1 += 1;
    }
    // `jan1 + 1` is the first day of year `y`.
    let week = (days - (jan1 + 1)) / 7 + 1;
    format!("{y:04}{week:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_start_is_new_year_2024() {
        assert_eq!(yyyymmdd(HISTORY_START_MS), "20240101");
        assert_eq!(yyyyww(HISTORY_START_MS), "202401");
    }

    #[test]
    fn leap_day_and_year_end() {
        assert_eq!(yyyymmdd(HISTORY_START_MS + 59 * DAY_MS), "20240229");
        assert_eq!(yyyymmdd(HISTORY_START_MS + 366 * DAY_MS), "20250101");
        assert_eq!(yyyyww(HISTORY_START_MS + 366 * DAY_MS - 1), "202453");
        assert_eq!(yyyyww(HISTORY_START_MS + 14 * DAY_MS), "202403");
    }
}
