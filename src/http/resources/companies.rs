//! `/api/v1/companies`: the legal entities a tenant manages (limited by the plan's
//! `max_entities`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::context::Caller;
use crate::http::error::ApiError;
use crate::http::resource::{Bind, Filter, Kind, Op, Resource, Sort, nullable};
use crate::http::validate as v;

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Company {
    pub id: Uuid,
    pub name: String,
    pub legal_name: Option<String>,
    pub tax_id: Option<String>,
    pub currency: String,
    /// `MM-DD`.
    pub fiscal_year_end: Option<String>,
    pub settings: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCompany {
    pub name: String,
    pub legal_name: Option<String>,
    pub tax_id: Option<String>,
    /// ISO 4217; default USD.
    pub currency: Option<String>,
    /// `MM-DD`, e.g. `12-31`.
    pub fiscal_year_end: Option<String>,
    pub settings: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanyChanges {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub legal_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub tax_id: Option<Option<String>>,
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub fiscal_year_end: Option<Option<String>>,
    pub settings: Option<serde_json::Value>,
}

fn fiscal_year_end(value: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let valid = chrono::NaiveDate::parse_from_str(&format!("2024-{value}"), "%Y-%m-%d").is_ok()
        && value.len() == 5;
    if valid {
        Ok(Some(value))
    } else {
        Err(ApiError::validation(
            "fiscal_year_end",
            "fiscal_year_end must be MM-DD, e.g. 12-31",
        ))
    }
}

pub struct Companies;

impl Resource for Companies {
    const NAME: &'static str = "company";
    const PATH: &'static str = "companies";
    const TABLE: &'static str = "companies";
    const COLUMNS: &'static str = "id, name::text, legal_name::text, tax_id::text, currency::text, fiscal_year_end::text, settings, created_at, updated_at";
    const SORTS: &'static [Sort] = &[
        Sort {
            param: "created_at",
            column: "created_at",
            sql_type: "timestamptz",
        },
        Sort {
            param: "name",
            column: "name",
            sql_type: "text",
        },
    ];
    const FILTERS: &'static [Filter] = &[Filter {
        param: "currency",
        column: "currency",
        op: Op::Eq,
        kind: Kind::Text,
    }];

    type Row = Company;
    type Create = NewCompany;
    type Update = CompanyChanges;

    fn create(input: NewCompany) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let mut values = vec![
            ("name", Bind::Text(Some(v::text("name", input.name, 255)?))),
            (
                "legal_name",
                Bind::Text(v::optional_text("legal_name", input.legal_name, 255)?),
            ),
            (
                "tax_id",
                Bind::Text(v::optional_text("tax_id", input.tax_id, 50)?),
            ),
            (
                "fiscal_year_end",
                Bind::Text(fiscal_year_end(input.fiscal_year_end)?),
            ),
        ];
        if let Some(currency) = v::currency("currency", input.currency)? {
            values.push(("currency", Bind::Text(Some(currency))));
        }
        if let Some(settings) = v::object("settings", input.settings)? {
            values.push(("settings", Bind::Json(Some(settings))));
        }
        Ok(values)
    }

    fn update(input: CompanyChanges) -> Result<Vec<(&'static str, Bind)>, ApiError> {
        let mut values = Vec::new();
        if let Some(name) = input.name {
            values.push(("name", Bind::Text(Some(v::text("name", name, 255)?))));
        }
        if let Some(legal_name) = input.legal_name {
            values.push((
                "legal_name",
                Bind::Text(v::optional_text("legal_name", legal_name, 255)?),
            ));
        }
        if let Some(tax_id) = input.tax_id {
            values.push((
                "tax_id",
                Bind::Text(v::optional_text("tax_id", tax_id, 50)?),
            ));
        }
        if let Some(currency) = input.currency {
            values.push((
                "currency",
                Bind::Text(v::currency("currency", Some(currency))?),
            ));
        }
        if let Some(fye) = input.fiscal_year_end {
            values.push(("fiscal_year_end", Bind::Text(fiscal_year_end(fye)?)));
        }
        if let Some(settings) = input.settings {
            values.push((
                "settings",
                Bind::Json(v::object("settings", Some(settings))?),
            ));
        }
        Ok(values)
    }

    /// A plan allows `max_entities` companies. The table lock serialises concurrent creates
    /// so two requests cannot both take the last place.
    async fn before_create(conn: &mut PgConnection, caller: &Caller) -> Result<(), ApiError> {
        let Some(max) = caller.tenant.max_entities else {
            return Ok(());
        };
        sqlx::query("LOCK TABLE companies IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *conn)
            .await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM companies")
            .fetch_one(&mut *conn)
            .await?;
        if count >= i64::from(max) {
            return Err(ApiError::forbidden(
                "plan_limit_reached",
                format!(
                    "the {} plan allows {max} compan{}",
                    caller.tenant.tier.as_str(),
                    if max == 1 { "y" } else { "ies" }
                ),
            ));
        }
        Ok(())
    }
}
