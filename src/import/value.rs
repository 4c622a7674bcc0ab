//! One cell of a file into one typed value: numbers as people and spreadsheets write them
//! (thousands separators, a decimal comma, currency symbols, `(12.50)` for negatives) and
//! dates in ISO, day-first and month-first forms. Each error is the reason a row is
//! rejected, so it says what would be accepted.

use std::str::FromStr as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone as _, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive as _;

/// How to read `03/04/2026`: `auto` reads it only when one part is above 12 (or both are
/// equal), and rejects it as ambiguous otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DateOrder {
    #[default]
    Auto,
    /// Only `YYYY-MM-DD` (and `YYYY/MM/DD`).
    Iso,
    /// `DD/MM/YYYY`, `DD.MM.YYYY`, `DD-MM-YYYY`.
    DayFirst,
    /// `MM/DD/YYYY`.
    MonthFirst,
}

impl DateOrder {
    pub const WORDS: [&'static str; 4] = ["auto", "iso", "day-first", "month-first"];

    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "auto" => Some(Self::Auto),
            "iso" => Some(Self::Iso),
            "day-first" => Some(Self::DayFirst),
            "month-first" => Some(Self::MonthFirst),
            _ => None,
        }
    }
}

/// The decimal mark of the file's numbers; the other of `.` and `,` may only group
/// thousands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DecimalSeparator {
    #[default]
    Point,
    Comma,
}

impl DecimalSeparator {
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "." => Some(Self::Point),
            "," => Some(Self::Comma),
            _ => None,
        }
    }

    fn chars(self) -> (char, char) {
        match self {
            Self::Point => ('.', ','),
            Self::Comma => (',', '.'),
        }
    }
}

const CURRENCY_SYMBOLS: &[char] = &['$', '€', '£', '¥', '₹', '₩', '₽', '₺', '₪', '₫', '₦'];

/// A decimal number as written in a file: `1,234.50`, `1.234,50` (with
/// [`DecimalSeparator::Comma`]), `$1,200`, `EUR 12.50`, `1 200`, `-3`, `(3.00)`.
pub fn parse_decimal(raw: &str, separator: DecimalSeparator) -> Result<Decimal, String> {
    let not_a_number = || format!("{raw:?} is not a number");
    let mut s: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\'' && *c != '’' && *c != '\u{a0}')
        .collect();
    let mut negative = false;
    if s.starts_with('(') && s.ends_with(')') && s.len() > 2 {
        negative = true;
        s = s[1..s.len() - 1].to_owned();
    }
    // A currency: a symbol or an ISO code before or after the amount.
    let s = s.trim_matches(|c| CURRENCY_SYMBOLS.contains(&c));
    let s = strip_code(s);
    let s = if let Some(rest) = s.strip_prefix('-') {
        negative = !negative;
        rest
    } else if let Some(rest) = s.strip_suffix('-') {
        negative = !negative;
        rest
    } else {
        s.strip_prefix('+').unwrap_or(s)
    };
    let s = s.trim_matches(|c| CURRENCY_SYMBOLS.contains(&c));
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
    {
        return Err(not_a_number());
    }
    let (mark, group) = separator.chars();
    let (whole, fraction) = match s.split_once(mark) {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    if fraction.is_some_and(|f| f.contains(mark) || f.contains(group) || f.is_empty()) {
        return Err(not_a_number());
    }
    if whole.contains(group) {
        let mut groups = whole.split(group);
        let first = groups.next().unwrap_or_default();
        let grouped = (1..=3).contains(&first.len()) && groups.all(|g| g.len() == 3);
        if !grouped {
            let hint = match separator {
                DecimalSeparator::Point => "state decimal_separator=, if it is the decimal mark",
                DecimalSeparator::Comma => "state decimal_separator=. if it is the decimal mark",
            };
            return Err(format!(
                "{raw:?}: {group:?} only groups thousands here; {hint}"
            ));
        }
    }
    let digits: String = whole.chars().filter(|c| *c != group).collect();
    if digits.is_empty() {
        return Err(not_a_number());
    }
    let text = match fraction {
        Some(f) => format!("{digits}.{f}"),
        None => digits,
    };
    let value = Decimal::from_str(&text).map_err(|_| not_a_number())?;
    Ok(if negative { -value } else { value })
}

