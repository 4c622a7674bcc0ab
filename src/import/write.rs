//! The write of an import: the valid rows, column by column, sent as arrays and upserted
//! by the table's natural key in one statement per chunk: `unnest` the arrays, find each
//! row's stored match, update the matches whose values differ, insert the rest. The
//! counts of updated and inserted rows come back; the others were unchanged.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::spec::{self, Kind, Table};
use super::{Progress, ProgressFn, Value};

/// Rows per statement: the arrays of one chunk stay a few MB.
const CHUNK: usize = 5_000;

enum Values {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i32>>),
    Dec(Vec<Option<Decimal>>),
    Date(Vec<Option<NaiveDate>>),
    Time(Vec<Option<DateTime<Utc>>>),
    Bool(Vec<Option<bool>>),
    Uuid(Vec<Option<Uuid>>),
}

/// One written column and its values, one per valid row.
pub struct Column {
    db: &'static str,
    sql_type: &'static str,
    /// Set on a matched row (key columns are matched on instead).
    update: bool,
    values: Values,
}

impl Column {
    pub fn new(table: Table, c: &spec::Column, mapped: bool) -> Self {
        let values = match c.kind {
            Kind::Text(_) | Kind::Currency | Kind::PeriodType | Kind::MonthDay => {
                Values::Text(Vec::new())
            }
            Kind::Whole { .. } => Values::Int(Vec::new()),
            Kind::Money | Kind::SignedMoney | Kind::Numeric(..) => Values::Dec(Vec::new()),
            Kind::Date => Values::Date(Vec::new()),
            Kind::Instant => Values::Time(Vec::new()),
            Kind::Bool => Values::Bool(Vec::new()),
            Kind::Company | Kind::Product => Values::Uuid(Vec::new()),
        };
        // A sale found by its external id takes the date, product, channel and customer
        // the file gives; one found by those has them already.
        let update = !c.key || (table == Table::Sales && c.field != "external_id" && mapped);
        Self {
            db: c.db,
            sql_type: c.kind.sql_type(),
            update,
            values,
        }
    }

    pub(super) fn push(&mut self, value: Value) {
        match (&mut self.values, value) {
            (Values::Text(v), Value::Text(x)) => v.push(Some(x)),
            (Values::Int(v), Value::Int(x)) => v.push(Some(x)),
            (Values::Dec(v), Value::Dec(x)) => v.push(Some(x)),
            (Values::Dec(v), Value::Int(x)) => v.push(Some(Decimal::from(x))),
            (Values::Date(v), Value::Date(x)) => v.push(Some(x)),
            (Values::Time(v), Value::Time(x)) => v.push(Some(x)),
            (Values::Bool(v), Value::Bool(x)) => v.push(Some(x)),
            (Values::Uuid(v), Value::Uuid(x)) => v.push(Some(x)),
            (Values::Text(v), _) => v.push(None),
            (Values::Int(v), _) => v.push(None),
            (Values::Dec(v), _) => v.push(None),
            (Values::Date(v), _) => v.push(None),
            (Values::Time(v), _) => v.push(None),
            (Values::Bool(v), _) => v.push(None),
            (Values::Uuid(v), _) => v.push(None),
        }
    }
}

/// The stored row an input row `i` is, by the table's natural key (`x` is the table).
fn match_sql(table: Table) -> &'static str {
    match table {
        Table::Companies => {
            "(SELECT x.id FROM companies x WHERE lower(x.name) = lower(i.name)
               ORDER BY x.created_at, x.id LIMIT 1)"
        }
        Table::Products => "(SELECT x.id FROM products x WHERE x.sku = i.sku)",
        Table::Inventory => {
            "(SELECT x.id FROM inventory x WHERE x.product_id = i.product_id
                 AND x.warehouse_location IS NOT DISTINCT FROM i.warehouse_location
               ORDER BY x.created_at, x.id LIMIT 1)"
        }
        Table::Sales => {
            "COALESCE(
               (SELECT x.id FROM sales x WHERE i.external_id IS NOT NULL
                   AND x.external_id = i.external_id ORDER BY x.created_at, x.id LIMIT 1),
               (SELECT x.id FROM sales x WHERE i.external_id IS NULL AND x.external_id IS NULL
                   AND x.company_id = i.company_id AND x.sale_date = i.sale_date
                   AND x.product_id IS NOT DISTINCT FROM i.product_id
                   AND x.channel IS NOT DISTINCT FROM i.channel
                   AND x.customer_id IS NOT DISTINCT FROM i.customer_id
                   AND x.customer_name IS NOT DISTINCT FROM i.customer_name
                   AND x.order_line IS NOT DISTINCT FROM i.order_line
                 ORDER BY x.created_at, x.id LIMIT 1))"
        }
        Table::WorkingCapitalMetrics => {
            "(SELECT x.id FROM working_capital_metrics x WHERE x.company_id = i.company_id
                 AND x.period_type = i.period_type AND x.period_date = i.period_date
               ORDER BY x.created_at, x.id LIMIT 1)"
        }
    }
}

