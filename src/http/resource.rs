//! The generic engine behind every tenant resource (`/api/v1/<resource>`): list with
//! filters, sort and cursor pagination; get; create; partial update; delete.
//!
//! A resource describes itself once (table, columns, filters, sorts, input types) by
//! implementing [`Resource`]; the handlers here do the rest, always inside the caller's
//! tenant transaction ([`crate::db::scope::begin`]). Identifiers in the SQL built here come
//! only from those `'static` descriptions, never from the request; values are bound.

use std::future::Future;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::TryStreamExt as _;
use rust_decimal::Decimal;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::columns::{Columns, RowType};
use super::context::Caller;
use super::cursor::Position;
use super::error::ApiError;
use super::extract::{Body, Id, PageWriter, Writer};
use crate::access::Act;
use crate::billing::Features;

/// A value to bind for one column.
#[derive(Debug, Clone)]
pub enum Bind {
    Text(Option<String>),
    Int(Option<i32>),
    Decimal(Option<Decimal>),
    Date(Option<NaiveDate>),
    Bool(Option<bool>),
    Json(Option<serde_json::Value>),
    Uuid(Option<Uuid>),
    Time(Option<DateTime<Utc>>),
}

fn push_bind(qb: &mut QueryBuilder<Postgres>, value: Bind) {
    match value {
        Bind::Text(v) => qb.push_bind(v),
        Bind::Int(v) => qb.push_bind(v),
        Bind::Decimal(v) => qb.push_bind(v),
        Bind::Date(v) => qb.push_bind(v),
        Bind::Bool(v) => qb.push_bind(v),
        Bind::Json(v) => qb.push_bind(v),
        Bind::Uuid(v) => qb.push_bind(v),
        Bind::Time(v) => qb.push_bind(v),
    };
}

/// A sort a client may ask for (`?sort=name` or `?sort=-name`). Sort columns are NOT NULL,
/// so keyset pagination on `(column, id)` is exact.
#[derive(Debug, Clone, Copy)]
pub struct Sort {
    pub param: &'static str,
    pub column: &'static str,
    /// The SQL type to cast a cursor's key back to.
    pub sql_type: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Gte,
    Lte,
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Text,
    Bool,
    Uuid,
    Date,
}

/// A filter a client may use (`?category=components`, `?from=2026-01-01`).
#[derive(Debug, Clone, Copy)]
pub struct Filter {
    pub param: &'static str,
    pub column: &'static str,
    pub op: Op,
    pub kind: Kind,
}

/// A feature the tenant's plan must include to write a resource.
#[derive(Debug, Clone, Copy)]
pub struct RequiredFeature {
    pub name: &'static str,
    pub enabled: fn(&Features) -> bool,
}

/// One tenant resource. Its row, create and update types come from one declaration
/// ([`crate::resource_fields!`]); this trait adds what the engine needs besides.
pub trait Resource: Send + Sync + 'static {
    /// Singular, for messages ("product").
    const NAME: &'static str;
    /// URL segment and table ("products").
    const PATH: &'static str;
    const TABLE: &'static str;
    /// Allowed sorts; the first is the default.
    const SORTS: &'static [Sort];
    const FILTERS: &'static [Filter];
    /// Writing needs this plan feature.
    const WRITE_FEATURE: Option<RequiredFeature> = None;
    /// A column the engine fills with the caller's Clerk user id on create.
    const CREATED_BY: Option<&'static str> = None;
    /// Writes are sensitive acts: each create, update and delete writes an audit row
    /// (`<name>.created` …) in the same transaction.
    const AUDITED: bool = false;
    /// A create body may name rows of other resources (`company_id`, `product_id`) that
    /// do not exist: schema-valid, and still a 422 `reference_not_found`.
    const REFERENCES: bool = true;

    type Row: RowType + for<'r> sqlx::FromRow<'r, PgRow> + Serialize + ToSchema + Send + Unpin;
    type Create: Columns + DeserializeOwned + ToSchema + Send;
    type Update: Columns + DeserializeOwned + ToSchema + Send;

    /// Rules between fields of a new row, and values derived from others; runs after
    /// every field has parsed.
    fn prepare_create(_new: &mut Self::Create) -> Result<(), ApiError> {
        Ok(())
    }
    /// The same for a partial update (which sees only the fields it changes; rules
    /// between a changed and an unchanged field are the database's CHECKs).
    fn prepare_update(_changes: &mut Self::Update) -> Result<(), ApiError> {
        Ok(())
    }

    /// Runs in the insert's transaction before it (plan limits).
    fn before_create(
        _conn: &mut PgConnection,
        _caller: &Caller,
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        async { Ok(()) }
    }
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// The raw body, with a too-large body answered 413 as a problem document (the webhook
/// receivers check signatures on the raw bytes).
pub fn body_bytes(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the server accepts",
            )
        } else {
            ApiError::bad_request("unreadable_body", "the request body could not be read")
        }
    })
}