/// `s` without a leading or trailing three-letter currency code.
fn strip_code(s: &str) -> &str {
    let is_code = |c: &str| c.len() == 3 && c.chars().all(|c| c.is_ascii_alphabetic());
    if s.len() > 3 && s.is_char_boundary(3) && is_code(&s[..3]) {
        return &s[3..];
    }
    if s.len() > 3 && s.is_char_boundary(s.len() - 3) && is_code(&s[s.len() - 3..]) {
        return &s[..s.len() - 3];
    }
    s
}

/// A whole number (`1,200`, `12.0`) of at least `min`.
pub fn parse_whole(raw: &str, separator: DecimalSeparator, min: i32) -> Result<i32, String> {
    let value = parse_decimal(raw, separator)?;
    if !value.fract().is_zero() {
        return Err(format!("{raw:?} is not a whole number"));
    }
    let value = value
        .to_i64()
        .and_then(|v| i32::try_from(v).ok())
        .ok_or_else(|| format!("{raw:?} is too large"))?;
    if value < min {
        return Err(format!("must be at least {min}"));
    }
    Ok(value)
}

fn in_range(date: NaiveDate) -> bool {
    NaiveDate::from_ymd_opt(1900, 1, 1).is_some_and(|lo| date >= lo)
        && NaiveDate::from_ymd_opt(2200, 12, 31).is_some_and(|hi| date <= hi)
}

/// A date: `2026-03-31`, `31/03/2026`, `03/31/2026`, `31.03.2026`; a time after the date
/// (`2026-03-31 00:00:00`, `2026-03-31T…`) is ignored.
pub fn parse_date(raw: &str, order: DateOrder) -> Result<NaiveDate, String> {
    let s = raw.trim();
    let s = s.split(['T', ' ']).next().unwrap_or(s);
    let parts: Vec<&str> = s.split(['-', '/', '.']).collect();
    let bad = || format!("{raw:?} is not a date (YYYY-MM-DD, DD/MM/YYYY or MM/DD/YYYY)");
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let n = |p: &str| p.parse::<u32>().unwrap_or(0);
    let (y, m, d) = if parts[0].len() == 4 {
        (n(parts[0]), n(parts[1]), n(parts[2]))
    } else if parts[2].len() == 4 {
        let (a, b) = (n(parts[0]), n(parts[1]));
        let day_first = match order {
            DateOrder::Iso => {
                return Err(format!("{raw:?} is not YYYY-MM-DD (date_format=iso)"));
            }
            DateOrder::DayFirst => true,
            DateOrder::MonthFirst => false,
            DateOrder::Auto if a > 12 || a == b => true,
            DateOrder::Auto if b > 12 => false,
            DateOrder::Auto => {
                return Err(format!(
                    "{raw:?} is ambiguous: state date_format=day-first or date_format=month-first"
                ));
            }
        };
        if day_first {
            (n(parts[2]), b, a)
        } else {
            (n(parts[2]), a, b)
        }
    } else {
        return Err(format!("{raw:?}: the year must have four digits"));
    };
    let date = i32::try_from(y)
        .ok()
        .and_then(|y| NaiveDate::from_ymd_opt(y, m, d))
        .ok_or_else(bad)?;
    if !in_range(date) {
        return Err("must be between 1900-01-01 and 2200-12-31".into());
    }
    Ok(date)
}

/// A point in time: RFC 3339, `YYYY-MM-DD HH:MM[:SS]` (UTC), or a date (its midnight UTC).
pub fn parse_instant(raw: &str, order: DateOrder) -> Result<DateTime<Utc>, String> {
    let s = raw.trim();
    let time = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .map(|t| Utc.from_utc_datetime(&t))
        });
    let time = match time {
        Some(t) => t,
        None => {
            let date = parse_date(s, order).map_err(|_| {
                format!("{raw:?} is not a time (RFC 3339, YYYY-MM-DD HH:MM:SS or a date)")
            })?;
            Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default())
        }
    };
    if !in_range(time.date_naive()) {
        return Err("must be between 1900 and 2200".into());
    }
    Ok(time)
}

/// `true`/`false`, `yes`/`no`, `y`/`n`, `1`/`0`, `active`/`inactive`.
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" | "active" | "t" => Ok(true),
        "false" | "no" | "n" | "0" | "inactive" | "f" => Ok(false),
        _ => Err(format!("{raw:?} is not true or false (yes/no, 1/0)")),
    }
}

