//! The tenant SQL functions work from plain SQL, as operators use them from `psql`.

use crate::common::TestDb;
use capliquify::billing::Tier;
use sqlx::Row;

const TENANT_TABLES: [&str; 10] = [
    "api_credentials",
    "companies",
    "forecasts",
    "imports",
    "inventory",
    "products",
    "sales",
    "scenarios",
    "user_preferences",
    "working_capital_metrics",
];

async fn tables_of(db: &TestDb, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY tablename",
    )
    .bind(schema)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_guides_sql_flow_works_from_plain_sql() {
    let db = TestDb::new().await;
    // Step 1 of the guide: register the tenant with a chosen schema name.
    let row = sqlx::query(
        "INSERT INTO public.tenants (slug, name, schema_name, clerk_organization_id,
             subscription_tier, subscription_status, trial_ends_at, max_users, max_entities, features)
         VALUES ('acme-corp', 'ACME Corporation', 'tenant_acme_corp', 'org_2abc123def456',
             'professional', 'trial', NOW() + INTERVAL '14 days', 10, 1000,
             '{\"ai_forecasting\": true, \"what_if\": true}'::JSONB)
         RETURNING id, schema_name",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let id: uuid::Uuid = row.get("id");
    // Step 2: create the schema; the registered name is used.
    let created: String = sqlx::query_scalar("SELECT create_tenant_schema($1)")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(created, "tenant_acme_corp");

    // Sample rows with schema-qualified SQL, as in the guide's testing script.
    db.exec(
        "INSERT INTO tenant_acme_corp.companies (id, name, currency, fiscal_year_end)
             VALUES ('00000000-0000-0000-0000-0000000000c1', 'ACME Manufacturing', 'USD', '12-31')
;
         INSERT INTO tenant_acme_corp.products (id, company_id, sku, name, category, unit_cost, unit_price)
             VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000c1',
                     'WID-001', 'Widget', 'components', 12.50, 29.99);
         INSERT INTO tenant_acme_corp.sales (company_id, product_id, sale_date, quantity, unit_price, total_amount, channel)
             VALUES ('00000000-0000-0000-0000-0000000000c1', '00000000-0000-0000-0000-0000000000a1',
                     '2026-10-01', 100, 29.99, 2999.00, 'direct');
         INSERT INTO tenant_acme_corp.inventory (company_id, product_id, warehouse_location, quantity_on_hand, quantity_reserved, unit_cost)
             VALUES ('00000000-0000-0000-0000-0000000000c1', '00000000-0000-0000-0000-0000000000a1', 'A1', 500, 120, 12.50);
         INSERT INTO tenant_acme_corp.forecasts (company_id, product_id, forecast_date, forecast_type, model_type, predicted_value, lower_bound, upper_bound, confidence_level)
             VALUES ('00000000-0000-0000-0000-0000000000c1', '00000000-0000-0000-0000-0000000000a1',
                     '2026-12-01', 'demand', 'ensemble', 450, 380, 520, 85.5);
         INSERT INTO tenant_acme_corp.working_capital_metrics (company_id, period_date, period_type, cash, accounts_receivable, inventory, accounts_payable, short_term_debt, working_capital, current_ratio, quick_ratio, days_sales_outstanding, days_inventory_outstanding, days_payables_outstanding, cash_conversion_cycle)
             VALUES ('00000000-0000-0000-0000-0000000000c1', '2026-10-31', 'monthly', 250000, 180000, 320000, 140000, 60000, 550000, 3.75, 2.15, 45, 62, 38, 69);",
    )
    .await;

    // Generated columns compute from the row.
    let (available, value): (i32, String) = sqlx::query_as(
        "SELECT quantity_available, total_value::text FROM tenant_acme_corp.inventory",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((available, value.as_str()), (380, "6250.00"));

    // The verification summary the guide prints after installation.
    let summary: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT check_name, count, expected FROM tenancy_summary()")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(summary[0].0, "Public Schema Tables");
    assert_eq!(summary[0].1, 4);
    assert_eq!(
        summary[1],
        ("Tenant Schemas Created".into(), 1, summary[1].2.clone())
    );
    assert_eq!(summary[2].1, 1);

    for (name, result, details) in db.verify().await {
        assert_eq!(result, "PASS", "{name}: {details}");
    }
    let listed: Vec<(String, i64)> =
        sqlx::query_as("SELECT schema_name::text, table_count FROM list_tenant_schemas()")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(listed, vec![("tenant_acme_corp".to_owned(), 11)]);
}

