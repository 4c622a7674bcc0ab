//! `/api/v1/inventory`: stock of a product at one location. `quantity_available` and
//! `total_value` are computed by the database (generated columns): read-only here.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::resource::{Bind, Filter, Kind, Op, Resource, Sort, nullable};
use crate::http::validate as v;

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct InventoryRecord {
    pub id: Uuid,
    pub company_id: Uuid,
    pub product_id: Uuid,
    pub warehouse_location: Option<String>,
    pub quantity_on_hand: i32,
    pub quantity_reserved: i32,
    /// On hand minus reserved (computed).
    pub quantity_available: i32,
    #[schema(value_type = Option<String>)]
    pub unit_cost: Option<Decimal>,
    /// On hand × unit cost (computed); null without a unit cost.
    #[schema(value_type = Option<String>)]
    pub total_value: Option<Decimal>,
    pub last_counted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInventoryRecord {
    pub company_id: Uuid,
    pub product_id: Uuid,
    pub warehouse_location: Option<String>,
    /// At least zero.
    pub quantity_on_hand: i32,
    /// At least zero and at most `quantity_on_hand`; default 0.
    pub quantity_reserved: Option<i32>,
    /// Decimal string, at least zero.
    #[schema(value_type = Option<String>)]
    pub unit_cost: Option<Decimal>,
    pub last_counted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryChanges {
    pub product_id: Option<Uuid>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub warehouse_location: Option<Option<String>>,
    pub quantity_on_hand: Option<i32>,
    pub quantity_reserved: Option<i32>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub unit_cost: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub last_counted_at: Option<Option<DateTime<Utc>>>,
}

/// Stock cannot be reserved beyond what is on hand. Only checkable when both are known:
/// the table has no such CHECK and the engine does not show us the stored row on update.
fn reserved_within_on_hand(on_hand: i32, reserved: i32) -> Result<(), ApiError> {
    if reserved > on_hand {
        return Err(ApiError::validation(
            "quantity_reserved",
            "quantity_reserved must not exceed quantity_on_hand",
        ));
    }
    Ok(())
}

/// `total_value` is `numeric(15,2)` computed from these two; refusing here names a field,
/// where the database's overflow error would not.
fn total_value_fits(on_hand: i32, unit_cost: Option<Decimal>) -> Result<(), ApiError> {
    let Some(cost) = unit_cost else { return Ok(()) };
    // Integer × a 2-decimal amount keeps 2 decimals: only the magnitude can fail.
    let limit = Decimal::from(10_000_000_000_000_i64);
    if Decimal::from(on_hand)
        .checked_mul(cost)
        .is_some_and(|total| total < limit)
    {
        Ok(())
    } else {
        Err(ApiError::validation(
            "unit_cost",
            "quantity_on_hand × unit_cost is too large for total_value",
        ))
    }
}

fn last_counted_at(value: Option<DateTime<Utc>>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|at| v::date("last_counted_at", at.date_naive()).map(|_| at))
        .transpose()
}

pub struct Inventory;

impl Resource for Inventory {
    const NAME: &'static str = "inventory record";
    const PATH: &'static str = "inventory";
    const TABLE: &'static str = "inventory";
    const COLUMNS: &'static str = "id, company_id, product_id, warehouse_location::text, quantity_on_hand, \
         quantity_reserved, quantity_available, unit_cost, total_value, last_counted_at, created_at, updated_at";
    const SORTS: &'static [Sort] = &[
        Sort {
            param: "created_at",
            column: "created_at",
            sql_type: "timestamptz",
        },
        Sort {
            param: "quantity_on_hand",
            column: "quantity_on_hand",
            sql_type: "integer",
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
            param: "warehouse_location",
            column: "warehouse_location",
            op: Op::Eq,
            kind: Kind::Text,
        },
    ];

    type Row = InventoryRecord;
    type Create = NewInventoryRecord;
    type Update = InventoryChanges;

    fn create(i: NewInventoryRecord) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let on_hand =
            v::non_negative("quantity_on_hand", Some(i.quantity_on_hand))?.unwrap_or_default();
        let reserved = v::non_negative("quantity_reserved", i.quantity_reserved)?;
        reserved_within_on_hand(on_hand, reserved.unwrap_or_default())?;
        let unit_cost = v::optional_money("unit_cost", i.unit_cost, true)?;
        total_value_fits(on_hand, unit_cost)?;
        let mut values = vec![
            ("company_id", Bind::Uuid(Some(i.company_id))),
            ("product_id", Bind::Uuid(Some(i.product_id))),
            (
                "warehouse_location",
                Bind::Text(v::optional_text(
                    "warehouse_location",
                    i.warehouse_location,
                    100,
                )?),
            ),
            ("quantity_on_hand", Bind::Int(Some(on_hand))),
            ("unit_cost", Bind::Decimal(unit_cost)),
            (
                "last_counted_at",
                Bind::Time(last_counted_at(i.last_counted_at)?),
            ),
        ];
        if let Some(reserved) = reserved {
            values.push(("quantity_reserved", Bind::Int(Some(reserved))));
        }
        Ok(values)
    }

    fn update(i: InventoryChanges) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let mut values = Vec::new();
        if let Some(product_id) = i.product_id {
            values.push(("product_id", Bind::Uuid(Some(product_id))));
        }
        if let Some(location) = i.warehouse_location {
            values.push((
                "warehouse_location",
                Bind::Text(v::optional_text("warehouse_location", location, 100)?),
            ));
        }
        let on_hand = v::non_negative("quantity_on_hand", i.quantity_on_hand)?;
        let reserved = v::non_negative("quantity_reserved", i.quantity_reserved)?;
        if let (Some(on_hand), Some(reserved)) = (on_hand, reserved) {
            reserved_within_on_hand(on_hand, reserved)?;
        }
        let unit_cost = i
            .unit_cost
            .map(|cost| v::optional_money("unit_cost", cost, true))
            .transpose()?;
        if let (Some(on_hand), Some(cost)) = (on_hand, unit_cost) {
            total_value_fits(on_hand, cost)?;
        }
        if let Some(on_hand) = on_hand {
            values.push(("quantity_on_hand", Bind::Int(Some(on_hand))));
        }
        if let Some(reserved) = reserved {
            values.push(("quantity_reserved", Bind::Int(Some(reserved))));
        }
        if let Some(cost) = unit_cost {
            values.push(("unit_cost", Bind::Decimal(cost)));
        }
        if let Some(at) = i.last_counted_at {
            values.push(("last_counted_at", Bind::Time(last_counted_at(at)?)));
        }
        Ok(values)
    }
}
