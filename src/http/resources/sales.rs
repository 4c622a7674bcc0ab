//! `/api/v1/sales`: individual sales, the raw material of demand forecasts and of the
//! receivables side of working capital.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::fields::{Currency, Day, Money, Positive, Text};
use crate::http::resource::{Filter, Kind, Op, Resource, Sort};

crate::resource_fields! {
    row Sale, create NewSale, update SaleChanges;
    id: Uuid => read,
    company_id: Uuid => fixed,
    product_id: Uuid => optional,
    sale_date: Day => required,
    quantity: Positive => required,
    unit_price: Money => required,
    /// Default on create: quantity × unit_price (also when an update changes both).
    total_amount: Money => defaulted,
    /// Default USD.
    currency: Currency => defaulted,
    channel: Text<50> => optional,
    external_id: Text<255> => optional,
    customer_name: Text<255> => optional,
    customer_id: Text<255> => optional,
    /// The sale's line within its order; with sale_date, product, channel and customer it
    /// identifies a sale that has no external_id (imports match on it).
    order_line: Positive => optional,
    created_at: DateTime<Utc> => read,
    updated_at: DateTime<Utc> => read,
}

/// quantity × unit_price, as long as it fits `numeric(15,2)`.
fn priced_total(quantity: Positive, unit_price: Money) -> Result<Money, ApiError> {
    Decimal::from(quantity.0)
        .checked_mul(unit_price.0)
        .filter(|total| *total < Decimal::from(10_000_000_000_000_i64))
        .map(Money)
        .ok_or_else(|| {
            ApiError::rule(
                "total_amount",
                "total_amount: quantity × unit_price is too large",
            )
        })
}

pub struct Sales;

impl Resource for Sales {
    const NAME: &'static str = "sale";
    const PATH: &'static str = "sales";
    const TABLE: &'static str = "sales";
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

    fn prepare_create(new: &mut NewSale) -> Result<(), ApiError> {
        if new.total_amount.is_none() {
            new.total_amount = Some(priced_total(new.quantity, new.unit_price)?);
        }
        Ok(())
    }

    /// With only one of quantity and unit_price, the stored total is kept: an update sees
    /// only the fields it changes.
    fn prepare_update(changes: &mut SaleChanges) -> Result<(), ApiError> {
        if changes.total_amount.is_none()
            && let (Some(q), Some(p)) = (changes.quantity, changes.unit_price)
        {
            changes.total_amount = Some(priced_total(q, p)?);
        }
        Ok(())
    }
}
