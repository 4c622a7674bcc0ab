//! The write of an import, through a staging table: the valid rows are streamed with `COPY`
//! into a temporary table of the transaction (`import_staging`, dropped at its end), checked
//! there for rows that repeat a natural key, and merged into the tenant table in one
//! statement: find each row's stored match, update the matches whose values differ, insert
//! the rest. The counts of updated and inserted rows come back; the others were unchanged.

use std::fmt::Write as _;

use sqlx::PgConnection;

use super::Value;
use super::spec::{self, Table};

/// A column of the merge.
pub struct Column {
    db: &'static str,
    /// Set on a matched row (key columns are matched on instead).
    update: bool,
}

impl Column {
    pub fn new(table: Table, c: &spec::Column, mapped: bool) -> Self {
        // A sale found by its external id takes the date, product, channel and customer
        // the file gives; one found by those has them already.
        let update = !c.key || (table == Table::Sales && c.field != "external_id" && mapped);
        Self { db: c.db, update }
    }
}

/// `CREATE TEMP TABLE import_staging`: the line of each row and every field of `table`.
pub fn staging_ddl(table: Table) -> String {
    let columns: Vec<String> = table
        .columns()
        .iter()
        .map(|c| format!("{} {}", c.db, c.kind.sql_type()))
        .collect();
    format!(
        "CREATE TEMP TABLE import_staging (line bigint NOT NULL, {}) ON COMMIT DROP",
        columns.join(", ")
    )
}

/// `COPY import_staging … FROM STDIN` (text format) in the order [`encode_row`] writes.
pub fn copy_statement(table: Table) -> String {
    let names: Vec<&str> = table.columns().iter().map(|c| c.db).collect();
    format!(
        "COPY import_staging (line, {}) FROM STDIN",
        names.join(", ")
    )
}

/// Appends one row in COPY's text format: tab-separated, `\N` for null, backslash escapes.
pub(super) fn encode_row(buf: &mut Vec<u8>, line: u64, values: &[Value]) {
    let mut s = String::with_capacity(128);
    let _ = write!(s, "{line}");
    for value in values {
        s.push('\t');
        match value {
            Value::Null => s.push_str("\\N"),
            Value::Text(t) => {
                for c in t.chars() {
                    match c {
                        '\\' => s.push_str("\\\\"),
                        '\t' => s.push_str("\\t"),
                        '\n' => s.push_str("\\n"),
                        '\r' => s.push_str("\\r"),
                        c => s.push(c),
                    }
                }
            }
            Value::Int(i) => {
                let _ = write!(s, "{i}");
            }
            Value::Dec(d) => {
                let _ = write!(s, "{d}");
            }
            Value::Date(d) => {
                let _ = write!(s, "{d}");
            }
            Value::Time(t) => s.push_str(&t.to_rfc3339()),
            Value::Bool(b) => s.push(if *b { 't' } else { 'f' }),
            Value::Uuid(u) => {
                let _ = write!(s, "{u}");
            }
        }
    }
    s.push('\n');
    buf.extend_from_slice(s.as_bytes());
}

/// Sales without an external id or an order line are numbered: the nth row of the file
/// with the same date, product, channel and customer is line n.
pub async fn number_order_lines(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE import_staging s SET order_line = n.rn
           FROM (SELECT line, row_number() OVER (
                          PARTITION BY company_id, sale_date, product_id, channel, customer_id, customer_name
                          ORDER BY line)::integer AS rn
                   FROM import_staging WHERE external_id IS NULL AND order_line IS NULL) n
          WHERE s.line = n.line",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The rows of the staging table that repeat a natural key of an earlier row, as
/// `(filter, partition)` pairs of SQL over `import_staging`.
fn key_partitions(table: Table) -> &'static [(&'static str, &'static str)] {
    match table {
        Table::Companies => &[("true", "lower(name)")],
        Table::Products => &[("true", "sku")],
        Table::Inventory => &[("true", "product_id, warehouse_location")],
        Table::Sales => &[
            ("external_id IS NOT NULL", "external_id"),
            (
                "external_id IS NULL",
                "company_id, sale_date, product_id, channel, customer_id, customer_name, order_line",
            ),
        ],
        Table::WorkingCapitalMetrics => &[("true", "company_id, period_type, period_date")],
    }
}

