//! The Sentia database, read-only: one connection, one `REPEATABLE READ, READ ONLY`
//! transaction, so every table is read from the same snapshot, and the catalog
//! (`information_schema.columns` of schema `public`) that tells which generation each table
//! is (docs/import.md, "Migrating from Sentia").

use std::collections::{BTreeMap, BTreeSet};

use sqlx::postgres::PgRow;
use sqlx::{Connection as _, PgConnection};

use super::SentiaError;

/// Which schema a source table was made by (SENTIA-SOURCE.md §1 and §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Generation {
    /// The tables of commit `02490ae43` (PascalCase models pulled back to snake_case):
    /// what production very probably still holds.
    A,
    /// The tables of the HEAD Prisma schema (`20251017171256_init`).
    B,
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::A => "A",
            Self::B => "B",
        })
    }
}

/// The open snapshot of the source and its catalog.
pub struct Snapshot {
    conn: PgConnection,
    /// Table → its columns, of schema `public`.
    columns: BTreeMap<String, BTreeSet<String>>,
}

impl Snapshot {
    /// Connects to `url` and opens the read-only snapshot. The URL's password never
    /// appears in an error: sqlx's connection errors name the host, not the URL.
    pub async fn open(url: &str) -> Result<Self, SentiaError> {
        let mut conn = PgConnection::connect(url)
            .await
            .map_err(|e| SentiaError::Source(format!("cannot connect: {e}")))?;
        sqlx::raw_sql(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET LOCAL TimeZone = 'UTC'",
        )
        .execute(&mut conn)
        .await
        .map_err(|e| SentiaError::Source(format!("cannot open a read-only snapshot: {e}")))?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
              WHERE table_schema = 'public'",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(source_error)?;
        let mut columns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (table, column) in rows {
            columns.entry(table).or_default().insert(column);
        }
        Ok(Self { conn, columns })
    }

    /// Whether the table exists with every one of `columns`.
    pub fn has(&self, table: &str, columns: &[&str]) -> bool {
        self.columns
            .get(table)
            .is_some_and(|c| columns.iter().all(|col| c.contains(*col)))
    }

    /// The generation of `table`, one of the three whose name both generations use, told
    /// by a column only that generation's table has (SENTIA-SOURCE.md §0). Every other
    /// table exists in one generation only, and its name says which.
    pub fn generation(&self, table: &str) -> Option<Generation> {
        let (a, b) = match table {
            "products" => ("market_region", "organization_id"),
            "users" => ("is_admin", "organization_id"),
            "working_capital" => ("projection_date", "period_start"),
            _ => return None,
        };
        if self.has(table, &[a]) {
            Some(Generation::A)
        } else if self.has(table, &[b]) {
            Some(Generation::B)
        } else {
            None
        }
    }

    /// Runs one query of the importer's own making on the snapshot.
    pub async fn rows(&mut self, sql: String) -> Result<Vec<PgRow>, SentiaError> {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut self.conn)
            .await
            .map_err(source_error)
    }

    /// One number of the snapshot (a checksum).
    pub async fn sum(&mut self, sql: String) -> Result<rust_decimal::Decimal, SentiaError> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut self.conn)
            .await
            .map_err(source_error)
    }

    /// Ends the snapshot (nothing was written: it is read-only).
    pub async fn close(mut self) {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

fn source_error(e: sqlx::Error) -> SentiaError {
    SentiaError::Source(format!("reading the source: {e}"))
}
