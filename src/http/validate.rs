//! Checks on request values, each failing with a 422 that names the field.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::error::ApiError;

/// Active ISO 4217 currency codes.
const ISO_4217: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL \
     BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD \
     FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS \
     KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK \
     MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD \
     SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX \
     USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG";

/// A required text: trimmed, non-empty, at most `max` characters, no control characters.
pub fn text(field: &str, value: String, max: usize) -> Result<String, ApiError> {
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(ApiError::validation(
            field,
            format!("{field} must not be empty"),
        ));
    }
    optional_text(field, Some(value), max).map(|v| v.unwrap_or_default())
}

/// An optional text with the same rules; an empty string counts as absent.
pub fn optional_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    let Some(value) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > max {
        return Err(ApiError::validation(
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::validation(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(Some(value))
}

/// An amount of money: at most 2 decimals and 13 integer digits (`numeric(15,2)`);
/// `non_negative` refuses amounts below zero.
pub fn money(field: &str, value: Decimal, non_negative: bool) -> Result<Decimal, ApiError> {
    if non_negative && value.is_sign_negative() && !value.is_zero() {
        return Err(ApiError::validation(
            field,
            format!("{field} must not be negative"),
        ));
    }
    let value = value.normalize();
    if value.scale() > 2 {
        return Err(ApiError::validation(
            field,
            format!("{field} must have at most 2 decimals"),
        ));
    }
    if value.abs() >= Decimal::from(10_000_000_000_000_i64) {
        return Err(ApiError::validation(field, format!("{field} is too large")));
    }
    Ok(value)
}

pub fn optional_money(
    field: &str,
    value: Option<Decimal>,
    non_negative: bool,
) -> Result<Option<Decimal>, ApiError> {
    value.map(|v| money(field, v, non_negative)).transpose()
}

/// A decimal with at most `scale` decimals and `precision` digits in all.
pub fn numeric(
    field: &str,
    value: Option<Decimal>,
    precision: u32,
    scale: u32,
) -> Result<Option<Decimal>, ApiError> {
    let Some(value) = value.map(|v| v.normalize()) else {
        return Ok(None);
    };
    let integer_digits = precision - scale;
    if value.scale() > scale || value.abs() >= Decimal::from(10_i64.pow(integer_digits)) {
        return Err(ApiError::validation(
            field,
            format!(
                "{field} must have at most {integer_digits} digits before and {scale} after the point"
            ),
        ));
    }
    Ok(Some(value))
}

pub fn non_negative(field: &str, value: Option<i32>) -> Result<Option<i32>, ApiError> {
    match value {
        Some(v) if v < 0 => Err(ApiError::validation(
            field,
            format!("{field} must not be negative"),
        )),
        other => Ok(other),
    }
}

/// An ISO 4217 code such as `USD`.
pub fn currency(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(code) if code.len() == 3 && ISO_4217.split_whitespace().any(|c| c == code) => {
            Ok(Some(code))
        }
        Some(_) => Err(ApiError::validation(
            field,
            format!("{field} must be an ISO 4217 currency code such as USD"),
        )),
        None => Ok(None),
    }
}

/// One of a fixed set of words.
pub fn one_of(
    field: &str,
    value: Option<String>,
    allowed: &[&str],
) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if allowed.contains(&v.as_str()) => Ok(Some(v)),
        Some(_) => Err(ApiError::validation(
            field,
            format!("{field} must be one of {}", allowed.join(", ")),
        )),
        None => Ok(None),
    }
}

/// A JSON object (not an array or a scalar).
pub fn object(
    field: &str,
    value: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>, ApiError> {
    match value {
        Some(v) if !v.is_object() => Err(ApiError::validation(
            field,
            format!("{field} must be a JSON object"),
        )),
        Some(v) => storable_json(field, &v).map(|()| Some(v)),
        None => Ok(None),
    }
}

/// JSON that PostgreSQL's `jsonb` can hold: no NUL character (`\u0000`) in any key or
/// string, at any depth.
pub fn storable_json(field: &str, value: &serde_json::Value) -> Result<(), ApiError> {
    let has_nul = |s: &str| s.contains('\0');
    let ok = match value {
        serde_json::Value::String(s) => !has_nul(s),
        serde_json::Value::Array(items) => {
            return items.iter().try_for_each(|v| storable_json(field, v));
        }
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                if has_nul(key) {
                    return Err(nul_in(field));
                }
                storable_json(field, v)?;
            }
            true
        }
        _ => true,
    };
    if ok { Ok(()) } else { Err(nul_in(field)) }
}

fn nul_in(field: &str) -> ApiError {
    ApiError::validation(
        field,
        format!("{field} must not contain the NUL character (\\u0000)"),
    )
}

/// A date within a sane range for business records (year 1900–2200).
pub fn date(field: &str, value: NaiveDate) -> Result<NaiveDate, ApiError> {
    let lo = NaiveDate::from_ymd_opt(1900, 1, 1);
    let hi = NaiveDate::from_ymd_opt(2200, 12, 31);
    if Some(value) < lo || Some(value) > hi {
        return Err(ApiError::validation(
            field,
            format!("{field} must be between 1900 and 2200"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn money_rules() {
        assert_eq!(
            money("m", Decimal::from_str("12.50").unwrap(), true)
                .unwrap()
                .to_string(),
            "12.5"
        );
        assert!(money("m", Decimal::from_str("-1").unwrap(), true).is_err());
        assert!(money("m", Decimal::from_str("-1").unwrap(), false).is_ok());
        assert!(money("m", Decimal::from_str("1.005").unwrap(), true).is_err());
        assert!(money("m", Decimal::from_str("10000000000000").unwrap(), true).is_err());
    }

    #[test]
    fn currency_and_text_rules() {
        assert!(currency("c", Some("EUR".into())).is_ok());
        assert!(currency("c", Some("eur".into())).is_err());
        assert!(currency("c", Some("XXX".into())).is_err());
        assert_eq!(text("n", "  a ".into(), 5).unwrap(), "a");
        assert!(text("n", "   ".into(), 5).is_err());
        assert!(text("n", "abcdef".into(), 5).is_err());
        assert!(text("n", "a\u{0}b".into(), 5).is_err());
        let e = text("name", "x".repeat(300), 255).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
    }
}