#[tokio::test]
async fn create_tenant_schema_builds_all_ten_tables_and_records_the_version() {
    let db = TestDb::new().await;
    let tenant = db.tenant("ten-tables", Tier::Starter).await;
    let mut tables = tables_of(&db, &tenant.schema_name).await;
    tables.retain(|t| t != "schema_migrations");
    assert_eq!(tables, TENANT_TABLES);
    let recorded = db
        .scalar_i64(&format!(
            "SELECT max(version) FROM {}.schema_migrations",
            tenant.schema_name
        ))
        .await;
    assert_eq!(recorded, crate::common::version(0));
    assert_eq!(tenant.schema_version, Some(crate::common::version(0)));
    // updated_at triggers fire.
    db.exec(&format!(
        "INSERT INTO {s}.companies (name, updated_at) VALUES ('x', '2000-01-01');
         UPDATE {s}.companies SET name = 'y';",
        s = tenant.schema_name
    ))
    .await;
    assert!(
        db.scalar_bool(&format!(
            "SELECT updated_at > now() - interval '1 minute' FROM {}.companies",
            tenant.schema_name
        ))
        .await
    );
}

#[tokio::test]
async fn the_required_table_list_matches_a_fresh_schema() {
    let db = TestDb::new().await;
    let tenant = db.tenant("required-tables", Tier::Starter).await;
    let required: Vec<String> =
        sqlx::query_scalar("SELECT unnest(tenant_required_tables()) ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(required, tables_of(&db, &tenant.schema_name).await);
}

#[tokio::test]
async fn create_tenant_schema_without_a_registry_row_uses_the_uuid_name() {
    let db = TestDb::new().await;
    let name: String =
        sqlx::query_scalar("SELECT create_tenant_schema('123e4567-e89b-12d3-a456-426614174000')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(name, "tenant_123e4567e89b12d3a456426614174000");
    assert_eq!(tables_of(&db, &name).await.len(), 11);
    // Unregistered, so the isolation check reports it as an orphan.
    let (result, details) = db.check("no_orphan_schemas").await;
    assert_eq!(result, "FAIL");
    assert!(details.contains(&name), "{details}");
}

#[tokio::test]
async fn create_tenant_schema_refuses_an_existing_schema_and_changes_nothing() {
    let db = TestDb::new().await;
    let tenant = db.tenant("exists-already", Tier::Starter).await;
    db.exec(&format!(
        "INSERT INTO {}.companies (name) VALUES ('keep me')",
        tenant.schema_name
    ))
    .await;
    let err = sqlx::query("SELECT create_tenant_schema($1)")
        .bind(tenant.id)
        .execute(&db.pool)
        .await
        .unwrap_err();
    let db_err = err.as_database_error().unwrap();
    assert_eq!(db_err.code().as_deref(), Some("42P06"));
    assert!(
        db_err.message().contains("already exists"),
        "{}",
        db_err.message()
    );
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM {}.companies",
            tenant.schema_name
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn create_tenant_schema_refuses_an_invalid_registered_name() {
    let db = TestDb::new().await;
    // The registry's CHECK already refuses it...
    let err = sqlx::query(
        "INSERT INTO tenants (slug, name, schema_name, clerk_organization_id, subscription_tier, subscription_status)
         VALUES ('bad-name', 'Bad', 'tenant_x\"; DROP SCHEMA public; --', 'org_bad', 'starter', 'trial')",
    )
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some("23514")
    );
    // ...and the function checks names it derives or is given.
    let err = sqlx::query("SELECT migrate_tenant_schema('public')")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid tenant schema name"),
        "{err}"
    );
    assert!(db.schema_exists("public").await);
}

#[tokio::test]
async fn create_tenant_schema_needs_the_catalog() {
    let db = TestDb::new().await;
    db.exec("DELETE FROM tenant_migrations").await;
    let err = sqlx::query("SELECT create_tenant_schema(gen_random_uuid())")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("catalog is empty"), "{err}");
    assert_eq!(db.count_tenant_schemas().await, 0);
}