/// Maps constraint violations to client errors; anything else is ours.
pub fn db_error(err: sqlx::Error, table: &str, name: &str) -> ApiError {
    let Some(db) = err.as_database_error() else {
        return err.into();
    };
    // PostgreSQL's default names are <table>_<columns>_<suffix>: the middle is the field.
    // Our own rules are named <table>_<field>__<rule>_check (migrations/tenant/0002).
    let field = db.constraint().map(|c| {
        let c = c
            .strip_prefix(table)
            .and_then(|c| c.strip_prefix('_'))
            .unwrap_or(c);
        let c = c
            .trim_end_matches("_fkey")
            .trim_end_matches("_key")
            .trim_end_matches("_check");
        c.split("__").next().unwrap_or(c).to_owned()
    });
    // A NOT NULL violation names its column rather than a constraint.
    let field = field.or_else(|| {
        db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.column().map(str::to_owned))
    });
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    match code.as_str() {
        "23505" => ApiError::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!(
                "a {name} with this {} already exists",
                field.as_deref().unwrap_or("value")
            ),
        )
        .with_field(field.unwrap_or_default()),
        "23503" => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reference_not_found",
            format!(
                "{} does not name an existing row",
                field.as_deref().unwrap_or("a reference")
            ),
        )
        .with_field(field.unwrap_or_default()),
        // Rules between two fields are named <table>_<field>__<rule>_check.
        "23514" if db.constraint().is_some_and(|c| c.contains("__")) => ApiError::rule(
            field.clone().unwrap_or_default(),
            format!(
                "{} breaks a rule with another field of the row",
                field.as_deref().unwrap_or("a value")
            ),
        ),
        "23514" | "23502" => ApiError::validation(
            field.clone().unwrap_or_default(),
            format!(
                "{} is not allowed here",
                field.as_deref().unwrap_or("a value")
            ),
        ),
        // Each field's own range is in its schema, so a number out of range here was computed
        // from several fields: today only inventory's generated total_value.
        "22003" if table == "inventory" => ApiError::rule(
            "unit_cost",
            "quantity_on_hand × unit_cost (the row's total_value) must not exceed 9999999999999.99",
        ),
        "22003" => ApiError::rule(
            field.unwrap_or_default(),
            "a value computed from this row's fields is out of range",
        ),
        _ => ApiError::internal(err),
    }
}

struct ListParams {
    limit: i64,
    sort: Sort,
    descending: bool,
    sort_param: String,
    cursor: Option<String>,
    filters: Vec<(Filter, Bind)>,
}

fn parse_list_params<R: Resource>(pairs: Vec<(String, String)>) -> Result<ListParams, ApiError> {
    let mut params = ListParams {
        limit: DEFAULT_LIMIT,
        sort: R::SORTS[0],
        descending: false,
        sort_param: R::SORTS[0].param.to_owned(),
        cursor: None,
        filters: Vec::new(),
    };
    for (key, value) in pairs {
        match key.as_str() {
            "limit" => {
                params.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_parameter",
                            format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
                        )
                        .with_field("limit")
                    })?;
            }
            "cursor" => params.cursor = Some(value),
            "sort" => {
                let (descending, name) = match value.strip_prefix('-') {
                    Some(name) => (true, name),
                    None => (false, value.as_str()),
                };
                let sort = R::SORTS.iter().find(|s| s.param == name).ok_or_else(|| {
                    let allowed: Vec<_> = R::SORTS.iter().map(|s| s.param).collect();
                    ApiError::bad_request(
                        "invalid_parameter",
                        format!(
                            "sort must be one of {} (prefix - for descending)",
                            allowed.join(", ")
                        ),
                    )
                    .with_field("sort")
                })?;
                params.sort = *sort;
                params.descending = descending;
                params.sort_param = value.clone();
            }
            other => {
                let filter = R::FILTERS
                    .iter()
                    .find(|f| f.param == other)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_parameter",
                            format!("unknown query parameter {other:?}"),
                        )
                        .with_field(other.to_owned())
                    })?;
                params
                    .filters
                    .push((*filter, parse_filter(filter, &value)?));
            }
        }
    }
    Ok(params)
}

