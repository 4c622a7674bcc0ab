//! Field types that carry their own rules: a value of one of these types has been parsed
//! and is valid ("parse, don't validate"), and its OpenAPI schema states the same rules
//! (`maxLength`, `pattern`, `minimum`, `enum` …), so the document and the server agree by
//! construction.
//!
//! Each type deserializes with serde's `try_from` from exactly what its schema allows and
//! nothing else (a number where the schema says string is refused, as is a string the
//! pattern refuses): the schemathesis run in CI checks both directions. The patterns use
//! `[0-9]` rather than `\d`, which also matches non-ASCII digits in some regex dialects.
//!
//! [`Field`] ties a type to its schema, to how it is bound as a SQL parameter and how its
//! column is read; the resource declarations (`resource_fields!`) build request and
//! response types from it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde::{Serialize, Serializer};
use sqlx::Postgres;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use utoipa::openapi::schema::{
    AnyOfBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{KnownFormat, RefOr};
use uuid::Uuid;

use super::resource::Bind;

/// A value of a column: its schema, its SQL parameter, and how its column is selected.
pub trait Field: Sized {
    /// The schema of a value (never null; [`Option`] adds that).
    fn schema() -> RefOr<Schema>;
    /// The value as a bind parameter; `None` binds SQL NULL of the column's type.
    fn bind(value: Option<Self>) -> Bind;
    /// Appended to the column in SELECT lists, for columns sqlx does not decode as the
    /// Rust type directly (`varchar` and `citext` as `text`).
    const CAST: &'static str = "";
}

impl<T: Field> Field for Option<T> {
    fn schema() -> RefOr<Schema> {
        nullable(T::schema())
    }
    fn bind(value: Option<Self>) -> Bind {
        T::bind(value.flatten())
    }
    const CAST: &'static str = T::CAST;
}

/// `schema` or null: `type: [t, "null"]` for an inline schema, `oneOf` for a reference.
pub fn nullable(schema: RefOr<Schema>) -> RefOr<Schema> {
    match schema {
        RefOr::T(Schema::Object(mut object)) => {
            object.schema_type = match object.schema_type {
                SchemaType::Type(Type::Null) => SchemaType::Type(Type::Null),
                SchemaType::Type(t) => SchemaType::from_iter([t, Type::Null]),
                SchemaType::Array(mut types) => {
                    if !types.contains(&Type::Null) {
                        types.push(Type::Null);
                    }
                    SchemaType::Array(types)
                }
                SchemaType::AnyValue => SchemaType::AnyValue,
            };
            // An enum must list null too, or null is still refused.
            if let Some(values) = object.enum_values.as_mut()
                && !values.contains(&serde_json::Value::Null)
            {
                values.push(serde_json::Value::Null);
            }
            RefOr::T(Schema::Object(object))
        }
        other => RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(other)
                .item(ObjectBuilder::new().schema_type(Type::Null))
                .build(),
        )),
    }
}

fn string_schema(
    pattern: Option<&str>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    description: &str,
) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(pattern)
        .min_length(min_length)
        .max_length(max_length)
        .description(Some(description))
}

/// Implements sqlx's `Type` and `Decode` for a newtype by its inner type (rows are read
/// through the field types; no check on the way out: the database holds what it holds).
macro_rules! decode_as {
    ($inner:ty => $outer:ty $(, $($generics:tt)*)?) => {
        impl$(<$($generics)*>)? sqlx::Type<Postgres> for $outer {
            fn type_info() -> PgTypeInfo {
                <$inner as sqlx::Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <$inner as sqlx::Type<Postgres>>::compatible(ty)
            }
        }
        impl<'r, $($($generics)*)?> sqlx::Decode<'r, Postgres> for $outer {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                <$inner as sqlx::Decode<'r, Postgres>>::decode(value).map(Self)
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// Text

/// Characters a text may not contain: control characters other than tab and newline
/// (what `char::is_control` calls control: C0, DEL and C1).
const CONTROL: &str = r"\u0000-\u0008\u000B-\u001F\u007F-\u009F";

/// A required text of at most `MAX` characters (counted before trimming, as `maxLength`
/// counts them), with at least one character that is not white space and no control
/// characters other than tab and newline. Stored trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

impl<const MAX: usize> TryFrom<String> for Text<MAX> {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if value.chars().count() > MAX {
            return Err(format!("must be at most {MAX} characters"));
        }
        if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err("must not contain control characters".into());
        }
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err("must not be empty or only white space".into());
        }
        Ok(Self(if trimmed.len() == value.len() {
            value
        } else {
            trimmed.to_owned()
        }))
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(de)?).map_err(serde::de::Error::custom)
    }
}

