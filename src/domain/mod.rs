//! The working-capital engine: what the product computes from a tenant's own rows.
//!
//! Plain functions over typed inputs (tested without a server), plus the sqlx queries that
//! load those inputs and store the results. The queries take a `&mut PgConnection` that is
//! already inside the tenant's transaction ([`crate::db::scope::begin`]): this room never
//! opens a transaction, picks a schema or checks a role — the HTTP layer above does. Money
//! stays [`rust_decimal::Decimal`] throughout.
//!
//! - [`working_capital`]: the metrics of one period (ratios, days outstanding, cash
//!   conversion cycle, runway) and the summary of a company's periods;
//! - [`cash_flow`]: the projected cash balance from forecast revenue and COGS;
//! - [`forecast`]: demand and revenue forecasts of a product's sales (augurs models,
//!   backtested);
//! - [`scenarios`]: what-if scenarios evaluated against a period's metrics.

pub mod cash_flow;
pub mod forecast;
pub mod scenarios;
pub mod working_capital;

/// Active ISO 4217 currency codes: the currencies an amount may be in.
pub const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];
