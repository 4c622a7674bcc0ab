//! The tenant lifecycle: provision → (suspend ⇄ reactivate) → soft delete → undelete or
//! purge, plus repair. Every act is one transaction that also writes its audit row.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::TenancyError;
use super::ident::{SchemaName, TenantSlug};
use super::registry::{self, TENANT_COLUMNS, Tenant, TenantState};
use super::suspension::SuspendedBy;
use crate::audit::{self, Actor, Entry};
use crate::billing::{TRIAL_DAYS, Tier};

/// What a new tenant is made of. Build it with [`NewTenant::parse`].
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub slug: TenantSlug,
    pub name: String,
    pub tier: Tier,
    pub clerk_organization_id: String,
}

impl NewTenant {
    pub fn parse(
        slug: &str,
        name: &str,
        tier: Tier,
        clerk_org: &str,
    ) -> Result<Self, TenancyError> {
        let slug = TenantSlug::parse(slug)?;
        let name = name.trim();
        if name.is_empty() {
            return Err(TenancyError::InvalidName("it is empty"));
        }
        if name.chars().count() > 255 {
            return Err(TenancyError::InvalidName(
                "it is longer than 255 characters",
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(TenancyError::InvalidName("it contains control characters"));
        }
        let org_ok =
            (1..=255).contains(&clerk_org.len()) && clerk_org.chars().all(|c| c.is_ascii_graphic());
        if !org_ok {
            return Err(TenancyError::InvalidClerkOrganization(
                clerk_org.chars().take(60).collect(),
            ));
        }
        Ok(Self {
            slug,
            name: name.to_owned(),
            tier,
            clerk_organization_id: clerk_org.to_owned(),
        })
    }
}

/// The longest trial extension one act grants ([`Tenancy::extend_trial`]).
pub const MAX_TRIAL_EXTENSION_DAYS: u32 = 90;
// TenancyError::InvalidTrialExtension's message and `tenant extend-trial --days` say 90.
const _: () = assert!(MAX_TRIAL_EXTENSION_DAYS == 90);

/// What `repair` found and did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Repair {
    /// The schema was missing and was created empty at the newest version.
    Recreated,
    /// The schema lacked its migration history and held no data: dropped and recreated.
    Rebuilt { missing_tables: Vec<String> },
    /// Pending migrations were applied.
    Migrated { applied: i32 },
    /// The tenant's database role was missing or lacked rights on its tables: granted.
    RoleGranted,
    /// Nothing was wrong.
    Healthy,
}

impl Repair {
    /// What was found and done, in words (`tenant repair` prints it, the console shows it).
    pub fn describe(&self) -> String {
        match self {
            Self::Healthy => {
                "nothing to repair (schema present, migrated, role in place)".to_owned()
            }
            Self::Recreated => {
                "the missing schema was created, empty, at the newest version".to_owned()
            }
            Self::Rebuilt { missing_tables } => format!(
                "the half-made schema (no migration history, no data; missing {}) was dropped and rebuilt",
                if missing_tables.is_empty() {
                    "no table".to_owned()
                } else {
                    missing_tables.join(", ")
                }
            ),
            Self::Migrated { applied } => format!("{applied} pending migration(s) applied"),
            Self::RoleGranted => {
                "the tenant's database role was created or granted its rights again".to_owned()
            }
        }
    }
}

/// Tenant lifecycle operations on one database.
#[derive(Debug, Clone)]
pub struct Tenancy {
    pool: PgPool,
    grace: Duration,
}

impl Tenancy {
    /// `grace_days`: how long a soft-deleted tenant can be restored before it may be purged.
    pub fn new(pool: PgPool, grace_days: u32) -> Self {
        Self {
            pool,
            grace: Duration::days(i64::from(grace_days)),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Registers the tenant and creates its schema in one transaction, with its audit row.
    /// The tier's limits and features and a 14-day trial come from [`Tier::plan`].
    pub async fn provision(&self, new: &NewTenant, actor: &Actor) -> Result<Tenant, TenancyError> {
        let mut tx = self.pool.begin().await?;
        let tenant = provision_in(&mut tx, new, actor).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    /// Switches a live tenant off, remembering its status for [`Tenancy::reactivate`] and
    /// who switched it off ([`SuspendedBy::of`] the actor): billing lifts the lifecycle
    /// job's suspensions when the customer pays, never an operator's. An operator
    /// suspending a tenant the job or billing suspended takes the suspension over, so that
    /// it stands.
    pub async fn suspend(
        &self,
        slug: &str,
        reason: Option<&str>,
        actor: &Actor,
    ) -> Result<Tenant, TenancyError> {
        let by = SuspendedBy::of(actor);
        self.transition(
            slug,
            actor,
            "tenant.suspended",
            json!({ "reason": reason, "suspended_by": by }),
            move |t| {
                let taken_over = t.state() == TenantState::Suspended
                    && by == SuspendedBy::Operator
                    && t.suspended_by.is_some_and(|was| was != SuspendedBy::Operator);
                if taken_over {
                    // A pause the operator takes over still holds after the operator's
                    // reactivation: the tenant then returns to billing's suspension.
                    return Ok("UPDATE public.tenants
                       SET status_before_suspension = CASE WHEN suspended_by = 'billing'
                               THEN 'suspended' ELSE status_before_suspension END,
                           suspended_by = 'operator'
                     WHERE id = $1");
                }
                require(t, TenantState::Live, "only a live tenant can be suspended")?;
                Ok(match by {
                    SuspendedBy::Operator => {
                        "UPDATE public.tenants SET status_before_suspension = subscription_status,
                            subscription_status = 'suspended', suspended_by = 'operator' WHERE id = $1"
                    }
                    SuspendedBy::Lifecycle => {
                        "UPDATE public.tenants SET status_before_suspension = subscription_status,
                            subscription_status = 'suspended', suspended_by = 'lifecycle' WHERE id = $1"
                    }
                    SuspendedBy::Billing => {
                        "UPDATE public.tenants SET status_before_suspension = subscription_status,
                            subscription_status = 'suspended', suspended_by = 'billing' WHERE id = $1"
                    }
                })
            },
        )
        .await
    }

    /// Returns a suspended tenant to the status it had before, whoever suspended it. A
    /// subscription Stripe paused meanwhile keeps it suspended, by billing.
    pub async fn reactivate(&self, slug: &str, actor: &Actor) -> Result<Tenant, TenancyError> {
        self.transition(slug, actor, "tenant.reactivated", json!({}), |t| {
            require(
                t,
                TenantState::Suspended,
                "only a suspended tenant can be reactivated",
            )?;
            Ok("UPDATE public.tenants
                   SET subscription_status = coalesce(status_before_suspension, 'active'),
                       suspended_by = CASE WHEN status_before_suspension = 'suspended'
                                           THEN 'billing'::public.suspension_source END,
                       status_before_suspension = NULL
                 WHERE id = $1")
        })
        .await
    }

    /// Moves the end of a live trial `days` later (from its current end, or from now when
    /// that has passed): a sales conversation that needs more time. At most
    /// [`MAX_TRIAL_EXTENSION_DAYS`] at once; only a live tenant on trial.
    pub async fn extend_trial(
        &self,
        slug: &str,
        days: u32,
        actor: &Actor,
    ) -> Result<Tenant, TenancyError> {
        if !(1..=MAX_TRIAL_EXTENSION_DAYS).contains(&days) {
            return Err(TenancyError::InvalidTrialExtension(days));
        }
        let mut tx = self.pool.begin().await?;
        let before = registry::fetch(&mut tx, slug, true).await?;
        if before.state() != TenantState::Live
            || before.subscription_status != crate::billing::SubscriptionStatus::Trial
        {
            return Err(wrong_state(
                &before,
                "only a live tenant on trial can have its trial extended",
            ));
        }
        let ends: DateTime<Utc> = sqlx::query_scalar(
            "UPDATE public.tenants
                SET trial_ends_at = greatest(coalesce(trial_ends_at, now()), now())
                                    + make_interval(days => $2)
              WHERE id = $1 RETURNING trial_ends_at",
        )
        .bind(before.id)
        .bind(days as i32)
        .fetch_one(&mut *tx)
        .await?;
        let metadata = json!({
            "slug": before.slug, "days": days,
            "from_trial_ends_at": before.trial_ends_at, "trial_ends_at": ends,
        });
        audit::record(
            &mut tx,
            actor,
            entry(&before, "tenant.trial_extended", metadata),
        )
        .await?;
        let after = registry::fetch(&mut tx, slug, false).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Puts a tenant that is not soft-deleted on `tier`, with that plan's limits and
    /// features ([`super::members::apply_plan`], as billing does). Billing decides the tier
    /// of a tenant with a Stripe subscription: its next subscription event sets the tier of
    /// its price again.
    pub async fn set_tier(
        &self,
        slug: &str,
        tier: Tier,
        actor: &Actor,
    ) -> Result<Tenant, TenancyError> {
        let mut tx = self.pool.begin().await?;
        let before = registry::fetch(&mut tx, slug, true).await?;
        if before.state() == TenantState::Deleted {
            return Err(wrong_state(&before, "undelete it first"));
        }
        if before.subscription_tier == tier {
            return Err(wrong_state(&before, "it is already on that tier"));
        }
        super::members::apply_plan(&mut tx, before.id, tier).await?;
        let metadata = json!({
            "slug": before.slug, "from_tier": before.subscription_tier, "to_tier": tier,
        });
        audit::record(
            &mut tx,
            actor,
            entry(&before, "tenant.tier_changed", metadata),
        )
        .await?;
        let after = registry::fetch(&mut tx, slug, false).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Soft delete: the tenant becomes unusable, its data stays until purged.
    pub async fn soft_delete(&self, slug: &str, actor: &Actor) -> Result<Tenant, TenancyError> {
        let mut tx = self.pool.begin().await?;
        let tenant = self.soft_delete_in(&mut tx, slug, actor).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    /// Undoes a soft delete within the grace period (or later with `force`).
    pub async fn restore(
        &self,
        slug: &str,
        force: bool,
        actor: &Actor,
    ) -> Result<Tenant, TenancyError> {
        let grace = self.grace;
        self.transition(
            slug,
            actor,
            "tenant.restored",
            json!({ "forced": force }),
            |t| {
                let deleted_at = deleted_at(t)?;
                let ended = deleted_at + grace;
                if !force && Utc::now() > ended {
                    return Err(TenancyError::GracePeriodOver {
                        slug: t.slug.clone(),
                        ended,
                    });
                }
                Ok("UPDATE public.tenants SET deleted_at = NULL WHERE id = $1")
            },
        )
        .await
    }

    /// Drops a soft-deleted tenant's schema and registry row, after the grace period, or
    /// earlier when `force` and `confirm` repeats the slug. Irreversible.
    pub async fn purge(
        &self,
        slug: &str,
        force: bool,
        confirm: Option<&str>,
        actor: &Actor,
    ) -> Result<PurgedTenant, TenancyError> {
        let mut tx = self.pool.begin().await?;
        let tenant = registry::fetch(&mut tx, slug, true).await?;
        require_home(&tenant, "purge")?;
        let until = deleted_at(&tenant)? + self.grace;
        let early = Utc::now() < until;
        if early && !force {
            return Err(TenancyError::InGracePeriod {
                slug: tenant.slug,
                until,
            });
        }
        if force && confirm != Some(tenant.slug.as_str()) {
            return Err(TenancyError::ConfirmationMismatch {
                slug: tenant.slug,
                given: confirm.unwrap_or("").chars().take(60).collect(),
            });
        }
        // The one exception to the append-only audit trail (migrations/public/0005): the
        // tenant's own rows go with it.
        sqlx::query("SELECT set_config('capliquify.purging_tenant', $1, true)")
            .bind(tenant.id.to_string())
            .execute(&mut *tx)
            .await?;
        // Citus mode: the workers' cached sessions of the role go before it (db::citus).
        crate::db::citus::end_worker_sessions(&mut tx, tenant.id).await?;
        let dropped: bool = sqlx::query_scalar("SELECT public.delete_tenant_schema($1)")
            .bind(tenant.id)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM public.tenants WHERE id = $1")
            .bind(tenant.id)
            .execute(&mut *tx)
            .await?;
        // The tenant row (and with it the tenant's audit rows) is gone at commit, so this
        // entry carries the tenant in its metadata instead of its foreign key.
        audit::record(
            &mut tx,
            actor,
            Entry {
                tenant_id: None,
                action: "tenant.purged",
                resource_type: "tenant",
                resource_id: tenant.slug.clone(),
                metadata: json!({
                    "slug": tenant.slug, "tenant_id": tenant.id, "schema_name": tenant.schema_name,
                    "schema_dropped": dropped, "early": early, "deleted_at": tenant.deleted_at,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(PurgedTenant {
            slug: tenant.slug,
            schema_name: tenant.schema_name,
            schema_dropped: dropped,
        })
    }

    /// Recreates a missing schema, rebuilds an empty schema that has no migration history,
    /// or applies pending migrations (the guide's troubleshooting cases).
    pub async fn repair(
        &self,
        slug: &str,
        actor: &Actor,
    ) -> Result<(Tenant, Repair), TenancyError> {
        let mut tx = self.pool.begin().await?;
        let tenant = registry::fetch(&mut tx, slug, true).await?;
        require_home(&tenant, "repair")?;
        let scope = tenant.scope()?;
        let schema = scope.schema.as_str();
        let (schema_exists, has_history): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1),
                    to_regclass(quote_ident($1) || '.schema_migrations') IS NOT NULL",
        )
        .bind(schema)
        .fetch_one(&mut *tx)
        .await?;
        let repair = if !schema_exists {
            create_schema(&mut tx, tenant.id, &scope.schema).await?;
            Repair::Recreated
        } else if !has_history {
            let (missing_tables, with_data) = inspect_unmanaged(&mut tx, &scope.schema).await?;
            if !with_data.is_empty() {
                return Err(TenancyError::UnmanagedSchemaWithData {
                    slug: tenant.slug,
                    schema: schema.to_owned(),
                    tables: with_data.join(", "),
                });
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA {} CASCADE",
                scope.schema.quoted()
            )))
            .execute(&mut *tx)
            .await?;
            create_schema(&mut tx, tenant.id, &scope.schema).await?;
            Repair::Rebuilt { missing_tables }
        } else {
            let applied: i32 = sqlx::query_scalar("SELECT public.migrate_tenant_schema($1)")
                .bind(schema)
                .fetch_one(&mut *tx)
                .await?;
            if applied > 0 {
                // Citus mode: tables the migrations created go to the schema's worker.
                crate::db::citus::distribute_schema(&mut tx, &scope.schema).await?;
                Repair::Migrated { applied }
            } else if !role_in_place(&mut tx, tenant.id).await? {
                sqlx::query("SELECT public.grant_tenant_role($1, $2)")
                    .bind(tenant.id)
                    .bind(schema)
                    .execute(&mut *tx)
                    .await?;
                Repair::RoleGranted
            } else {
                Repair::Healthy
            }
        };
        // What doctor reports for this tenant is its last check: check again now, so a
        // repaired problem is not reported until the tenant's turn comes (public 0021).
        sqlx::query("SELECT public.recheck_tenant($1)")
            .bind(tenant.id)
            .execute(&mut *tx)
            .await?;
        if !matches!(repair, Repair::Healthy) {
            audit::record(
                &mut tx,
                actor,
                entry(&tenant, "tenant.repaired", json!({ "repair": repair })),
            )
            .await?;
        }
        let tenant = registry::fetch(&mut tx, slug, false).await?;
        tx.commit().await?;
        if matches!(repair, Repair::Recreated) {
            // The recorded fleet check names this schema missing (doctor reports it from
            // there, public 0025): check the fleet again rather than until serve's next
            // minute. The repair stands if this fails.
            if let Err(err) = super::verify::check_fleet(&self.pool, false).await {
                tracing::warn!(error = %err, "checking the fleet after a repair failed");
            }
        }
        Ok((tenant, repair))
    }

    /// [`transition_in`] in a transaction of its own.
    async fn transition<F>(
        &self,
        slug: &str,
        actor: &Actor,
        action: &str,
        metadata: serde_json::Value,
        decide: F,
    ) -> Result<Tenant, TenancyError>
    where
        F: FnOnce(&Tenant) -> Result<&'static str, TenancyError>,
    {
        let mut tx = self.pool.begin().await?;
        let after = transition_in(&mut tx, slug, actor, action, metadata, decide).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Soft delete inside the caller's transaction.
    pub(crate) async fn soft_delete_in(
        &self,
        conn: &mut PgConnection,
        slug: &str,
        actor: &Actor,
    ) -> Result<Tenant, TenancyError> {
        let purge_after = Utc::now() + self.grace;
        transition_in(
            conn,
            slug,
            actor,
            "tenant.deleted",
            json!({ "purge_after": purge_after }),
            |t| {
                if t.state() == TenantState::Deleted {
                    return Err(wrong_state(
                        t,
                        "it is already soft-deleted; undelete or purge it",
                    ));
                }
                Ok("UPDATE public.tenants SET deleted_at = now() WHERE id = $1")
            },
        )
        .await
    }
}

/// Purge and repair run the schema functions in the registry's own transaction, which
/// only reaches schemas on the home cluster; a placed tenant is refused, naming the move
/// that brings it home (a move also refuses while another is under way).
fn require_home(tenant: &Tenant, act: &'static str) -> Result<(), TenancyError> {
    if tenant.cluster == crate::db::cluster::HOME && tenant.moving_to.is_none() {
        return Ok(());
    }
    Err(TenancyError::NotHome {
        slug: tenant.slug.clone(),
        cluster: tenant.moving_to.as_ref().map_or_else(
            || tenant.cluster.clone(),
            |to| format!("{} (moving to {to})", tenant.cluster),
        ),
        act,
    })
}

/// Locks the tenant, lets `decide` check the state and name the update, runs it, audits.
async fn transition_in<F>(
    conn: &mut PgConnection,
    slug: &str,
    actor: &Actor,
    action: &str,
    metadata: serde_json::Value,
    decide: F,
) -> Result<Tenant, TenancyError>
where
    F: FnOnce(&Tenant) -> Result<&'static str, TenancyError>,
{
    let before = registry::fetch(&mut *conn, slug, true).await?;
    let update = decide(&before)?;
    sqlx::query(update)
        .bind(before.id)
        .execute(&mut *conn)
        .await?;
    let mut metadata = metadata;
    if let serde_json::Value::Object(map) = &mut metadata {
        map.insert("slug".into(), json!(before.slug));
        map.insert("from_status".into(), json!(before.subscription_status));
    }
    audit::record(&mut *conn, actor, entry(&before, action, metadata)).await?;
    registry::fetch(&mut *conn, slug, false).await
}

/// [`Tenancy::provision`] inside the caller's transaction (webhooks record their event in
/// the same one).
pub(crate) async fn provision_in(
    conn: &mut PgConnection,
    new: &NewTenant,
    actor: &Actor,
) -> Result<Tenant, TenancyError> {
    // A schema made ahead (migration 0017), locked for this transaction: the tenant takes
    // its id and `create_tenant_schema` below adopts it. None pooled: a fresh id, and the
    // schema is made here. Either way one transaction, so a failed sign-up returns the
    // pooled schema to the pool.
    let pooled: Option<Uuid> = sqlx::query_scalar("SELECT public.reserve_pooled_schema()")
        .fetch_one(&mut *conn)
        .await?;
    let id = pooled.unwrap_or_else(Uuid::new_v4);
    let schema = SchemaName::for_tenant(id);
    let plan = new.tier.plan();
    let features = serde_json::to_value(&plan.features).unwrap_or_else(|_| json!({}));
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO public.tenants (id, slug, name, schema_name, clerk_organization_id,
             subscription_tier, subscription_status, trial_ends_at, max_users, max_entities, features)
         VALUES ($1, $2, $3, $4, $5, $6, 'trial', now() + make_interval(days => $7), $8, $9, $10)
         RETURNING {TENANT_COLUMNS}"
    ));
    let inserted = sqlx::query_as::<_, Tenant>(sql)
        .bind(id)
        .bind(new.slug.as_str())
        .bind(&new.name)
        .bind(schema.as_str())
        .bind(&new.clerk_organization_id)
        .bind(new.tier)
        .bind(TRIAL_DAYS as i32)
        .bind(plan.max_users)
        .bind(plan.max_entities)
        .bind(&features)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| TenancyError::from_insert(e, new.slug.as_str(), &new.clerk_organization_id))?;
    sqlx::query("SELECT public.create_tenant_schema($1)")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    // Citus mode: the schema goes to a worker, in this transaction (nothing without Citus).
    crate::db::citus::place_tenant(&mut *conn, id, &schema).await?;
    audit::record(
        &mut *conn,
        actor,
        entry(
            &inserted,
            "tenant.provisioned",
            json!({
                "slug": inserted.slug, "tier": new.tier,
                "clerk_organization_id": new.clerk_organization_id,
                "schema_from_pool": pooled.is_some(),
            }),
        ),
    )
    .await?;
    let tenant = registry::fetch(&mut *conn, new.slug.as_str(), false).await?;
    Ok(tenant)
}

/// What purge removed.
#[derive(Debug, Clone, Serialize)]
pub struct PurgedTenant {
    pub slug: String,
    pub schema_name: String,
    pub schema_dropped: bool,
}

fn entry<'a>(tenant: &Tenant, action: &'a str, metadata: serde_json::Value) -> Entry<'a> {
    Entry {
        tenant_id: Some(tenant.id),
        action,
        resource_type: "tenant",
        resource_id: tenant.slug.clone(),
        metadata,
    }
}

fn require(t: &Tenant, state: TenantState, hint: &'static str) -> Result<(), TenancyError> {
    if t.state() == state {
        Ok(())
    } else {
        Err(wrong_state(t, hint))
    }
}

fn wrong_state(t: &Tenant, hint: &'static str) -> TenancyError {
    TenancyError::WrongState {
        slug: t.slug.clone(),
        state: t.state().as_str(),
        hint,
    }
}

fn deleted_at(t: &Tenant) -> Result<DateTime<Utc>, TenancyError> {
    t.deleted_at.ok_or_else(|| {
        wrong_state(
            t,
            "it is not soft-deleted; run `capliquify tenant delete` first",
        )
    })
}

async fn create_schema(
    conn: &mut PgConnection,
    id: Uuid,
    schema: &SchemaName,
) -> Result<(), TenancyError> {
    sqlx::query("SELECT public.create_tenant_schema($1)")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    // Citus mode: the schema goes to a worker, in this transaction (nothing without Citus).
    crate::db::citus::place_tenant(&mut *conn, id, schema).await?;
    Ok(())
}

/// For a schema without migration history: which required tables it lacks, and which of
/// its tables hold rows.
async fn inspect_unmanaged(
    conn: &mut PgConnection,
    schema: &SchemaName,
) -> Result<(Vec<String>, Vec<String>), TenancyError> {
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT req FROM unnest(public.tenant_required_tables()) req
          WHERE to_regclass(quote_ident($1) || '.' || quote_ident(req)) IS NULL ORDER BY req",
    )
    .bind(schema.as_str())
    .fetch_all(&mut *conn)
    .await?;
    // Row checks run server-side: format('%I') quotes the catalog's table names, and
    // query_to_xml runs the generated statement without a round trip per table.
    let with_data: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
            AND (xpath('/row/x/text()', query_to_xml(
                   format('SELECT EXISTS (SELECT 1 FROM %I.%I) AS x', n.nspname, c.relname),
                   false, true, '')))[1]::text = 'true'
          ORDER BY 1",
    )
    .bind(schema.as_str())
    .fetch_all(&mut *conn)
    .await?;
    Ok((missing, with_data))
}

/// The SQL of [`role_in_place`], also used by `doctor` for every tenant at once.
pub(crate) const ROLE_PROBLEMS_SQL: &str = "
    WITH t AS (
        SELECT t.slug::text AS slug, t.schema_name::text AS schema,
               public.tenant_role_name(t.id) AS role
          FROM public.tenants t
         WHERE t.deleted_at IS NULL AND ($1::uuid IS NULL OR t.id = $1)
           -- (a tenant placed on another cluster has its role there, not here)
           AND t.cluster = 'home' AND t.moving_to IS NULL
    )
    SELECT t.slug || ': role ' || t.role || ' is missing'
      FROM t WHERE to_regrole(t.role) IS NULL
    UNION ALL
    SELECT t.slug || ': the tenant role cannot use schema ' || t.schema
      FROM t JOIN pg_namespace n ON n.nspname = t.schema
     WHERE to_regrole(t.role) IS NOT NULL AND NOT has_schema_privilege(t.role, n.oid, 'USAGE')
    UNION ALL
    SELECT t.slug || ': no read/write grant on ' || string_agg(c.relname, ', ' ORDER BY c.relname)
      FROM t JOIN pg_namespace n ON n.nspname = t.schema
      JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
                     AND c.relname <> 'schema_migrations'
     WHERE to_regrole(t.role) IS NOT NULL
       AND NOT (has_table_privilege(t.role, c.oid, 'SELECT') AND has_table_privilege(t.role, c.oid, 'INSERT')
            AND has_table_privilege(t.role, c.oid, 'UPDATE') AND has_table_privilege(t.role, c.oid, 'DELETE'))
     GROUP BY t.slug";

/// True when the tenant's role exists and has its rights on every table of its schema.
async fn role_in_place(conn: &mut PgConnection, tenant_id: Uuid) -> Result<bool, TenancyError> {
    let problems: Vec<String> = sqlx::query_scalar(ROLE_PROBLEMS_SQL)
        .bind(tenant_id)
        .fetch_all(conn)
        .await?;
    Ok(problems.is_empty())
}