#[tokio::test]
async fn delete_tenant_schema_drops_only_soft_deleted_tenants() {
    let db = TestDb::new().await;
    let tenant = db.tenant("to-delete", Tier::Starter).await;
    let err = sqlx::query("SELECT delete_tenant_schema($1)")
        .bind(tenant.id)
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is live"), "{err}");
    assert!(db.schema_exists(&tenant.schema_name).await);

    db.exec(&format!(
        "UPDATE tenants SET deleted_at = now() WHERE id = '{}'",
        tenant.id
    ))
    .await;
    let dropped: bool = sqlx::query_scalar("SELECT delete_tenant_schema($1)")
        .bind(tenant.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(dropped);
    assert!(!db.schema_exists(&tenant.schema_name).await);
    let again: bool = sqlx::query_scalar("SELECT delete_tenant_schema($1)")
        .bind(tenant.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!again, "false when the schema is absent");
    let unknown: bool = sqlx::query_scalar("SELECT delete_tenant_schema(gen_random_uuid())")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!unknown);
}

#[tokio::test]
async fn list_tenant_schemas_reports_tables_and_size() {
    let db = TestDb::new().await;
    let a = db.tenant("list-a", Tier::Starter).await;
    let b = db.tenant("list-b", Tier::Starter).await;
    db.exec(&format!(
        "INSERT INTO {}.companies (name) SELECT 'c' || g FROM generate_series(1, 2000) g",
        a.schema_name
    ))
    .await;
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT schema_name::text, table_count, size_mb::float8 FROM list_tenant_schemas()",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    let size = |s: &str| rows.iter().find(|r| r.0 == s).unwrap().2;
    assert!(rows.iter().all(|r| r.1 == 11));
    assert!(size(&a.schema_name) > size(&b.schema_name));
}