fn duplicates_sql(table: Table) -> String {
    let parts: Vec<String> = key_partitions(table)
        .iter()
        .map(|(filter, partition)| {
            format!(
                "SELECT line, first_value(line) OVER w AS first, row_number() OVER w AS n
                   FROM import_staging WHERE {filter} WINDOW w AS (PARTITION BY {partition} ORDER BY line)"
            )
        })
        .collect();
    format!(
        "SELECT line, first FROM ({}) d WHERE n > 1",
        parts.join(" UNION ALL ")
    )
}

/// Rows repeating an earlier row's natural key: how many, and the first `shown` as
/// `(line, line of the first)`.
pub async fn duplicates(
    conn: &mut PgConnection,
    table: Table,
    shown: i64,
) -> sqlx::Result<(u64, Vec<(i64, i64)>)> {
    let sql = duplicates_sql(table);
    let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM ({sql}) x"
    )))
    .fetch_one(&mut *conn)
    .await?;
    if count == 0 {
        return Ok((0, Vec::new()));
    }
    let lines: Vec<(i64, i64)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{sql} ORDER BY line LIMIT $1")))
            .bind(shown)
            .fetch_all(&mut *conn)
            .await?;
    Ok((u64::try_from(count).unwrap_or(0), lines))
}

/// Drops the repeated rows from the staging table (`skip_invalid`).
pub async fn drop_duplicates(conn: &mut PgConnection, table: Table) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM import_staging WHERE line IN (SELECT line FROM ({}) x)",
        duplicates_sql(table)
    )))
    .execute(conn)
    .await?;
    Ok(())
}

/// Names of companies in the staging table that no stored company has.
pub async fn new_companies(conn: &mut PgConnection) -> sqlx::Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT lower(s.name)) FROM import_staging s
          WHERE NOT EXISTS (SELECT 1 FROM companies c WHERE lower(c.name) = lower(s.name))",
    )
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
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

/// The merge of the staging table into the tenant table; identifiers come from the static
/// table descriptions only.
fn merge_statement(table: Table, columns: &[Column]) -> String {
    let t = table.sql_table();
    let names: Vec<&str> = columns.iter().map(|c| c.db).collect();
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
        "WITH i AS (SELECT {names} FROM import_staging),
              m AS (SELECT i.*, {matching} AS existing_id FROM i),
              u AS ({update}),
              n AS (INSERT INTO {t} ({names}) SELECT {names} FROM m WHERE m.existing_id IS NULL RETURNING 1)
         SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM n)",
        names = names.join(", "),
        matching = match_sql(table),
    )
}

/// Merges the staging table into `table`; returns (inserted, updated).
pub async fn merge(
    conn: &mut PgConnection,
    table: Table,
    columns: &[Column],
) -> sqlx::Result<(u64, u64)> {
    // The planner knows nothing of a fresh temporary table until it is analysed.
    sqlx::query("ANALYZE import_staging")
        .execute(&mut *conn)
        .await?;
    let (updated, inserted): (i64, i64) =
        sqlx::query_as(sqlx::AssertSqlSafe(merge_statement(table, columns)))
            .fetch_one(&mut *conn)
            .await?;
    Ok((
        u64::try_from(inserted).unwrap_or(0),
        u64::try_from(updated).unwrap_or(0),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes() {
        let mut buf = Vec::new();
        encode_row(
            &mut buf,
            7,
            &[
                Value::Text("a\tb\\c\nd".into()),
                Value::Null,
                Value::Bool(true),
                Value::Int(-3),
            ],
        );
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "7\ta\\tb\\\\c\\nd\t\\N\tt\t-3\n"
        );
        assert!(staging_ddl(Table::Sales).contains("order_line integer"));
        assert!(
            copy_statement(Table::Inventory).starts_with("COPY import_staging (line, company_id")
        );
    }
}