/// The upsert of one chunk; identifiers come from the static table descriptions only.
fn statement(table: Table, columns: &[Column]) -> String {
    let t = table.sql_table();
    let names: Vec<&str> = columns.iter().map(|c| c.db).collect();
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(n, c)| format!("${}::{}[]", n + 1, c.sql_type))
        .collect();
    let set: Vec<&Column> = columns.iter().filter(|c| c.update).collect();
    let update = if set.is_empty() {
        "SELECT 1 WHERE false".to_owned()
    } else {
        let assign: Vec<String> = set.iter().map(|c| format!("{0} = m.{0}", c.db)).collect();
        let stored: Vec<String> = set.iter().map(|c| format!("x.{}", c.db)).collect();
        let given: Vec<String> = set.iter().map(|c| format!("m.{}", c.db)).collect();
        format!(
            "UPDATE {t} x SET {} FROM m WHERE x.id = m.existing_id
                AND ROW({}) IS DISTINCT FROM ROW({}) RETURNING 1",
            assign.join(", "),
            stored.join(", "),
            given.join(", ")
        )
    };
    format!(
        "WITH i AS (SELECT * FROM unnest({arrays}) AS i({names})),
              m AS (SELECT i.*, {matching} AS existing_id FROM i),
              u AS ({update}),
              n AS (INSERT INTO {t} ({names}) SELECT {names} FROM m WHERE m.existing_id IS NULL RETURNING 1)
         SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM n)",
        arrays = arrays.join(", "),
        names = names.join(", "),
        matching = match_sql(table),
    )
}

/// Upserts `rows` rows; returns (inserted, updated).
pub async fn upsert(
    conn: &mut PgConnection,
    table: Table,
    columns: &[Column],
    rows: usize,
    progress: Option<&ProgressFn>,
) -> sqlx::Result<(u64, u64)> {
    let sql = statement(table, columns);
    let (mut inserted, mut updated) = (0u64, 0u64);
    let mut start = 0;
    while start < rows {
        let end = (start + CHUNK).min(rows);
        let mut query = sqlx::query_as::<_, (i64, i64)>(sqlx::AssertSqlSafe(sql.as_str()));
        for c in columns {
            query = match &c.values {
                Values::Text(v) => query.bind(&v[start..end]),
                Values::Int(v) => query.bind(&v[start..end]),
                Values::Dec(v) => query.bind(&v[start..end]),
                Values::Date(v) => query.bind(&v[start..end]),
                Values::Time(v) => query.bind(&v[start..end]),
                Values::Bool(v) => query.bind(&v[start..end]),
                Values::Uuid(v) => query.bind(&v[start..end]),
            };
        }
        let (u, n) = query.fetch_one(&mut *conn).await?;
        updated += u64::try_from(u).unwrap_or(0);
        inserted += u64::try_from(n).unwrap_or(0);
        start = end;
        if let Some(p) = progress {
            p(Progress::Written(start as u64, rows as u64));
        }
    }
    Ok((inserted, updated))
}

/// What a database refusal of the write means to the one who imports, when the file
/// caused it (a stored row the file's values break a rule with); `None` for our faults.
pub fn explain(err: &sqlx::Error) -> Option<String> {
    let db = err.as_database_error()?;
    let code = db.code()?;
    let constraint = db.constraint().unwrap_or("a rule");
    match code.as_ref() {
        "23514" => Some(format!(
            "a row breaks {constraint} together with the stored row it updates; nothing was imported"
        )),
        "22003" => Some("a number is out of range; nothing was imported".into()),
        "23505" => Some(format!(
            "a row would duplicate a stored row ({constraint}); nothing was imported"
        )),
        _ => None,
    }
}