fn parse_filter(filter: &Filter, value: &str) -> Result<Bind, ApiError> {
    let bad = |what: &str| {
        ApiError::bad_request(
            "invalid_parameter",
            format!("{} must be {what}", filter.param),
        )
        .with_field(filter.param)
    };
    Ok(match filter.kind {
        Kind::Text if value.chars().count() <= 255 => Bind::Text(Some(value.to_owned())),
        Kind::Text => return Err(bad("at most 255 characters")),
        Kind::Bool => Bind::Bool(Some(value.parse().map_err(|_| bad("true or false"))?)),
        // Only the forms the document states: a hyphenated UUID, a YYYY-MM-DD date.
        Kind::Uuid => Bind::Uuid(Some(
            Some(value)
                .filter(|v| v.len() == 36)
                .and_then(|v| Uuid::try_parse(v).ok())
                .ok_or_else(|| bad("a UUID"))?,
        )),
        Kind::Date => Bind::Date(Some(
            Some(value)
                .filter(|v| v.len() == 10)
                .and_then(|v| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
                .ok_or_else(|| bad("a date (YYYY-MM-DD)"))?,
        )),
    })
}

/// The query string's pairs in order, or a 400 `invalid_parameter` when it is malformed.
pub(crate) fn query_pairs(
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    query.map(|Query(pairs)| pairs).map_err(|e| {
        ApiError::bad_request(
            "invalid_parameter",
            format!("the query string is malformed: {e}"),
        )
    })
}

/// `GET /api/v1/<resource>`: at most `limit` rows, fewer when their JSON passes
/// [`MAX_PAGE_BYTES`](super::extract::MAX_PAGE_BYTES) (the cursor then starts the next page after the last row sent).
pub async fn list<R: Resource>(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Act::ReadData)?;
    let params = parse_list_params::<R>(query_pairs(query)?)?;
    let after = match &params.cursor {
        Some(c) => Some(state.cursors.decode(c, &params.sort_param)?),
        None => None,
    };
    let (dir, cmp) = if params.descending {
        ("DESC", "<")
    } else {
        ("ASC", ">")
    };
    let column = params.sort.column;
    let mut qb = QueryBuilder::<Postgres>::new(format!(
        "SELECT {}, ({column})::text AS cursor_key FROM {} WHERE true",
        R::Row::select_list(),
        R::TABLE
    ));
    for (filter, value) in params.filters {
        let op = match filter.op {
            Op::Eq => " = ",
            Op::Gte => " >= ",
            Op::Lte => " <= ",
        };
        qb.push(format!(" AND {}{op}", filter.column));
        push_bind(&mut qb, value);
    }
    if let Some(after) = &after {
        qb.push(format!(" AND ({column}, id) {cmp} ("));
        qb.push_bind(after.key.clone());
        qb.push(format!("::{}, ", params.sort.sql_type));
        qb.push_bind(after.id);
        qb.push(")");
    }
    qb.push(format!(" ORDER BY {column} {dir}, id {dir} LIMIT "));
    qb.push_bind(params.limit + 1);

    let mut tx = state.begin(&caller).await?;
    let mut page = PageWriter::new();
    // The last row sent; the cursor is read from it only when there is a next page.
    let mut last: Option<PgRow> = None;
    let mut more = false;
    {
        let mut rows = qb.build().fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            if page.rows() as i64 == params.limit || page.is_full() {
                more = true;
                break;
            }
            page.push(&<R::Row as sqlx::FromRow<PgRow>>::from_row(&row)?)?;
            last = Some(row);
        }
    }
    tx.commit().await?;
    let next_cursor = match last.filter(|_| more) {
        Some(row) => Some(state.cursors.encode(&Position {
            sort: params.sort_param,
            key: row.try_get("cursor_key")?,
            id: row.try_get("id")?,
        })),
        None => None,
    };
    Ok(page.finish(next_cursor))
}

