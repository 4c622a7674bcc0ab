//! `/api/v1/sales`: individual sales, the raw material of demand forecasts and of the
//! receivables side of working capital.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::resource::{Bind, Filter, Kind, Op, Resource, Sort, nullable};
use crate::http::validate as v;

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Sale {
    pub id: Uuid,
    pub company_id: Uuid,
    /// Null when the product has since been deleted.
    pub product_id: Option<Uuid>,
    pub sale_date: NaiveDate,
    pub quantity: i32,
    /// Decimal string, e.g. "29.99".
    #[schema(value_type = String)]
    pub unit_price: Decimal,
    #[schema(value_type = String)]
    pub total_amount: Decimal,
    pub currency: String,
    pub channel: Option<String>,
    /// The sale's id in the system it came from.
    pub external_id: Option<String>,
    pub customer_name: Option<String>,
    pub customer_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSale {
    pub company_id: Uuid,
    pub product_id: Option<Uuid>,
    pub sale_date: NaiveDate,
    /// Greater than zero.
    pub quantity: i32,
    /// Decimal string, at least zero.
    #[schema(value_type = String)]
    pub unit_price: Decimal,
    /// Decimal string, at least zero; quantity × unit_price when absent.
    #[schema(value_type = Option<String>)]
    pub total_amount: Option<Decimal>,
    /// ISO 4217; default USD.
    pub currency: Option<String>,
    pub channel: Option<String>,
    pub external_id: Option<String>,
    pub customer_name: Option<String>,
    pub customer_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaleChanges {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub product_id: Option<Option<Uuid>>,
    pub sale_date: Option<NaiveDate>,
    pub quantity: Option<i32>,
    #[schema(value_type = Option<String>)]
    pub unit_price: Option<Decimal>,
    /// Recomputed as quantity × unit_price when absent and both of those are given.
    #[schema(value_type = Option<String>)]
    pub total_amount: Option<Decimal>,
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub channel: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub customer_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub customer_id: Option<Option<String>>,
}

/// A sale moves at least one unit; returns are not negative sales here.
fn positive_quantity(value: i32) -> Result<i32, ApiError> {
    if value > 0 {
        Ok(value)
    } else {
        Err(ApiError::validation(
            "quantity",
            "quantity must be greater than zero",
        ))
    }
}

/// The list-price total, checked like any amount the client could have sent.
fn priced_total(quantity: i32, unit_price: Decimal) -> Result<Decimal, ApiError> {
    let total = Decimal::from(quantity)
        .checked_mul(unit_price)
        .ok_or_else(|| ApiError::validation("total_amount", "total_amount is too large"))?;
    v::money("total_amount", total, true)
}

pub struct Sales;

impl Resource for Sales {
    const NAME: &'static str = "sale";
    const PATH: &'static str = "sales";
    const TABLE: &'static str = "sales";
    const COLUMNS: &'static str = "id, company_id, product_id, sale_date, quantity, unit_price, total_amount, \
         currency::text, channel::text, external_id::text, customer_name::text, customer_id::text, created_at, updated_at";
    const SORTS: &'static [Sort] = &[
        Sort {
            param: "sale_date",
            column: "sale_date",
            sql_type: "date",
        },
        Sort {
            param: "created_at",
            column: "created_at",
            sql_type: "timestamptz",
        },
        Sort {
            param: "total_amount",
            column: "total_amount",
            sql_type: "numeric",
        },
    ];
    const FILTERS: &'static [Filter] = &[
        Filter {
            param: "company_id",
            column: "company_id",
            op: Op::Eq,
            kind: Kind::Uuid,
        },
        Filter {
            param: "product_id",
            column: "product_id",
            op: Op::Eq,
            kind: Kind::Uuid,
        },
        Filter {
            param: "channel",
            column: "channel",
            op: Op::Eq,
            kind: Kind::Text,
        },
        Filter {
            param: "from",
            column: "sale_date",
            op: Op::Gte,
            kind: Kind::Date,
        },
        Filter {
            param: "to",
            column: "sale_date",
            op: Op::Lte,
            kind: Kind::Date,
        },
    ];

    type Row = Sale;
    type Create = NewSale;
    type Update = SaleChanges;

    fn create(s: NewSale) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let quantity = positive_quantity(s.quantity)?;
        let unit_price = v::money("unit_price", s.unit_price, true)?;
        let total_amount = match s.total_amount {
            Some(total) => v::money("total_amount", total, true)?,
            None => priced_total(quantity, unit_price)?,
        };
        let mut values = vec![
            ("company_id", Bind::Uuid(Some(s.company_id))),
            ("product_id", Bind::Uuid(s.product_id)),
            (
                "sale_date",
                Bind::Date(Some(v::date("sale_date", s.sale_date)?)),
            ),
            ("quantity", Bind::Int(Some(quantity))),
            ("unit_price", Bind::Decimal(Some(unit_price))),
            ("total_amount", Bind::Decimal(Some(total_amount))),
            (
                "channel",
                Bind::Text(v::optional_text("channel", s.channel, 50)?),
            ),
            (
                "external_id",
                Bind::Text(v::optional_text("external_id", s.external_id, 255)?),
            ),
            (
                "customer_name",
                Bind::Text(v::optional_text("customer_name", s.customer_name, 255)?),
            ),
            (
                "customer_id",
                Bind::Text(v::optional_text("customer_id", s.customer_id, 255)?),
            ),
        ];
        if let Some(currency) = v::currency("currency", s.currency)? {
            values.push(("currency", Bind::Text(Some(currency))));
        }
        Ok(values)
    }

    fn update(s: SaleChanges) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let mut values = Vec::new();
        if let Some(product_id) = s.product_id {
            values.push(("product_id", Bind::Uuid(product_id)));
        }
        if let Some(date) = s.sale_date {
            values.push(("sale_date", Bind::Date(Some(v::date("sale_date", date)?))));
        }
        let quantity = s.quantity.map(positive_quantity).transpose()?;
        let unit_price = v::optional_money("unit_price", s.unit_price, true)?;
        let total_amount = match (s.total_amount, quantity, unit_price) {
            (Some(total), _, _) => Some(v::money("total_amount", total, true)?),
            // Same rule as on create. With only one of the two, the stored total is kept:
            // the engine gives no access to the stored row to recompute it.
            (None, Some(q), Some(p)) => Some(priced_total(q, p)?),
            (None, _, _) => None,
        };
        if let Some(q) = quantity {
            values.push(("quantity", Bind::Int(Some(q))));
        }
        if let Some(p) = unit_price {
            values.push(("unit_price", Bind::Decimal(Some(p))));
        }
        if let Some(t) = total_amount {
            values.push(("total_amount", Bind::Decimal(Some(t))));
        }
        if let Some(currency) = s.currency {
            values.push((
                "currency",
                Bind::Text(v::currency("currency", Some(currency))?),
            ));
        }
        if let Some(channel) = s.channel {
            values.push((
                "channel",
                Bind::Text(v::optional_text("channel", channel, 50)?),
            ));
        }
        if let Some(x) = s.external_id {
            values.push((
                "external_id",
                Bind::Text(v::optional_text("external_id", x, 255)?),
            ));
        }
        if let Some(x) = s.customer_name {
            values.push((
                "customer_name",
                Bind::Text(v::optional_text("customer_name", x, 255)?),
            ));
        }
        if let Some(x) = s.customer_id {
            values.push((
                "customer_id",
                Bind::Text(v::optional_text("customer_id", x, 255)?),
            ));
        }
        Ok(values)
    }
}
