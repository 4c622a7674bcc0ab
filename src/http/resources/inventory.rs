//! `/api/v1/inventory`: stock of a product at one location. `quantity_available` and
//! `total_value` are computed by the database (generated columns): read-only here.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::fields::{Count, Instant, Money, Patch, Text};
use crate::http::resource::{Filter, Kind, Op, Resource, Sort};

crate::resource_fields! {
    row InventoryRecord, create NewInventoryRecord, update InventoryChanges;
    id: Uuid => read,
    company_id: Uuid => fixed,
    product_id: Uuid => required,
    warehouse_location: Text<100> => optional,
    quantity_on_hand: Count => required,
    /// At most quantity_on_hand. Default 0.
    quantity_reserved: Count => defaulted,
    /// quantity_on_hand − quantity_reserved.
    quantity_available: i32 => read,
    unit_cost: Money => optional,
    /// quantity_on_hand × unit_cost.
    total_value: Option<Decimal> => read,
    last_counted_at: Instant => optional,
    created_at: DateTime<Utc> => read,
    updated_at: DateTime<Utc> => read,
}

fn reserved_within_on_hand(on_hand: Count, reserved: Count) -> Result<(), ApiError> {
    if reserved > on_hand {
        return Err(ApiError::rule(
            "quantity_reserved",
            "quantity_reserved must not exceed quantity_on_hand",
        ));
    }
    Ok(())
}

fn total_value_fits(on_hand: Count, unit_cost: Option<Money>) -> Result<(), ApiError> {
    let Some(cost) = unit_cost else { return Ok(()) };
    // Integer × a 2-decimal amount keeps 2 decimals: only the magnitude can fail.
    let limit = Decimal::from(10_000_000_000_000_i64);
    if Decimal::from(on_hand.0)
        .checked_mul(cost.0)
        .is_some_and(|total| total < limit)
    {
        Ok(())
    } else {
        Err(ApiError::rule(
            "unit_cost",
            "quantity_on_hand × unit_cost is too large for total_value",
        ))
    }
}

pub struct Inventory;

impl Resource for Inventory {
    const NAME: &'static str = "inventory record";
    const PATH: &'static str = "inventory";
    const TABLE: &'static str = "inventory";
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

    fn prepare_create(new: &mut NewInventoryRecord) -> Result<(), ApiError> {
        reserved_within_on_hand(
            new.quantity_on_hand,
            new.quantity_reserved.unwrap_or(Count::ZERO),
        )?;
        total_value_fits(new.quantity_on_hand, new.unit_cost)
    }

    /// Rules between a changed and an unchanged field are the database's CHECKs.
    fn prepare_update(changes: &mut InventoryChanges) -> Result<(), ApiError> {
        if let (Some(on_hand), Some(reserved)) =
            (changes.quantity_on_hand, changes.quantity_reserved)
        {
            reserved_within_on_hand(on_hand, reserved)?;
        }
        if let (Some(on_hand), Patch::Value(cost)) = (changes.quantity_on_hand, &changes.unit_cost)
        {
            total_value_fits(on_hand, Some(*cost))?;
        }
        Ok(())
    }
}
