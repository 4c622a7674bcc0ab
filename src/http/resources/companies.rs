//! `/api/v1/companies`: the legal entities a tenant manages (limited by the plan's
//! `max_entities`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sqlx::PgConnection;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use uuid::Uuid;

use crate::http::context::Caller;
use crate::http::error::ApiError;
use crate::http::fields::{Currency, Field, JsonObject, Text};
use crate::http::resource::{Bind, Filter, Kind, Op, Resource, Sort};

/// Largest `settings` document of a company.
pub const MAX_SETTINGS_BYTES: usize = 16 * 1024;

crate::resource_fields! {
    row Company, create NewCompany, update CompanyChanges;
    id: Uuid => read,
    name: Text<255> => required,
    legal_name: Text<255> => optional,
    tax_id: Text<50> => optional,
    /// Default USD.
    currency: Currency => defaulted,
    /// The last day of the fiscal year, MM-DD (e.g. 12-31).
    fiscal_year_end: MonthDay => optional,
    /// Free-form company settings. Default {}.
    settings: JsonObject<MAX_SETTINGS_BYTES> => defaulted,
    created_at: DateTime<Utc> => read,
    updated_at: DateTime<Utc> => read,
}

/// A day of the year, `MM-DD`, February 29 included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthDay(String);

/// Exactly the days of a leap year: the server accepts what this pattern accepts.
const MONTH_DAY_PATTERN: &str = "^(01-(0[1-9]|[12][0-9]|3[01])|02-(0[1-9]|1[0-9]|2[0-9])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|(0[3578]|1[02])-(0[1-9]|[12][0-9]|3[01]))$";

impl TryFrom<String> for MonthDay {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let valid = value.len() == 5
            && chrono::NaiveDate::parse_from_str(&format!("2024-{value}"), "%Y-%m-%d").is_ok();
        if valid {
            Ok(Self(value))
        } else {
            Err("must be MM-DD, e.g. 12-31".into())
        }
    }
}

impl<'de> Deserialize<'de> for MonthDay {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(de)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for MonthDay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl sqlx::Type<sqlx::Postgres> for MonthDay {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::Type<sqlx::Postgres>>::type_info()
    }
    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for MonthDay {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        <String as sqlx::Decode<'r, sqlx::Postgres>>::decode(value).map(Self)
    }
}

impl Field for MonthDay {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(MONTH_DAY_PATTERN))
            .into()
    }
    fn bind(value: Option<Self>) -> Bind {
        Bind::Text(value.map(|v| v.0))
    }
    const CAST: &'static str = "::text";
}

pub struct Companies;

impl Resource for Companies {
    const NAME: &'static str = "company";
    const PATH: &'static str = "companies";
    const TABLE: &'static str = "companies";
    /// A company names no other row.
    const REFERENCES: bool = false;
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

    /// A plan allows `max_entities` companies. The lock serialises concurrent creates so two
    /// requests cannot both take the last place: the table lock, and an advisory lock on the
    /// coordinator alone in Citus mode, where a table lock would be taken on every worker
    /// (public migration 0019).
    async fn before_create(conn: &mut PgConnection, caller: &Caller) -> Result<(), ApiError> {
        let Some(max) = caller.tenant.max_entities else {
            return Ok(());
        };
        sqlx::query("SELECT public.lock_for_plan_limit('companies')")
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