impl<const MAX: usize> Serialize for Text<MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

decode_as!(String => Text<MAX>, const MAX: usize);

impl<const MAX: usize> Field for Text<MAX> {
    fn schema() -> RefOr<Schema> {
        let pattern = format!("^[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*$");
        string_schema(
            Some(&pattern),
            Some(1),
            Some(MAX),
            "Text: not blank, no control characters but tab and newline; stored trimmed",
        )
        .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Text(value.map(|t| t.0))
    }
    const CAST: &'static str = "::text";
}

impl<const MAX: usize> fmt::Display for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------------------
// Decimals

/// Parses a decimal written exactly as `pattern` says: optional `-` (when `signed`), 1 to
/// `int` digits, optionally `.` and 1 to `frac` digits. Hand-written because
/// `Decimal::from_str` also takes `+`, `_` separators and exponents the schema refuses.
fn parse_decimal(raw: &str, signed: bool, int: u32, frac: u32) -> Result<Decimal, String> {
    let body = match raw.strip_prefix('-') {
        Some(rest) if signed => rest,
        Some(_) => return Err("must not be negative".into()),
        None => raw,
    };
    let (whole, fraction) = match body.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (body, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let shape = if signed { "-" } else { "" };
    let expected = || {
        format!(
            "must be a decimal string such as \"{shape}1234.5\": up to {int} digits before the point and {frac} after"
        )
    };
    if !digits(whole) || whole.len() > int as usize {
        return Err(expected());
    }
    if let Some(f) = fraction
        && (!digits(f) || f.len() > frac as usize)
    {
        return Err(expected());
    }
    Decimal::from_str(raw).map_err(|_| expected())
}

fn decimal_pattern(signed: bool, int: u32, frac: u32) -> String {
    let sign = if signed { "-?" } else { "" };
    if frac == 0 {
        format!("^{sign}[0-9]{{1,{int}}}$")
    } else {
        format!("^{sign}[0-9]{{1,{int}}}(\\.[0-9]{{1,{frac}}})?$")
    }
}

/// A decimal column `numeric(P, S)` as a JSON string: at most `P − S` digits before the
/// point and `S` after; negative values allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Numeric<const P: u32, const S: u32>(pub Decimal);

impl<const P: u32, const S: u32> TryFrom<String> for Numeric<P, S> {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        parse_decimal(&value, true, P - S, S).map(Self)
    }
}

impl<'de, const P: u32, const S: u32> Deserialize<'de> for Numeric<P, S> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(de)?).map_err(serde::de::Error::custom)
    }
}

impl<const P: u32, const S: u32> Serialize for Numeric<P, S> {
    fn serialize<S2: Serializer>(&self, s: S2) -> Result<S2::Ok, S2::Error> {
        s.collect_str(&self.0)
    }
}

decode_as!(Decimal => Numeric<P, S>, const P: u32, const S: u32);

impl<const P: u32, const S: u32> Field for Numeric<P, S> {
    fn schema() -> RefOr<Schema> {
        string_schema(
            Some(&decimal_pattern(true, P - S, S)),
            None,
            None,
            "Decimal string",
        )
        .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Decimal(value.map(|v| v.0))
    }
}

/// An amount of money that cannot be negative (prices, costs, balances): a JSON string
/// with at most 13 digits before the point and 2 after (`numeric(15,2)`), e.g. `"12.50"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money(pub Decimal);