#[tokio::test]
async fn verify_tenant_isolation_finds_each_kind_of_problem() {
    let db = TestDb::new().await;
    let a = db.tenant("verify-a", Tier::Starter).await;
    let b = db.tenant("verify-b", Tier::Starter).await;
    for (name, result, details) in db.verify().await {
        assert_eq!(result, "PASS", "{name}: {details}");
    }

    // A foreign key from one tenant into another.
    db.exec(&format!(
        "ALTER TABLE {a}.companies ADD COLUMN other uuid REFERENCES {b}.companies (id)",
        a = a.schema_name,
        b = b.schema_name
    ))
    .await;
    let (result, details) = db.check("no_cross_schema_references").await;
    assert_eq!(result, "FAIL");
    assert!(details.contains(&b.schema_name), "{details}");
    db.exec(&format!(
        "ALTER TABLE {}.companies DROP COLUMN other",
        a.schema_name
    ))
    .await;

    // A view reading public.users.
    db.exec(&format!(
        "CREATE VIEW {}.all_users AS SELECT email FROM public.users",
        a.schema_name
    ))
    .await;
    let (result, details) = db.check("no_cross_schema_references").await;
    assert_eq!(result, "FAIL");
    assert!(details.contains("all_users"), "{details}");
    db.exec(&format!("DROP VIEW {}.all_users", a.schema_name))
        .await;
    assert_eq!(db.check("no_cross_schema_references").await.0, "PASS");

    // A grant to PUBLIC.
    db.exec(&format!(
        "GRANT SELECT ON {}.sales TO PUBLIC",
        b.schema_name
    ))
    .await;
    let (result, details) = db.check("no_public_grants").await;
    assert_eq!(result, "FAIL");
    assert!(details.contains("sales"), "{details}");
    db.exec(&format!(
        "REVOKE SELECT ON {}.sales FROM PUBLIC",
        b.schema_name
    ))
    .await;
    assert_eq!(db.check("no_public_grants").await.0, "PASS");

    // A missing table, then a missing schema.
    db.exec(&format!("DROP TABLE {}.scenarios", a.schema_name))
        .await;
    let (result, details) = db.check("tenant_schemas_current").await;
    assert_eq!(result, "FAIL");
    assert!(
        details.contains("verify-a: missing tables scenarios"),
        "{details}"
    );
    db.exec(&format!("DROP SCHEMA {} CASCADE", b.schema_name))
        .await;
    let (_, details) = db.check("tenant_schemas_current").await;
    assert!(details.contains("verify-b: schema"), "{details}");

    // An orphan schema.
    db.exec("CREATE SCHEMA tenant_orphan").await;
    let (result, details) = db.check("no_orphan_schemas").await;
    assert_eq!(result, "FAIL");
    assert!(details.contains("tenant_orphan"), "{details}");
}

#[tokio::test]
async fn verify_tenant_isolation_reports_a_tenant_behind_the_catalog() {
    let db = TestDb::new().await;
    db.tenant("behind", Tier::Starter).await;
    let next = crate::common::version(1);
    db.exec(&format!(
        "INSERT INTO tenant_migrations (version, description, sql, checksum)
         VALUES ({next}, 'later', 'SELECT 1', sha384(convert_to('SELECT 1', 'UTF8')))"
    ))
    .await;
    let (result, details) = db.check("tenant_schemas_current").await;
    assert_eq!(result, "FAIL");
    let expected = format!("behind: at version {} of {next}", crate::common::version(0));
    assert!(details.contains(&expected), "{details}");
}

#[tokio::test]
async fn the_catalog_refuses_sql_that_does_not_match_its_checksum() {
    let db = TestDb::new().await;
    let err = sqlx::query(
        "UPDATE tenant_migrations SET sql = sql || ' DROP TABLE companies;' WHERE version = 1",
    )
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some("23514")
    );
}

#[tokio::test]
async fn migrate_tenant_schema_refuses_a_schema_whose_history_drifted() {
    let db = TestDb::new().await;
    // An unregistered schema: the function reads its history itself.
    let schema: String = sqlx::query_scalar("SELECT create_tenant_schema(gen_random_uuid())")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    db.exec(&format!(
        "UPDATE {schema}.schema_migrations SET checksum = '\\x00'"
    ))
    .await;
    let err = sqlx::query("SELECT migrate_tenant_schema($1)")
        .bind(&schema)
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[tokio::test]
async fn doctor_finds_a_registered_tenant_whose_history_drifted() {
    let db = TestDb::new().await;
    let tenant = db.tenant("drifted", Tier::Starter).await;
    let report = capliquify::tenancy::verify::report(&db.pool).await.unwrap();
    assert!(report.healthy(), "{:?}", report.checks);
    db.exec(&format!(
        "UPDATE {}.schema_migrations SET checksum = '\\x00' WHERE version = 1",
        tenant.schema_name
    ))
    .await;
    let report = capliquify::tenancy::verify::report(&db.pool).await.unwrap();
    let check = report
        .checks
        .iter()
        .find(|c| c.test_name == "tenant_histories_match_catalog")
        .unwrap();
    assert_eq!(check.result, "FAIL");
    assert!(
        check.details.contains("drifted: migration 1"),
        "{}",
        check.details
    );
}