/// `GET /api/v1/<resource>/{id}`
pub async fn get<R: Resource>(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<Json<R::Row>, ApiError> {
    caller.require(Act::ReadData)?;
    let mut tx = state.begin(&caller).await?;
    let row = sqlx::query_as::<_, R::Row>(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM {} WHERE id = $1",
        R::Row::select_list(),
        R::TABLE
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.map(Json).ok_or_else(|| ApiError::not_found(R::NAME))
}

/// `POST /api/v1/<resource>`
pub async fn create<R: Resource>(
    State(state): State<AppState>,
    Writer(caller, _): Writer<R>,
    Body(mut input): Body<R::Create>,
) -> Result<Response, ApiError> {
    R::prepare_create(&mut input)?;
    let mut values = input.columns();
    if let Some(column) = R::CREATED_BY {
        values.push((
            column,
            Bind::Text(Some(caller.member.clerk_user_id.clone())),
        ));
    }
    let mut qb = QueryBuilder::<Postgres>::new(format!("INSERT INTO {} (", R::TABLE));
    let mut columns = qb.separated(", ");
    for (column, _) in &values {
        columns.push(*column);
    }
    qb.push(") VALUES (");
    let mut first = true;
    for (_, value) in values {
        if !first {
            qb.push(", ");
        }
        first = false;
        push_bind(&mut qb, value);
    }
    qb.push(format!(") RETURNING {}", R::Row::select_list()));

    let mut tx = state.begin(&caller).await?;
    R::before_create(&mut tx, &caller).await?;
    let row = qb
        .build_query_as::<R::Row>()
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| db_error(e, R::TABLE, R::NAME))?;
    audit_write::<R>(&mut tx, &caller, "created", row_id(&row)).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

/// Records a write of an audited resource in the write's transaction.
async fn audit_write<R: Resource>(
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    verb: &str,
    id: Option<Uuid>,
) -> Result<(), ApiError> {
    if !R::AUDITED {
        return Ok(());
    }
    let action = format!("{}.{verb}", R::NAME);
    crate::audit::record_in_tenant(
        conn,
        &caller.tenant.scope,
        &caller.actor(),
        crate::audit::Entry {
            tenant_id: Some(caller.tenant.scope.id),
            action: &action,
            resource_type: R::NAME,
            resource_id: id.map(|id| id.to_string()).unwrap_or_default(),
            metadata: serde_json::json!({}),
        },
    )
    .await?;
    Ok(())
}

/// The `id` of a row, read through its JSON form: rows are typed per resource, and only
/// audited writes need this.
fn row_id<T: Serialize>(row: &T) -> Option<Uuid> {
    serde_json::to_value(row)
        .ok()?
        .get("id")?
        .as_str()?
        .parse()
        .ok()
}

/// `PATCH /api/v1/<resource>/{id}`
pub async fn update<R: Resource>(
    State(state): State<AppState>,
    Writer(caller, _): Writer<R>,
    Id(id): Id,
    Body(mut changes): Body<R::Update>,
) -> Result<Json<R::Row>, ApiError> {
    R::prepare_update(&mut changes)?;
    let values = changes.columns();
    if values.is_empty() {
        // The schema's minProperties says so too; kept for a body of only absent fields.
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "the body names no field to change",
        ));
    }
    let mut qb = QueryBuilder::<Postgres>::new(format!("UPDATE {} SET ", R::TABLE));
    let mut first = true;
    for (column, value) in values {
        if !first {
            qb.push(", ");
        }
        first = false;
        qb.push(format!("{column} = "));
        push_bind(&mut qb, value);
    }
    qb.push(" WHERE id = ");
    qb.push_bind(id);
    qb.push(format!(" RETURNING {}", R::Row::select_list()));

    let mut tx = state.begin(&caller).await?;
    let row = qb
        .build_query_as::<R::Row>()
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(e, R::TABLE, R::NAME))?;
    let Some(row) = row else {
        return Err(ApiError::not_found(R::NAME));
    };
    audit_write::<R>(&mut tx, &caller, "updated", Some(id)).await?;
    tx.commit().await?;
    Ok(Json(row))
}

/// `DELETE /api/v1/<resource>/{id}`
pub async fn delete<R: Resource>(
    State(state): State<AppState>,
    Writer(caller, _): Writer<R>,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.begin(&caller).await?;
    let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {} WHERE id = $1",
        R::TABLE
    )))
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(e, R::TABLE, R::NAME))?
    .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found(R::NAME));
    }
    audit_write::<R>(&mut tx, &caller, "deleted", Some(id)).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of resource `R`.
pub fn routes<R: Resource>() -> axum::Router<AppState> {
    use axum::routing::get as on_get;
    axum::Router::new()
        .route(
            &format!("/{}", R::PATH),
            on_get(list::<R>).post(create::<R>),
        )
        .route(
            &format!("/{}/{{id}}", R::PATH),
            on_get(get::<R>).patch(update::<R>).delete(delete::<R>),
        )
}