impl TryFrom<String> for Money {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        parse_decimal(&value, false, 13, 2).map(Self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(de)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

decode_as!(Decimal => Money);

impl Field for Money {
    fn schema() -> RefOr<Schema> {
        string_schema(
            Some(&decimal_pattern(false, 13, 2)),
            None,
            None,
            "Amount of money as a decimal string, not negative, at most 2 decimals",
        )
        .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Decimal(value.map(|v| v.0))
    }
}

/// An amount of money that may be negative (forecast values, working capital): as
/// [`Money`] with an optional leading `-`.
pub type SignedMoney = Numeric<15, 2>;

/// A percentage from 0 to 100 with at most 2 decimals (`numeric(5,2)` with a range check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Percentage(pub Decimal);

impl TryFrom<String> for Percentage {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let v = parse_decimal(&value, false, 3, 2)
            .map_err(|_| "must be a decimal string from \"0\" to \"100\"".to_owned())?;
        if v > Decimal::ONE_HUNDRED {
            return Err("must be a decimal string from \"0\" to \"100\"".into());
        }
        Ok(Self(v))
    }
}

impl<'de> Deserialize<'de> for Percentage {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(de)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Percentage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

decode_as!(Decimal => Percentage);

impl Field for Percentage {
    fn schema() -> RefOr<Schema> {
        string_schema(
            Some(r"^(100(\.0{1,2})?|[0-9]{1,2}(\.[0-9]{1,2})?)$"),
            None,
            None,
            "Percentage from 0 to 100 as a decimal string, at most 2 decimals",
        )
        .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Decimal(value.map(|v| v.0))
    }
}

/// A decimal read from the database with no declared bounds (e.g. a generated column):
/// a decimal string.
impl Field for Decimal {
    fn schema() -> RefOr<Schema> {
        string_schema(Some(r"^-?[0-9]+(\.[0-9]+)?$"), None, None, "Decimal string").into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Decimal(value)
    }
}

// ---------------------------------------------------------------------------------------
// Integers

/// A whole number with bounds: `MIN..=MAX` (within `integer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Int<const MIN: i32, const MAX: i32>(pub i32);

/// A count or a number of days that cannot be negative.
pub type Count = Int<0, { i32::MAX }>;

impl Int<0, { i32::MAX }> {
    pub const ZERO: Self = Self(0);
}
/// A quantity that must be at least one.
pub type Positive = Int<1, { i32::MAX }>;

impl<const MIN: i32, const MAX: i32> TryFrom<i64> for Int<MIN, MAX> {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, String> {
        if (i64::from(MIN)..=i64::from(MAX)).contains(&value) {
            Ok(Self(value as i32))
        } else if MAX == i32::MAX {
            Err(format!("must be a whole number of at least {MIN}"))
        } else {
            Err(format!("must be a whole number from {MIN} to {MAX}"))
        }
    }
}

impl<'de, const MIN: i32, const MAX: i32> Deserialize<'de> for Int<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        /// JSON Schema's `integer` is a number without a fractional part, so `3.0` is one
        /// (and a generated client may send it); `3.5` is not.
        struct Whole;
        impl serde::de::Visitor<'_> for Whole {
            type Value = i64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
                Ok(v)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
                Ok(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(v as i64)
                } else {
                    Err(E::custom("must be a whole number"))
                }
            }
        }
        let whole = de.deserialize_any(Whole)?;
        Self::try_from(whole).map_err(serde::de::Error::custom)
    }
}

impl<const MIN: i32, const MAX: i32> Serialize for Int<MIN, MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(self.0)
    }
}

decode_as!(i32 => Int<MIN, MAX>, const MIN: i32, const MAX: i32);

impl<const MIN: i32, const MAX: i32> Field for Int<MIN, MAX> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(MIN))
            .maximum(Some(MAX))
            .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Int(value.map(|v| v.0))
    }
}

impl Field for i32 {
    fn schema() -> RefOr<Schema> {
        Int::<{ i32::MIN }, { i32::MAX }>::schema()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Int(value)
    }
}

// ---------------------------------------------------------------------------------------
// Dates and times

/// A business date, 1900-01-01 to 2200-12-31 (ISO 8601, `YYYY-MM-DD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day(pub NaiveDate);