/// Text of at most `max` characters with no control characters but tab and newline,
/// trimmed.
pub fn parse_text(raw: &str, max: usize) -> Result<String, String> {
    let s = raw.trim();
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("must not contain control characters".into());
    }
    let n = s.chars().count();
    if n > max {
        return Err(format!("must be at most {max} characters (it has {n})"));
    }
    Ok(s.to_owned())
}

/// The decimal fits `numeric(precision, scale)`: at most `scale` decimals and
/// `precision - scale` digits before the mark.
pub fn fits(value: Decimal, precision: u32, scale: u32) -> Result<Decimal, String> {
    let normal = value.normalize();
    if normal.scale() > scale {
        return Err(format!("must have at most {scale} decimals"));
    }
    let limit = Decimal::from(10_i64.pow(precision - scale));
    if normal.abs() >= limit {
        return Err(format!("must be below {limit} in magnitude"));
    }
    Ok(normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn numbers_as_people_write_them() {
        let p = DecimalSeparator::Point;
        let c = DecimalSeparator::Comma;
        for (raw, sep, want) in [
            ("1,234.50", p, "1234.50"),
            ("1234.5", p, "1234.5"),
            ("$1,200", p, "1200"),
            ("USD 12.50", p, "12.50"),
            ("12.50 EUR", p, "12.50"),
            ("€1.234,50", c, "1234.50"),
            ("1 234,5", c, "1234.5"),
            ("(3.00)", p, "-3.00"),
            ("-7", p, "-7"),
            ("1'000'000", p, "1000000"),
        ] {
            assert_eq!(parse_decimal(raw, sep), Ok(d(want)), "{raw}");
        }
        assert!(
            parse_decimal("12,5", p)
                .unwrap_err()
                .contains("decimal_separator")
        );
        assert!(parse_decimal("abc", p).is_err());
        assert!(parse_decimal("1.2.3", p).is_err());
        assert!(parse_decimal("", p).is_err());
        assert_eq!(parse_whole("1,200", p, 0), Ok(1200));
        assert_eq!(parse_whole("12.0", p, 0), Ok(12));
        assert!(parse_whole("12.5", p, 0).is_err());
        assert!(parse_whole("-1", p, 0).is_err());
        assert!(parse_whole("99999999999", p, 0).is_err());
    }

    #[test]
    fn dates_in_the_common_orders() {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(
            parse_date("2026-03-31", DateOrder::Auto),
            Ok(date(2026, 3, 31))
        );
        assert_eq!(
            parse_date("31/03/2026", DateOrder::Auto),
            Ok(date(2026, 3, 31))
        );
        assert_eq!(
            parse_date("03/31/2026", DateOrder::Auto),
            Ok(date(2026, 3, 31))
        );
        assert_eq!(
            parse_date("05.05.2026", DateOrder::Auto),
            Ok(date(2026, 5, 5))
        );
        assert_eq!(
            parse_date("2026-03-31 00:00:00", DateOrder::Auto),
            Ok(date(2026, 3, 31))
        );
        assert!(
            parse_date("03/04/2026", DateOrder::Auto)
                .unwrap_err()
                .contains("date_format")
        );
        assert_eq!(
            parse_date("03/04/2026", DateOrder::DayFirst),
            Ok(date(2026, 4, 3))
        );
        assert_eq!(
            parse_date("03/04/2026", DateOrder::MonthFirst),
            Ok(date(2026, 3, 4))
        );
        assert!(parse_date("31/03/2026", DateOrder::Iso).is_err());
        assert!(parse_date("2026-02-30", DateOrder::Auto).is_err());
        assert!(parse_date("1850-01-01", DateOrder::Auto).is_err());
        assert!(parse_date("31/03/26", DateOrder::Auto).is_err());
        assert!(parse_instant("2026-03-31T10:00:00Z", DateOrder::Auto).is_ok());
        assert!(parse_instant("2026-03-31 10:00", DateOrder::Auto).is_ok());
        assert!(parse_instant("31/03/2026", DateOrder::Auto).is_ok());
    }

    #[test]
    fn numeric_bounds() {
        assert!(fits(d("12.345"), 15, 2).is_err());
        assert!(fits(d("12.340"), 15, 2).is_ok());
        assert!(fits(d("10000000000000"), 15, 2).is_err());
        assert!(fits(d("9999999999999.99"), 15, 2).is_ok());
    }
}
