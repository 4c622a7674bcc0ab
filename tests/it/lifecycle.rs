//! The tenant lifecycle through the library: provision, suspend, reactivate, soft delete,
//! restore, purge, repair — each audited — and the bad-input and fault cases.

use crate::common::TestDb;
use capliquify::audit::Actor;
use capliquify::billing::{SubscriptionStatus, Tier};
use capliquify::tenancy::lifecycle::Repair;
use capliquify::tenancy::{NewTenant, TenancyError, TenantState, registry};

fn actor() -> Actor {
    Actor::operator()
}

#[tokio::test]
async fn provisioning_registers_the_tenant_with_its_tier_defaults_and_a_trial() {
    let db = TestDb::new().await;
    let new = NewTenant::parse("acme", "  ACME Corp  ", Tier::Professional, "org_2abc").unwrap();
    let tenant = db.tenancy().provision(&new, &actor()).await.unwrap();
    assert_eq!(tenant.name, "ACME Corp");
    assert_eq!(tenant.clerk_organization_id, "org_2abc");
    assert_eq!(tenant.subscription_tier, Tier::Professional);
    assert_eq!(tenant.subscription_status, SubscriptionStatus::Trial);
    assert_eq!((tenant.max_users, tenant.max_entities), (Some(25), Some(5)));
    assert_eq!(
        tenant.features,
        serde_json::json!({"ai_forecasting": true, "what_if": true, "api_integrations": true, "advanced_reports": false})
    );
    let trial = tenant.trial_ends_at.unwrap() - tenant.created_at;
    assert_eq!(trial.num_days(), 14);
    assert_eq!(tenant.schema_name, format!("tenant_{}", tenant.id.simple()));
    assert!(db.schema_exists(&tenant.schema_name).await);
    assert_eq!(db.audit_actions(tenant.id).await, ["tenant.provisioned"]);

    let starter = db.tenant("tiny", Tier::Starter).await;
    assert_eq!(
        (starter.max_users, starter.max_entities),
        (Some(5), Some(1))
    );
    assert_eq!(starter.features["ai_forecasting"], false);
    let enterprise = db.tenant("huge", Tier::Enterprise).await;
    assert_eq!(
        (enterprise.max_users, enterprise.max_entities),
        (Some(100), Some(999))
    );
    assert_eq!(enterprise.features["advanced_reports"], true);
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_changes() {
    let db = TestDb::new().await;
    let long = "a".repeat(200);
    for slug in [
        "acme\"; drop schema public;--",
        "ACME",
        long.as_str(),
        "admin",
        "a",
        "",
    ] {
        assert!(
            NewTenant::parse(slug, "Name", Tier::Starter, "org_1").is_err(),
            "{slug:?} must be refused"
        );
    }
    assert!(matches!(
        NewTenant::parse("fine", "   ", Tier::Starter, "org_1"),
        Err(TenancyError::InvalidName(_))
    ));
    assert!(matches!(
        NewTenant::parse("fine", "Name", Tier::Starter, "org with spaces"),
        Err(TenancyError::InvalidClerkOrganization(_))
    ));
    assert_eq!(db.scalar_i64("SELECT count(*) FROM tenants").await, 0);
    assert!(db.schema_exists("public").await);
}

#[tokio::test]
async fn a_duplicate_slug_or_clerk_organization_is_refused_and_leaves_no_schema() {
    let db = TestDb::new().await;
    db.tenant("taken", Tier::Starter).await;
    let same_slug = NewTenant::parse("taken", "Other", Tier::Starter, "org_other").unwrap();
    let err = db
        .tenancy()
        .provision(&same_slug, &actor())
        .await
        .unwrap_err();
    assert!(
        matches!(err, TenancyError::SlugTaken(ref s) if s == "taken"),
        "{err}"
    );
    let same_org = NewTenant::parse("fresh", "Other", Tier::Starter, "org_taken").unwrap();
    let err = db
        .tenancy()
        .provision(&same_org, &actor())
        .await
        .unwrap_err();
    assert!(
        matches!(err, TenancyError::ClerkOrganizationTaken(_)),
        "{err}"
    );
    assert_eq!(db.scalar_i64("SELECT count(*) FROM tenants").await, 1);
    assert_eq!(db.count_tenant_schemas().await, 1);
}

#[tokio::test]
async fn an_unknown_tenant_is_named_in_the_error() {
    let db = TestDb::new().await;
    let err = db
        .tenancy()
        .suspend("ghost", None, &actor())
        .await
        .unwrap_err();
    assert!(matches!(err, TenancyError::UnknownTenant(ref s) if s == "ghost"));
    assert!(err.to_string().contains("\"ghost\""), "{err}");
}

#[tokio::test]
async fn suspend_and_reactivate_restore_the_previous_status() {
    let db = TestDb::new().await;
    let t = db.tenant("pausable", Tier::Starter).await;
    db.exec(&format!(
        "UPDATE tenants SET subscription_status = 'past_due' WHERE id = '{}'",
        t.id
    ))
    .await;
    let tenancy = db.tenancy();
    let suspended = tenancy
        .suspend("pausable", Some("unpaid"), &actor())
        .await
        .unwrap();
    assert_eq!(suspended.state(), TenantState::Suspended);
    assert_eq!(suspended.subscription_status, SubscriptionStatus::Suspended);
    let err = tenancy
        .suspend("pausable", None, &actor())
        .await
        .unwrap_err();
    assert!(matches!(err, TenancyError::WrongState { .. }), "{err}");
    let back = tenancy.reactivate("pausable", &actor()).await.unwrap();
    assert_eq!(back.subscription_status, SubscriptionStatus::PastDue);
    assert_eq!(back.status_before_suspension, None);
    let err = tenancy.reactivate("pausable", &actor()).await.unwrap_err();
    assert!(matches!(err, TenancyError::WrongState { .. }), "{err}");
    assert_eq!(
        db.audit_actions(t.id).await,
        [
            "tenant.provisioned",
            "tenant.suspended",
            "tenant.reactivated"
        ]
    );
    let reason: String = sqlx::query_scalar(
        "SELECT metadata->>'reason' FROM audit_logs WHERE action = 'tenant.suspended'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(reason, "unpaid");
}

#[tokio::test]
async fn soft_delete_keeps_the_data_and_restore_brings_the_tenant_back() {
    let db = TestDb::new().await;
    let t = db.tenant("undoable", Tier::Starter).await;
    db.exec(&format!(
        "INSERT INTO {}.companies (name) VALUES ('kept')",
        t.schema_name
    ))
    .await;
    let tenancy = db.tenancy();
    let deleted = tenancy.soft_delete("undoable", &actor()).await.unwrap();
    assert_eq!(deleted.state(), TenantState::Deleted);
    assert!(registry::list(&db.pool, false).await.unwrap().is_empty());
    assert_eq!(registry::list(&db.pool, true).await.unwrap().len(), 1);
    assert!(matches!(
        tenancy.soft_delete("undoable", &actor()).await,
        Err(TenancyError::WrongState { .. })
    ));
    let restored = tenancy.restore("undoable", false, &actor()).await.unwrap();
    assert_eq!(restored.state(), TenantState::Live);
    assert_eq!(
        db.scalar_i64(&format!("SELECT count(*) FROM {}.companies", t.schema_name))
            .await,
        1
    );
    assert_eq!(
        db.audit_actions(t.id).await,
        ["tenant.provisioned", "tenant.deleted", "tenant.restored"]
    );
}

#[tokio::test]
async fn restore_after_the_grace_period_needs_force() {
    let db = TestDb::new().await;
    let t = db.tenant("too-late", Tier::Starter).await;
    db.exec(&format!(
        "UPDATE tenants SET deleted_at = now() - interval '31 days' WHERE id = '{}'",
        t.id
    ))
    .await;
    let tenancy = db.tenancy();
    let err = tenancy
        .restore("too-late", false, &actor())
        .await
        .unwrap_err();
    assert!(matches!(err, TenancyError::GracePeriodOver { .. }), "{err}");
    assert!(
        db.scalar_bool(&format!(
            "SELECT deleted_at IS NOT NULL FROM tenants WHERE id = '{}'",
            t.id
        ))
        .await
    );
    tenancy.restore("too-late", true, &actor()).await.unwrap();
    assert!(
        db.scalar_bool(&format!(
            "SELECT deleted_at IS NULL FROM tenants WHERE id = '{}'",
            t.id
        ))
        .await
    );
}

#[tokio::test]
async fn purge_waits_for_the_grace_period_unless_forced_and_confirmed() {
    let db = TestDb::new().await;
    let t = db.tenant("doomed", Tier::Starter).await;
    let tenancy = db.tenancy();
    // A live tenant cannot be purged at all.
    let err = tenancy
        .purge("doomed", true, Some("doomed"), &actor())
        .await
        .unwrap_err();
    assert!(matches!(err, TenancyError::WrongState { .. }), "{err}");
    tenancy.soft_delete("doomed", &actor()).await.unwrap();
    // Inside the grace period: refused without --force...
    let err = tenancy
        .purge("doomed", false, None, &actor())
        .await
        .unwrap_err();
    assert!(matches!(err, TenancyError::InGracePeriod { .. }), "{err}");
    // ...and with --force but the wrong confirmation.
    let err = tenancy
        .purge("doomed", true, Some("doome"), &actor())
        .await
        .unwrap_err();
    assert!(
        matches!(err, TenancyError::ConfirmationMismatch { .. }),
        "{err}"
    );
    assert!(db.schema_exists(&t.schema_name).await);
    assert_eq!(db.scalar_i64("SELECT count(*) FROM tenants").await, 1);

    let purged = tenancy
        .purge("doomed", true, Some("doomed"), &actor())
        .await
        .unwrap();
    assert!(purged.schema_dropped);
    assert!(!db.schema_exists(&t.schema_name).await);
    assert_eq!(db.scalar_i64("SELECT count(*) FROM tenants").await, 0);
    // The purge itself stays on record, naming the tenant in its metadata.
    let (slug, tenant_id): (String, Option<uuid::Uuid>) = sqlx::query_as(
        "SELECT metadata->>'slug', tenant_id FROM audit_logs WHERE action = 'tenant.purged'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((slug.as_str(), tenant_id), ("doomed", None));
    // Tenant acts name the tenant by its slug (docs/api.md), the purge too; the id stays
    // in the operator-only metadata of a row no tenant can read.
    let (resource_id, id_in_metadata): (String, String) = sqlx::query_as(
        "SELECT resource_id::text, metadata->>'tenant_id' FROM audit_logs WHERE action = 'tenant.purged'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(resource_id, "doomed");
    assert_eq!(id_in_metadata, t.id.to_string());
    let by_uuid = db
        .scalar_i64(&format!(
            "SELECT count(*) FROM audit_logs WHERE resource_type = 'tenant' AND resource_id = '{}'",
            t.id
        ))
        .await;
    assert_eq!(
        by_uuid, 0,
        "no tenant act is stored under the tenant's UUID"
    );
}

#[tokio::test]
async fn purge_after_the_grace_period_needs_no_force() {
    let db = TestDb::new().await;
    let t = db.tenant("expired", Tier::Starter).await;
    db.exec(&format!(
        "UPDATE tenants SET deleted_at = now() - interval '30 days 1 minute' WHERE id = '{}'",
        t.id
    ))
    .await;
    db.tenancy()
        .purge("expired", false, None, &actor())
        .await
        .unwrap();
    assert!(!db.schema_exists(&t.schema_name).await);
}

#[tokio::test]
async fn the_grace_period_is_configurable() {
    let db = TestDb::new().await;
    let t = db.tenant("short-grace", Tier::Starter).await;
    db.exec(&format!(
        "UPDATE tenants SET deleted_at = now() - interval '8 days' WHERE id = '{}'",
        t.id
    ))
    .await;
    let week = capliquify::tenancy::Tenancy::new(db.pool.clone(), 7);
    week.purge("short-grace", false, None, &actor())
        .await
        .unwrap();
    assert!(!db.schema_exists(&t.schema_name).await);
}

#[tokio::test]
async fn repair_recreates_a_missing_schema() {
    let db = TestDb::new().await;
    let t = db.tenant("lost-schema", Tier::Starter).await;
    db.exec(&format!("DROP SCHEMA {} CASCADE", t.schema_name))
        .await;
    let (tenant, repair) = db.tenancy().repair("lost-schema", &actor()).await.unwrap();
    assert!(matches!(repair, Repair::Recreated));
    assert_eq!(tenant.schema_version, Some(crate::common::version(0)));
    assert_eq!(db.check("tenant_schemas_current").await.0, "PASS");
    assert_eq!(
        db.audit_actions(t.id).await,
        ["tenant.provisioned", "tenant.repaired"]
    );
}

#[tokio::test]
async fn repair_rebuilds_an_empty_half_made_schema() {
    let db = TestDb::new().await;
    let t = db.tenant("half-made", Tier::Starter).await;
    // The guide's "migration failed mid-way": some tables, no migration history.
    db.exec(&format!(
        "DROP SCHEMA {s} CASCADE; CREATE SCHEMA {s}; CREATE TABLE {s}.companies (id uuid);",
        s = t.schema_name
    ))
    .await;
    let (_, repair) = db.tenancy().repair("half-made", &actor()).await.unwrap();
    match repair {
        Repair::Rebuilt { missing_tables } => assert!(missing_tables.contains(&"sales".into())),
        other => panic!("expected a rebuild, got {other:?}"),
    }
    assert_eq!(db.check("tenant_schemas_current").await.0, "PASS");
}

#[tokio::test]
async fn repair_leaves_an_unmanaged_schema_with_data_untouched() {
    let db = TestDb::new().await;
    let t = db.tenant("has-data", Tier::Starter).await;
    db.exec(&format!(
        "DROP SCHEMA {s} CASCADE; CREATE SCHEMA {s};
         CREATE TABLE {s}.companies (id int); INSERT INTO {s}.companies VALUES (1);",
        s = t.schema_name
    ))
    .await;
    let err = db.tenancy().repair("has-data", &actor()).await.unwrap_err();
    assert!(
        matches!(err, TenancyError::UnmanagedSchemaWithData { ref tables, .. } if tables == "companies"),
        "{err}"
    );
    assert_eq!(
        db.scalar_i64(&format!("SELECT count(*) FROM {}.companies", t.schema_name))
            .await,
        1
    );
}

#[tokio::test]
async fn repair_applies_pending_migrations_and_reports_a_healthy_tenant() {
    let db = TestDb::new().await;
    db.tenant("behind", Tier::Starter).await;
    let (_, repair) = db.tenancy().repair("behind", &actor()).await.unwrap();
    assert!(matches!(repair, Repair::Healthy));
    let migrations = crate::common::tenant_migrations_with(&[(
        crate::common::version(1),
        "add notes",
        "ALTER TABLE products ADD COLUMN notes text;",
    )]);
    capliquify::tenancy::migrate::sync_catalog(&db.pool, &migrations)
        .await
        .unwrap();
    let (tenant, repair) = db.tenancy().repair("behind", &actor()).await.unwrap();
    assert!(
        matches!(repair, Repair::Migrated { applied: 1 }),
        "{repair:?}"
    );
    assert_eq!(tenant.schema_version, Some(crate::common::version(1)));
}

#[tokio::test]
async fn twenty_tenants_provisioned_concurrently_all_succeed() {
    let db = TestDb::new().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let tenancy = db.tenancy();
        tasks.spawn(async move {
            let new = NewTenant::parse(
                &format!("burst-{i:02}"),
                "Burst",
                Tier::Starter,
                &format!("org_burst_{i}"),
            )
            .unwrap();
            tenancy.provision(&new, &Actor::operator()).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(db.scalar_i64("SELECT count(*) FROM tenants").await, 20);
    assert_eq!(db.count_tenant_schemas().await, 20);
    for (name, result, details) in db.verify().await {
        assert_eq!(result, "PASS", "{name}: {details}");
    }
}

#[tokio::test]
async fn a_failing_tenant_migration_leaves_no_half_made_tenant() {
    let db = TestDb::new().await;
    let migrations = crate::common::tenant_migrations_with(&[(
        crate::common::version(1),
        "fails at the end",
        "CREATE TABLE extra (id int); SELECT 1 / 0;",
    )]);
    capliquify::tenancy::migrate::sync_catalog(&db.pool, &migrations)
        .await
        .unwrap();
    let new = NewTenant::parse("unlucky", "Unlucky", Tier::Starter, "org_unlucky").unwrap();
    let err = db.tenancy().provision(&new, &actor()).await.unwrap_err();
    assert!(err.to_string().contains("division by zero"), "{err}");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM tenants").await, 0);
    assert_eq!(db.count_tenant_schemas().await, 0);
    assert_eq!(db.scalar_i64("SELECT count(*) FROM audit_logs").await, 0);
}

#[tokio::test]
async fn a_backend_killed_mid_provisioning_leaves_no_half_made_tenant() {
    let db = TestDb::new().await;
    // A tenant migration that takes long enough to be caught in the act.
    let migrations = crate::common::tenant_migrations_with(&[(
        crate::common::version(1),
        "slow",
        "CREATE TABLE extra (id int); SELECT pg_sleep(30);",
    )]);
    capliquify::tenancy::migrate::sync_catalog(&db.pool, &migrations)
        .await
        .unwrap();
    let tenancy = db.tenancy();
    let provisioning = tokio::spawn(async move {
        let new = NewTenant::parse("killed", "Killed", Tier::Starter, "org_killed").unwrap();
        tenancy.provision(&new, &Actor::operator()).await
    });
    let killed = crate::common::kill_backend_running(&db, "%create_tenant_schema%").await;
    assert!(killed, "the provisioning backend was found and terminated");
    let result = provisioning.await.unwrap();
    assert!(
        result.is_err(),
        "provisioning must fail when its backend dies"
    );
    assert_eq!(db.scalar_i64("SELECT count(*) FROM tenants").await, 0);
    assert_eq!(db.count_tenant_schemas().await, 0);
    for (name, result, details) in db.verify().await {
        assert_eq!(result, "PASS", "{name}: {details}");
    }
}

#[tokio::test]
async fn public_enums_bind_and_decode_inside_a_tenant_transaction() {
    let db = TestDb::new().await;
    let t = db.tenant("enum-scope", Tier::Starter).await;
    // A fresh connection has no type OIDs cached: the first lookup happens inside the
    // tenant transaction, whose search_path lacks `public`.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let mut tx = capliquify::db::scope::begin(&pool, &t.scope().unwrap())
        .await
        .unwrap();
    let (role, tier): (capliquify::access::Role, Tier) = sqlx::query_as("SELECT $1, $2")
        .bind(capliquify::access::Role::Admin)
        .bind(Tier::Enterprise)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        (role, tier),
        (capliquify::access::Role::Admin, Tier::Enterprise)
    );
    // (The tenant's role cannot read public.tenants; the type itself is public.)
    let status: SubscriptionStatus =
        sqlx::query_scalar("SELECT 'past_due'::public.subscription_status")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(status, SubscriptionStatus::PastDue);
    let (path, role): (String, String) =
        sqlx::query_as("SELECT current_setting('search_path'), current_user::text")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(path, t.schema_name);
    assert_eq!(role, capliquify::db::scope::role_name(t.id));
    tx.commit().await.unwrap();
    let (path, role): (String, String) =
        sqlx::query_as("SELECT current_setting('search_path'), current_user::text")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_ne!(
        path, t.schema_name,
        "the search path does not outlive the transaction"
    );
    assert_ne!(
        role,
        capliquify::db::scope::role_name(t.id),
        "the role does not outlive the transaction"
    );
}

#[tokio::test]
async fn the_suspension_source_migration_reads_who_suspended_from_the_audit_trail() {
    use capliquify::tenancy::migrate::PUBLIC_MIGRATIONS;
    let db = TestDb::empty().await;
    PUBLIC_MIGRATIONS.run_to(8, &db.pool).await.unwrap();
    // A tenant's suspend/reactivate audit rows as (action, actor kind), oldest first.
    type Acts = &'static [(&'static str, &'static str)];
    // (slug, status, its audit rows, the source the migration should record)
    let cases: [(&str, &str, Acts, Option<&str>); 5] = [
        (
            "by-operator",
            "suspended",
            &[("tenant.suspended", "operator")],
            Some("operator"),
        ),
        (
            "by-job",
            "suspended",
            &[("tenant.suspended", "system")],
            Some("lifecycle"),
        ),
        // A paused Stripe subscription wrote the status without a tenant.suspended row.
        ("by-pause", "suspended", &[], Some("billing")),
        (
            "paused-after-operator",
            "suspended",
            &[
                ("tenant.suspended", "operator"),
                ("tenant.reactivated", "operator"),
            ],
            Some("billing"),
        ),
        ("live", "active", &[("tenant.suspended", "operator")], None),
    ];
    for (slug, status, acts, _) in &cases {
        let id: uuid::Uuid = sqlx::query_scalar(
            "INSERT INTO public.tenants (slug, name, schema_name, clerk_organization_id, subscription_tier, subscription_status)
             VALUES ($1, $1, $2, 'org_' || $1, 'starter', $3::public.subscription_status) RETURNING id",
        )
        .bind(slug)
        .bind(format!("tenant_{}", slug.replace('-', "_")))
        .bind(status)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        for (i, (action, kind)) in acts.iter().enumerate() {
            db.exec(&format!(
                "INSERT INTO public.audit_logs (tenant_id, action, resource_type, resource_id, metadata, created_at)
                 VALUES ('{id}', '{action}', 'tenant', '{slug}', '{{\"actor\": {{\"kind\": \"{kind}\"}}}}',
                         now() - interval '{} hours')",
                10 - i
            ))
            .await;
        }
    }
    PUBLIC_MIGRATIONS.run_to(9, &db.pool).await.unwrap();
    for (slug, _, _, expected) in &cases {
        let got: Option<String> =
            sqlx::query_scalar("SELECT suspended_by::text FROM public.tenants WHERE slug = $1")
                .bind(slug)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(got.as_deref(), *expected, "{slug}");
    }
}