/// [`Day`]'s pattern in the OpenAPI document. Months and days are spelled out (not `[0-9]{2}`)
/// because generated clients and fuzzers draw dates from the pattern and then drop those the
/// `date` format refuses: with `[0-9]{2}` about 96 % were dropped and schemathesis gave up on the
/// operation ("too many generated examples are filtered out"). Request types whose date field
/// carries a `#[schema(pattern = …)]` literal must repeat this string (utoipa takes a literal
/// only); a unit test in `http::openapi` holds every `format: date` to it.
const YEAR_PATTERN: &str = "(19[0-9]{2}|2[01][0-9]{2}|2200)";

pub const DATE_PATTERN: &str =
    "^(19[0-9]{2}|2[01][0-9]{2}|2200)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$";

/// Whether `date` is a business date ([`Day`]'s range): dates the service computes (e.g. a
/// forecast's periods) must stay in it too, or the responses would break their schema.
pub fn in_business_range(date: NaiveDate) -> bool {
    NaiveDate::from_ymd_opt(1900, 1, 1).is_some_and(|lo| date >= lo)
        && NaiveDate::from_ymd_opt(2200, 12, 31).is_some_and(|hi| date <= hi)
}

impl TryFrom<String> for Day {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let date = NaiveDate::parse_from_str(&value, "%Y-%m-%d")
            .ok()
            .filter(|_| value.len() == 10)
            .ok_or("must be a date, YYYY-MM-DD")?;
        if !in_business_range(date) {
            return Err("must be between 1900-01-01 and 2200-12-31".into());
        }
        Ok(Self(date))
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(de)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

decode_as!(NaiveDate => Day);

impl Field for Day {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
            .pattern(Some(DATE_PATTERN))
            .description(Some("Date (YYYY-MM-DD), 1900 to 2200"))
            .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Date(value.map(|d| d.0))
    }
}

/// An instant given by a client (RFC 3339 with `Z` or an offset), 1900 to 2200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instant(pub DateTime<Utc>);

impl TryFrom<String> for Instant {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let at = DateTime::parse_from_rfc3339(&value)
            .map_err(|_| "must be an RFC 3339 time such as 2026-01-31T12:00:00Z")?
            .with_timezone(&Utc);
        if !in_business_range(at.date_naive()) {
            return Err("must be between 1900 and 2200".into());
        }
        Ok(Self(at))
    }
}

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(de)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Instant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

decode_as!(DateTime<Utc> => Instant);

impl Field for Instant {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .pattern(Some(format!("^{YEAR_PATTERN}-")))
            .description(Some("RFC 3339 time, 1900 to 2200"))
            .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Time(value.map(|t| t.0))
    }
}

/// Times the server sets (`created_at`, `updated_at`).
impl Field for DateTime<Utc> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Time(value)
    }
}

impl Field for NaiveDate {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
            .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Date(value)
    }
}

// ---------------------------------------------------------------------------------------
// Identifiers, flags, words

impl Field for Uuid {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Uuid(value)
    }
}

/// Text the server writes (read-only columns).
impl Field for String {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::String).into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Text(value)
    }
    const CAST: &'static str = "::text";
}

impl Field for bool {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::Boolean).into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Bool(value)
    }
}

/// Active ISO 4217 currency codes (kept in the domain, where imports read them too).
pub use crate::domain::ISO_4217;

/// An ISO 4217 currency code such as `USD`. Rows written before this rule may hold other
/// three-letter codes; they are read as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency(String);

impl Currency {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if ISO_4217.contains(&value.as_str()) {
            Ok(Self(value))
        } else {
            Err("must be an ISO 4217 currency code such as USD".into())
        }
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(de)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

decode_as!(String => Currency);

impl Field for Currency {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ISO_4217.iter().copied()))
            .description(Some("ISO 4217 currency code"))
            .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Text(value.map(|c| c.0))
    }
    const CAST: &'static str = "::text";
}

