//! A tenant schema's tables as the catalog has them, for the code that copies them table by
//! table (backup, restore, move): names checked, stored columns in order, parents first.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgConnection;
use sqlx::postgres::types::Oid;

use super::ident::{ObjectName, ObjectNameError, SchemaName};

/// A table of a tenant schema with its stored (non-generated) columns in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaTable {
    pub oid: u32,
    pub name: ObjectName,
    pub columns: Vec<ObjectName>,
}

impl SchemaTable {
    /// The columns as a quoted SQL list, for `COPY table (…)`.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(ObjectName::quoted)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The columns' names.
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(ToString::to_string).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CatalogError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Name(#[from] ObjectNameError),
    #[error("the foreign keys of tables {0} form a cycle, so they cannot be loaded parents first")]
    Cycle(String),
}

/// Every table of `schema` but `schema_migrations`, each after the tables its foreign keys
/// point to (ties by name).
///
/// Found from the namespace's dependency entries (`pg_depend` is indexed by the referenced
/// object), then by oid: no scan of `pg_class`, whose size grows with every tenant.
pub(crate) async fn tables(
    conn: &mut PgConnection,
    schema: &SchemaName,
) -> Result<Vec<SchemaTable>, CatalogError> {
    let rows: Vec<(Oid, String, Vec<String>)> = sqlx::query_as(
        "SELECT c.oid, c.relname::text,
                array(SELECT a.attname::text FROM pg_attribute a
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                         AND a.attgenerated = ''
                       ORDER BY a.attnum)
           FROM pg_depend d
           JOIN pg_class c ON c.oid = d.objid
          WHERE d.refclassid = 'pg_namespace'::regclass
            AND d.refobjid = to_regnamespace(quote_ident($1))
            AND d.classid = 'pg_class'::regclass AND d.deptype = 'n'
            AND c.relkind IN ('r', 'p') AND c.relname <> 'schema_migrations'
          ORDER BY c.relname",
    )
    .bind(schema.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let mut tables = BTreeMap::new();
    for (oid, name, columns) in rows {
        let table = SchemaTable {
            oid: oid.0,
            name: ObjectName::parse(&name)?,
            columns: columns
                .iter()
                .map(|c| ObjectName::parse(c))
                .collect::<Result<_, _>>()?,
        };
        tables.insert(name, table);
    }
    let oids: Vec<Oid> = tables.values().map(|t| Oid(t.oid)).collect();
    let edges: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, r.relname::text
           FROM pg_constraint k
           JOIN pg_class c ON c.oid = k.conrelid
           JOIN pg_class r ON r.oid = k.confrelid
          WHERE k.contype = 'f' AND k.conrelid = ANY($1) AND k.conrelid <> k.confrelid",
    )
    .bind(oids)
    .fetch_all(&mut *conn)
    .await?;
    parents_first(tables, &edges)
}

/// `tables` (by name) ordered so that each comes after its parents in `edges`
/// (child, parent); parents outside `tables` are ignored.
fn parents_first(
    mut tables: BTreeMap<String, SchemaTable>,
    edges: &[(String, String)],
) -> Result<Vec<SchemaTable>, CatalogError> {
    let mut waiting: BTreeMap<String, BTreeSet<&str>> = tables
        .keys()
        .map(|t| (t.clone(), BTreeSet::new()))
        .collect();
    for (child, parent) in edges {
        if let Some(parents) = waiting.get_mut(child)
            && tables.contains_key(parent)
        {
            parents.insert(parent.as_str());
        }
    }
    let mut ordered = Vec::with_capacity(tables.len());
    while !waiting.is_empty() {
        let ready: Vec<String> = waiting
            .iter()
            .filter(|(_, parents)| parents.is_empty())
            .map(|(t, _)| t.clone())
            .collect();
        if ready.is_empty() {
            let cycle = waiting.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(CatalogError::Cycle(cycle));
        }
        for name in ready {
            waiting.remove(&name);
            for parents in waiting.values_mut() {
                parents.remove(name.as_str());
            }
            ordered.extend(tables.remove(&name));
        }
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> (String, SchemaTable) {
        let t = SchemaTable {
            oid: 0,
            name: ObjectName::parse(name).unwrap(),
            columns: Vec::new(),
        };
        (name.to_owned(), t)
    }

    fn edge(child: &str, parent: &str) -> (String, String) {
        (child.to_owned(), parent.to_owned())
    }

    #[test]
    fn parents_come_first_ties_by_name() {
        let tables = ["sales", "companies", "products", "inventory"]
            .into_iter()
            .map(table)
            .collect();
        let edges = [
            edge("sales", "products"),
            edge("sales", "companies"),
            edge("products", "companies"),
            edge("inventory", "products"),
            edge("sales", "elsewhere"),
        ];
        let order: Vec<String> = parents_first(tables, &edges)
            .unwrap()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        assert_eq!(order, ["companies", "products", "inventory", "sales"]);
    }

    #[test]
    fn a_cycle_is_an_error_naming_its_tables() {
        let tables = ["a", "b", "c"].into_iter().map(table).collect();
        let edges = [edge("a", "b"), edge("b", "a")];
        match parents_first(tables, &edges) {
            Err(CatalogError::Cycle(names)) => assert_eq!(names, "a, b"),
            other => panic!("{other:?}"),
        }
    }
}
