//! `/api/v1/products`: what a manufacturer sells, with costs, prices and reorder rules.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::http::fields::{Count, Currency, Money, Text};
use crate::http::resource::{Filter, Kind, Op, Resource, Sort};

crate::resource_fields! {
    row Product, create NewProduct, update ProductChanges;
    id: Uuid => read,
    company_id: Uuid => fixed,
    /// Unique within the tenant.
    sku: Text<100> => required,
    name: Text<255> => required,
    description: Text<10000> => optional,
    category: Text<100> => optional,
    unit_cost: Money => optional,
    unit_price: Money => optional,
    /// Default USD.
    currency: Currency => defaulted,
    reorder_point: Count => optional,
    reorder_quantity: Count => optional,
    lead_time_days: Count => optional,
    /// Default true.
    is_active: bool => defaulted,
    created_at: DateTime<Utc> => read,
    updated_at: DateTime<Utc> => read,
}

pub struct Products;

impl Resource for Products {
    const NAME: &'static str = "product";
    const PATH: &'static str = "products";
    const TABLE: &'static str = "products";
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
}