/// Declares a closed set of words stored as text (`forecast_type`, `period_type` …):
/// the enum, its serde form, its schema (`enum`) and its [`Field`].
#[macro_export]
macro_rules! words {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $(#[serde(rename = $word)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($word),+];
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $word),+ }
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                match <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)? {
                    $($word => Ok(Self::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name)).into()),
                }
            }
        }

        impl $crate::http::fields::Field for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some(Self::ALL.iter().copied()))
                    .into()
            }
            fn bind(value: Option<Self>) -> $crate::http::resource::Bind {
                $crate::http::resource::Bind::Text(value.map(|v| v.as_str().to_owned()))
            }
            const CAST: &'static str = "::text";
        }
    };
}

// ---------------------------------------------------------------------------------------
// JSON documents

/// How deep a stored JSON document may nest (objects and arrays).
pub const MAX_JSON_DEPTH: usize = 16;

/// A JSON object stored in a `jsonb` column, at most `MAX_BYTES` bytes as compact JSON and
/// [`MAX_JSON_DEPTH`] levels deep, with no NUL character (`\u0000`, which `jsonb` cannot
/// hold) in any key or string. The caps keep a row's size, and so a page's memory, bounded
/// (docs/api.md, "Limits").
///
/// A request's document is parsed and checked; a stored one is passed to the response as
/// the text PostgreSQL gives, unparsed: `jsonb` keeps numbers exactly (`1e308` comes back
/// as 309 digits), which a round trip through `f64` could not.
#[derive(Debug, Clone)]
pub struct JsonObject<const MAX_BYTES: usize>(JsonRepr);

#[derive(Debug, Clone)]
enum JsonRepr {
    Parsed(serde_json::Map<String, serde_json::Value>),
    Stored(Box<serde_json::value::RawValue>),
}

impl<const MAX_BYTES: usize> Default for JsonObject<MAX_BYTES> {
    fn default() -> Self {
        Self(JsonRepr::Parsed(serde_json::Map::new()))
    }
}

impl<const MAX_BYTES: usize> JsonObject<MAX_BYTES> {
    /// The document as a value (a stored one is parsed).
    pub fn into_value(self) -> serde_json::Value {
        match self.0 {
            JsonRepr::Parsed(map) => serde_json::Value::Object(map),
            JsonRepr::Stored(raw) => serde_json::from_str(raw.get()).unwrap_or_default(),
        }
    }
}

/// Depth of `value` (a scalar is 0), stopping as soon as `limit` is passed.
fn depth_exceeds(value: &serde_json::Value, limit: usize) -> bool {
    fn walk(v: &serde_json::Value, level: usize, limit: usize) -> bool {
        match v {
            serde_json::Value::Array(items) => {
                level + 1 > limit || items.iter().any(|i| walk(i, level + 1, limit))
            }
            serde_json::Value::Object(map) => {
                level + 1 > limit || map.values().any(|i| walk(i, level + 1, limit))
            }
            _ => false,
        }
    }
    walk(value, 0, limit)
}

fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Checks a document against the caps of [`JsonObject`]; the error says which was passed.
pub fn check_json(value: &serde_json::Value, max_bytes: usize) -> Result<(), String> {
    if depth_exceeds(value, MAX_JSON_DEPTH) {
        return Err(format!("must not nest deeper than {MAX_JSON_DEPTH} levels"));
    }
    if has_nul(value) {
        return Err("must not contain the NUL character (\\u0000)".into());
    }
    let size = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > max_bytes {
        return Err(format!(
            "must be at most {max_bytes} bytes as compact JSON (is {size})"
        ));
    }
    Ok(())
}

impl<const MAX_BYTES: usize> TryFrom<serde_json::Value> for JsonObject<MAX_BYTES> {
    type Error = String;
    fn try_from(value: serde_json::Value) -> Result<Self, String> {
        check_json(&value, MAX_BYTES)?;
        match value {
            serde_json::Value::Object(map) => Ok(Self(JsonRepr::Parsed(map))),
            _ => Err("must be a JSON object".into()),
        }
    }
}

impl<'de, const MAX_BYTES: usize> Deserialize<'de> for JsonObject<MAX_BYTES> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Self::try_from(serde_json::Value::deserialize(de)?).map_err(serde::de::Error::custom)
    }
}

