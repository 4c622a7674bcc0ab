//! `/api/v1/products`: what a manufacturer sells, with costs, prices and reorder rules.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::resource::{Bind, Filter, Kind, Op, Resource, Sort, nullable};
use crate::http::validate as v;

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Product {
    pub id: Uuid,
    pub company_id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    /// Decimal string, e.g. "12.50".
    #[schema(value_type = Option<String>)]
    pub unit_cost: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub unit_price: Option<Decimal>,
    pub currency: String,
    pub reorder_point: Option<i32>,
    pub reorder_quantity: Option<i32>,
    pub lead_time_days: Option<i32>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    pub company_id: Uuid,
    /// Unique within the tenant.
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    #[schema(value_type = Option<String>)]
    pub unit_cost: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub unit_price: Option<Decimal>,
    pub currency: Option<String>,
    pub reorder_point: Option<i32>,
    pub reorder_quantity: Option<i32>,
    pub lead_time_days: Option<i32>,
    pub is_active: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductChanges {
    pub sku: Option<String>,
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub category: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub unit_cost: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub unit_price: Option<Option<Decimal>>,
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub reorder_point: Option<Option<i32>>,
    #[serde(default, deserialize_with = "nullable")]
    pub reorder_quantity: Option<Option<i32>>,
    #[serde(default, deserialize_with = "nullable")]
    pub lead_time_days: Option<Option<i32>>,
    pub is_active: Option<bool>,
}

pub struct Products;

impl Resource for Products {
    const NAME: &'static str = "product";
    const PATH: &'static str = "products";
    const TABLE: &'static str = "products";
    const COLUMNS: &'static str = "id, company_id, sku::text, name::text, description, category::text, unit_cost, \
         unit_price, currency::text, reorder_point, reorder_quantity, lead_time_days, is_active, created_at, updated_at";
    const SORTS: &'static [Sort] = &[
        Sort {
            param: "name",
            column: "name",
            sql_type: "text",
        },
        Sort {
            param: "sku",
            column: "sku",
            sql_type: "text",
        },
        Sort {
            param: "created_at",
            column: "created_at",
            sql_type: "timestamptz",
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
            param: "active",
            column: "is_active",
            op: Op::Eq,
            kind: Kind::Bool,
        },
        Filter {
            param: "category",
            column: "category",
            op: Op::Eq,
            kind: Kind::Text,
        },
        Filter {
            param: "sku",
            column: "sku",
            op: Op::Eq,
            kind: Kind::Text,
        },
    ];

    type Row = Product;
    type Create = NewProduct;
    type Update = ProductChanges;

    fn create(p: NewProduct) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let mut values = vec![
            ("company_id", Bind::Uuid(Some(p.company_id))),
            ("sku", Bind::Text(Some(v::text("sku", p.sku, 100)?))),
            ("name", Bind::Text(Some(v::text("name", p.name, 255)?))),
            (
                "description",
                Bind::Text(v::optional_text("description", p.description, 10_000)?),
            ),
            (
                "category",
                Bind::Text(v::optional_text("category", p.category, 100)?),
            ),
            (
                "unit_cost",
                Bind::Decimal(v::optional_money("unit_cost", p.unit_cost, true)?),
            ),
            (
                "unit_price",
                Bind::Decimal(v::optional_money("unit_price", p.unit_price, true)?),
            ),
            (
                "reorder_point",
                Bind::Int(v::non_negative("reorder_point", p.reorder_point)?),
            ),
            (
                "reorder_quantity",
                Bind::Int(v::non_negative("reorder_quantity", p.reorder_quantity)?),
            ),
            (
                "lead_time_days",
                Bind::Int(v::non_negative("lead_time_days", p.lead_time_days)?),
            ),
        ];
        if let Some(currency) = v::currency("currency", p.currency)? {
            values.push(("currency", Bind::Text(Some(currency))));
        }
        if let Some(active) = p.is_active {
            values.push(("is_active", Bind::Bool(Some(active))));
        }
        Ok(values)
    }

    fn update(p: ProductChanges) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let mut values = Vec::new();
        if let Some(sku) = p.sku {
            values.push(("sku", Bind::Text(Some(v::text("sku", sku, 100)?))));
        }
        if let Some(name) = p.name {
            values.push(("name", Bind::Text(Some(v::text("name", name, 255)?))));
        }
        if let Some(description) = p.description {
            values.push((
                "description",
                Bind::Text(v::optional_text("description", description, 10_000)?),
            ));
        }
        if let Some(category) = p.category {
            values.push((
                "category",
                Bind::Text(v::optional_text("category", category, 100)?),
            ));
        }
        if let Some(cost) = p.unit_cost {
            values.push((
                "unit_cost",
                Bind::Decimal(v::optional_money("unit_cost", cost, true)?),
            ));
        }
        if let Some(price) = p.unit_price {
            values.push((
                "unit_price",
                Bind::Decimal(v::optional_money("unit_price", price, true)?),
            ));
        }
        if let Some(currency) = p.currency {
            values.push((
                "currency",
                Bind::Text(v::currency("currency", Some(currency))?),
            ));
        }
        if let Some(x) = p.reorder_point {
            values.push((
                "reorder_point",
                Bind::Int(v::non_negative("reorder_point", x)?),
            ));
        }
        if let Some(x) = p.reorder_quantity {
            values.push((
                "reorder_quantity",
                Bind::Int(v::non_negative("reorder_quantity", x)?),
            ));
        }
        if let Some(x) = p.lead_time_days {
            values.push((
                "lead_time_days",
                Bind::Int(v::non_negative("lead_time_days", x)?),
            ));
        }
        if let Some(active) = p.is_active {
            values.push(("is_active", Bind::Bool(Some(active))));
        }
        Ok(values)
    }
}