impl<const MAX_BYTES: usize> Serialize for JsonObject<MAX_BYTES> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            JsonRepr::Parsed(map) => map.serialize(s),
            JsonRepr::Stored(raw) => raw.serialize(s),
        }
    }
}

impl<const MAX_BYTES: usize> sqlx::Type<Postgres> for JsonObject<MAX_BYTES> {
    fn type_info() -> PgTypeInfo {
        <serde_json::Value as sqlx::Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <serde_json::Value as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r, const MAX_BYTES: usize> sqlx::Decode<'r, Postgres> for JsonObject<MAX_BYTES> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let raw = <sqlx::types::Json<Box<serde_json::value::RawValue>> as sqlx::Decode<
            'r,
            Postgres,
        >>::decode(value)?
        .0;
        Ok(Self(JsonRepr::Stored(raw)))
    }
}

impl<const MAX_BYTES: usize> Field for JsonObject<MAX_BYTES> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(format!(
                "JSON object, at most {MAX_BYTES} bytes as compact JSON and {MAX_JSON_DEPTH} levels deep; no \\u0000"
            )))
            .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Json(value.map(Self::into_value))
    }
}

// ---------------------------------------------------------------------------------------
// Optional fields of requests

/// A field of a partial update: absent (leave it), `null` (clear it) or a value. Needs
/// `#[serde(default)]` on the field, so that absence is [`Patch::Absent`].
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<T> Patch<T> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }
    /// `None` when absent, `Some(None)` for null.
    pub fn into_change(self) -> Option<Option<T>> {
        match self {
            Self::Absent => None,
            Self::Null => Some(None),
            Self::Value(v) => Some(Some(v)),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(de)? {
            Some(v) => Self::Value(v),
            None => Self::Null,
        })
    }
}

/// Deserializes a field that may be absent but, when given, must not be `null` (a column
/// with a default on create, a NOT NULL column in an update).
pub fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(de).map(Some)
}

/// Parses `T` from a query-string or path value with `T`'s own rules.
pub fn parse_text<T: DeserializeOwned>(raw: &str) -> Result<T, String> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(raw))
        .map_err(|e| e.to_string())
}

/// `anyOf` of schemas (used for query parameters that take a date or a time).
pub fn any_of(schemas: impl IntoIterator<Item = RefOr<Schema>>) -> RefOr<Schema> {
    let mut b = AnyOfBuilder::new();
    for s in schemas {
        b = b.item(s);
    }
    RefOr::T(Schema::AnyOf(b.build()))
}

/// A schema's name in the document for a generic field type.
pub fn name_of<T>() -> Cow<'static, str> {
    let full = std::any::type_name::<T>();
    Cow::Owned(full.rsplit("::").next().unwrap_or(full).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn de<T: DeserializeOwned>(json: &str) -> Result<T, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    /// The server's rule and the schema's pattern say the same (checked with the `regex`
    /// semantics of the pattern: anchored, ASCII digits).
    #[test]
    fn money_takes_exactly_what_its_pattern_says() {
        for ok in ["0", "12", "12.5", "12.50", "0012.5", "9999999999999.99"] {
            assert!(de::<Money>(&format!("\"{ok}\"")).is_ok(), "{ok}");
        }
        for bad in [
            "-1",
            "+1",
            "1.",
            ".5",
            "1.005",
            "1e3",
            " 1",
            "1 ",
            "10000000000000",
            "1_000",
            "١",
            "",
        ] {
            assert!(de::<Money>(&format!("\"{bad}\"")).is_err(), "{bad:?}");
        }
        assert!(de::<Money>("12.5").is_err(), "a JSON number is refused");
        assert_eq!(
            de::<Money>("\"12.50\"").unwrap().0,
            Decimal::from_str("12.50").unwrap()
        );
        assert!(de::<SignedMoney>("\"-12.5\"").is_ok());
        assert!(de::<Numeric<10, 4>>("\"123456.1234\"").is_ok());
        assert!(de::<Numeric<10, 4>>("\"1234567.1\"").is_err());
        assert!(de::<Percentage>("\"100\"").is_ok());
        assert!(de::<Percentage>("\"100.01\"").is_err());
        assert!(de::<Percentage>("\"99.99\"").is_ok());
    }

    #[test]
    fn text_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(de::<Text<5>>("\"  a \"").unwrap().as_str(), "a");
        assert!(de::<Text<5>>("\"   \"").is_err());
        assert!(de::<Text<5>>("\"\"").is_err());
        assert!(de::<Text<5>>("\"abcdef\"").is_err());
        assert!(de::<Text<5>>("\"a\\u0000b\"").is_err());
        assert!(de::<Text<5>>("\"a\\tb\"").is_ok());
        assert!(
            de::<Text<3>>("\" ab \"").is_err(),
            "counted before trimming"
        );
        assert!(de::<Text<5>>("5").is_err());
    }

    #[test]
    fn integers_dates_and_currencies_keep_their_bounds() {
        assert!(de::<Count>("0").is_ok());
        assert!(de::<Count>("-1").is_err());
        assert!(de::<Count>("2147483648").is_err());
        assert!(de::<Positive>("0").is_err());
        assert_eq!(
            de::<Count>("3.0").unwrap().0,
            3,
            "an integer in JSON Schema's sense"
        );
        assert!(de::<Count>("3.5").is_err());
        assert!(de::<Count>("\"3\"").is_err());
        assert!(de::<Day>("\"2026-02-28\"").is_ok());
        assert!(de::<Day>("\"2026-02-30\"").is_err());
        assert!(de::<Day>("\"1899-12-31\"").is_err());
        assert!(de::<Day>("\"2026-2-3\"").is_err());
        assert!(de::<Instant>("\"2026-01-31T12:00:00Z\"").is_ok());
        assert!(de::<Instant>("\"2026-01-31T12:00:00+02:00\"").is_ok());
        assert!(de::<Instant>("\"3026-01-31T12:00:00Z\"").is_err());
        assert!(de::<Currency>("\"EUR\"").is_ok());
        assert!(de::<Currency>("\"eur\"").is_err());
        assert!(de::<Currency>("\"XXX\"").is_err());
    }

    #[test]
    fn json_objects_are_capped_in_size_and_depth() {
        assert!(de::<JsonObject<100>>("{\"a\": [1, 2]}").is_ok());
        assert!(de::<JsonObject<100>>("[1]").is_err());
        let big = format!("{{\"a\": \"{}\"}}", "x".repeat(200));
        assert!(
            de::<JsonObject<100>>(&big)
                .unwrap_err()
                .contains("at most 100 bytes")
        );
        let deep = format!(
            "{}{}",
            "{\"a\":".repeat(20),
            "1".to_owned() + &"}".repeat(20)
        );
        assert!(de::<JsonObject<10000>>(&deep).unwrap_err().contains("nest"));
        assert!(de::<JsonObject<100>>("{\"a\": \"x\\u0000\"}").is_err());
        let at_limit = format!(
            "{}{}",
            "{\"a\":".repeat(MAX_JSON_DEPTH),
            "1".to_owned() + &"}".repeat(MAX_JSON_DEPTH)
        );
        assert!(de::<JsonObject<10000>>(&at_limit).is_ok());
    }

    #[test]
    fn a_patch_tells_absent_from_null() {
        #[derive(serde::Deserialize)]
        struct Changes {
            #[serde(default)]
            note: Patch<Text<10>>,
        }
        assert!(de::<Changes>("{}").unwrap().note.is_absent());
        assert_eq!(de::<Changes>("{\"note\": null}").unwrap().note, Patch::Null);
        assert!(matches!(
            de::<Changes>("{\"note\": \"x\"}").unwrap().note,
            Patch::Value(_)
        ));
    }

    #[test]
    fn nullable_schemas_admit_null() {
        let s = serde_json::to_value(Option::<Money>::schema()).unwrap();
        assert_eq!(s["type"], serde_json::json!(["string", "null"]));
        let s = serde_json::to_value(Option::<Currency>::schema()).unwrap();
        assert!(
            s["enum"]
                .as_array()
                .unwrap()
                .contains(&serde_json::Value::Null)
        );
    }
}
