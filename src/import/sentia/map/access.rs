//! Integration credentials and users: the secrets and the people of the tenant.

use super::*;

// ---------------------------------------------------------------------------------------
// Integration credentials: A "ApiKey", one credential per service.

/// Our service name: lower case, `[a-z0-9_-]`, at most 50 characters.
pub(super) fn service_name(service: &str) -> Option<String> {
    let s: String = service
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_owned();
    (!s.is_empty() && fits(&s, 50)).then_some(s)
}

pub(super) async fn credentials(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    if !cx.snap.has("ApiKey", &["service", "keyName", "value"]) {
        cx.missing("ApiKey");
        return Ok(());
    }
    let src = cx
        .snap
        .rows(
            r#"SELECT id, "organizationId" AS organization, service, "keyName" AS key_name, value,
                      "encryptedData" IS NOT NULL AS sealed, "isActive" AS is_active
                 FROM "ApiKey" ORDER BY service, "keyName", "createdAt", id"#
                .into(),
        )
        .await?;
    let mut tally = Tally::default();
    // service → (display name, keyName → value), in source order.
    let mut services: BTreeMap<String, (String, serde_json::Map<String, Value>)> = BTreeMap::new();
    for r in &src {
        if !get::<bool>(r, "is_active")?.unwrap_or(true) {
            tally.skip("inactive in Sentia");
            continue;
        }
        let Some(display) = text(r, "service")? else {
            tally.skip("no service");
            continue;
        };
        let Some(service) = service_name(&display) else {
            tally.skip("a service name that is not 1–50 of [a-z0-9_-]");
            continue;
        };
        let Some(key) = text(r, "key_name")? else {
            tally.skip("no keyName");
            continue;
        };
        // Never trimmed or inspected beyond presence: a secret is copied as it is.
        let Some(value) = get::<String>(r, "value")?.filter(|v| !v.is_empty()) else {
            if get::<bool>(r, "sealed")?.unwrap_or(false) {
                tally.skip(
                    "only encryptedData, sealed under a key Sentia did not keep: re-enter it",
                );
            } else {
                tally.skip("no value");
            }
            continue;
        };
        match text(r, "organization")?.as_deref() {
            Some("default") | None => {
                tally.note("organizationId 'default' (a placeholder): the first company")
            }
            Some(_) => tally.note("organizationId names no company of ours: the first company"),
        }
        let entry = services
            .entry(service)
            .or_insert_with(|| (display.clone(), serde_json::Map::new()));
        if entry.1.contains_key(&key) {
            tally.skip("the same service and keyName as an earlier key");
            continue;
        }
        entry.1.insert(key, Value::String(value));
    }
    let Some(company) = cx.default_company.clone() else {
        return Ok(());
    };
    let mut out = Vec::new();
    for (service, (display, keys)) in services {
        let n = keys.len();
        if n > 1 {
            for _ in 0..n {
                tally.note(format!("grouped with the other keys of {service}"));
            }
        }
        let id = cx
            .existing
            .credentials
            .get(&(company.id, service.clone()))
            .copied()
            .unwrap_or_else(|| derived(&["ApiKey", &company.id.to_string(), &service]));
        out.push(Credential {
            id,
            company_id: company.id,
            service,
            display_name: cut(display, 255),
            secrets: Secrets {
                credentials: Value::Object(keys),
                oauth_access_token: None,
                oauth_refresh_token: None,
            },
            token_expires_at: None,
            state: CredentialState::default(),
        });
    }
    cx.push(
        "api_credentials",
        "ApiKey",
        Generation::A,
        src.len(),
        tally,
        Rows::Credentials(out),
    );
    Ok(())
}

/// B's `admin_integrations` (added without a migration: often absent), one credential
/// each: keys and settings sealed as the credentials, tokens as the OAuth tokens.
pub(super) async fn integrations(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    if !cx
        .snap
        .has("admin_integrations", &["name", "api_key", "access_token"])
    {
        cx.missing("admin_integrations");
        return Ok(());
    }
    let src = cx
        .snap
        .rows(
            "SELECT name::text, display_name::text, type::text, endpoint::text, auth_method::text,
                    config::jsonb AS config, api_key::text, api_secret::text, access_token::text,
                    refresh_token::text, (token_expires_at AT TIME ZONE 'UTC') AS token_expires_at,
                    is_active, (last_sync_at AT TIME ZONE 'UTC') AS last_sync_at,
                    last_sync_status::text, last_error::text
               FROM admin_integrations ORDER BY created_at, id"
                .into(),
        )
        .await?;
    let mut tally = Tally::default();
    let mut out = Vec::new();
    let Some(company) = cx.default_company.clone() else {
        return Ok(());
    };
    let taken: HashSet<String> = cx
        .plan
        .parts
        .iter()
        .filter_map(|p| match &p.rows {
            Rows::Credentials(c) => Some(c.iter().map(|c| c.service.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    for r in &src {
        let Some(name) = text(r, "name")? else {
            tally.skip("no name");
            continue;
        };
        let Some(service) = service_name(&name) else {
            tally.skip("a name that is not 1–50 of [a-z0-9_-]");
            continue;
        };
        if taken.contains(&service) {
            tally.skip("the same service as an ApiKey credential");
            continue;
        }
        // Secrets are copied as they are, never trimmed.
        let secret = |column: &str| -> Result<Option<String>, SentiaError> {
            Ok(get::<String>(r, column)?.filter(|v| !v.is_empty()))
        };
        let (api_key, api_secret) = (secret("api_key")?, secret("api_secret")?);
        let (access, refresh) = (secret("access_token")?, secret("refresh_token")?);
        if api_key.is_none() && api_secret.is_none() && access.is_none() && refresh.is_none() {
            tally.skip("no key, secret or token");
            continue;
        }
        let credentials = json!({
            "api_key": api_key, "api_secret": api_secret, "type": text(r, "type")?,
            "endpoint": text(r, "endpoint")?, "auth_method": text(r, "auth_method")?,
            "config": get::<Value>(r, "config")?,
        });
        let id = cx
            .existing
            .credentials
            .get(&(company.id, service.clone()))
            .copied()
            .unwrap_or_else(|| derived(&["admin_integrations", &company.id.to_string(), &service]));
        out.push(Credential {
            id,
            company_id: company.id,
            display_name: cut(
                text(r, "display_name")?.unwrap_or_else(|| name.clone()),
                255,
            ),
            service,
            secrets: Secrets {
                credentials,
                oauth_access_token: access,
                oauth_refresh_token: refresh,
            },
            token_expires_at: get::<DateTime<Utc>>(r, "token_expires_at")?,
            state: CredentialState {
                is_active: get::<bool>(r, "is_active")?.unwrap_or(true),
                last_sync_at: get::<DateTime<Utc>>(r, "last_sync_at")?,
                last_sync_status: text(r, "last_sync_status")?.map(|s| cut(s, 50)),
                last_sync_error: text(r, "last_error")?,
            },
        });
    }
    cx.push(
        "api_credentials",
        "admin_integrations",
        Generation::B,
        src.len(),
        tally,
        Rows::Credentials(out),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Users → memberships (public.users).

/// Our role for a Sentia role (SENTIA-SOURCE.md §3.1). Nobody becomes owner here.
pub(super) fn role_of(role: &str, is_admin: bool) -> Role {
    match role.trim().to_lowercase().as_str() {
        _ if is_admin => Role::Admin,
        "admin" | "master_admin" => Role::Admin,
        "manager" | "operator" | "analyst" => Role::Member,
        _ => Role::Viewer,
    }
}

pub(super) async fn members(cx: &mut Cx<'_>) -> Result<(), SentiaError> {
    let Some(generation) = cx.snap.generation("users") else {
        cx.missing("users");
        return Ok(());
    };
    // A user's preferences: their `preferences` object with the per-user settings beside it.
    let (is_admin, preferences) = match generation {
        Generation::A => (
            "is_admin",
            "jsonb_build_object('currency', preferred_currency_code, 'locale', preferred_locale,
                                'timezone', preferred_timezone)",
        ),
        Generation::B => (
            "false",
            "jsonb_build_object('dashboard_layout', dashboard_layout::jsonb, 'timezone', timezone,
                                'locale', locale, 'currency', currency)",
        ),
    };
    // Only these columns: password hashes, tokens and 2FA secrets are never read.
    let src = cx
        .snap
        .rows(format!(
            "SELECT id::text, email::text, display_name::text, first_name::text, last_name::text,
                    role::text, {is_admin} AS is_admin, is_active, deleted_at IS NOT NULL AS deleted,
                    CASE WHEN jsonb_typeof(preferences::jsonb) = 'object' THEN preferences::jsonb
                         ELSE '{{}}'::jsonb END || jsonb_strip_nulls({preferences}) AS preferences
               FROM users ORDER BY created_at, id"
        ))
        .await?;
    let mut preferences = (Tally::default(), Vec::new(), 0usize);
    let links: HashMap<String, &str> = cx
        .options
        .users
        .iter()
        .map(|l| (l.email.trim().to_lowercase(), l.clerk_user_id.as_str()))
        .collect();
    let owner = cx.options.owner.as_ref().map(|o| o.trim().to_lowercase());
    let mut tally = Tally::default();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for r in &src {
        let Some(email) = text(r, "email")? else {
            tally.skip("no email");
            continue;
        };
        let key = email.to_lowercase();
        if get::<bool>(r, "deleted")?.unwrap_or(false) {
            tally.skip("deleted in Sentia");
            continue;
        }
        if !get::<bool>(r, "is_active")?.unwrap_or(true) {
            tally.skip("inactive in Sentia");
            continue;
        }
        if !seen.insert(key.clone()) {
            tally.skip("the same email as an earlier user");
            continue;
        }
        let full_name = text(r, "display_name")?
            .or_else(|| {
                let parts: Vec<String> = [text(r, "first_name"), text(r, "last_name")]
                    .into_iter()
                    .filter_map(|p| p.ok().flatten())
                    .collect();
                (!parts.is_empty()).then(|| parts.join(" "))
            })
            .map(|n| cut(n, 255));
        let mut role = role_of(
            &text(r, "role")?.unwrap_or_default(),
            get::<bool>(r, "is_admin")?.unwrap_or(false),
        );
        if owner.as_deref() == Some(key.as_str()) {
            role = Role::Owner;
        }
        let member = match cx.existing.members.get(&key) {
            Some(m) if m.tenant_id != cx.tenant.id => {
                tally.skip("a member of another tenant (an account belongs to one tenant)");
                continue;
            }
            Some(m) if m.removed => {
                tally.skip("removed from this tenant in CapLiquify");
                continue;
            }
            Some(m) => {
                if m.role == Role::Owner {
                    role = Role::Owner;
                }
                // Clerk owns the profile of an account that exists: only the role is ours.
                Member {
                    clerk_user_id: m.clerk_user_id.clone(),
                    email: m.email.clone(),
                    full_name: None,
                    role,
                    existing: Some((m.id, m.role)),
                }
            }
            None => match links.get(&key) {
                Some(clerk) => {
                    if cx
                        .existing
                        .clerk_tenants
                        .get(*clerk)
                        .is_some_and(|t| *t != cx.tenant.id)
                    {
                        tally.skip("a member of another tenant (an account belongs to one tenant)");
                        continue;
                    }
                    Member {
                        clerk_user_id: (*clerk).to_owned(),
                        email: cut(email, 255),
                        full_name,
                        role,
                        existing: None,
                    }
                }
                None => {
                    tally.skip(
                        "no Clerk account known: invite them in Clerk, or list them in --users",
                    );
                    continue;
                }
            },
        };
        if let Some(id) = text(r, "id")? {
            cx.clerk_ids.insert(id, member.clerk_user_id.clone());
        }
        if let Some(p) = get::<Value>(r, "preferences")?.filter(|p| p != &json!({})) {
            preferences.2 += 1;
            let clerk = &member.clerk_user_id;
            let ours = derived(&["user_preferences", clerk]);
            match cx.existing.preferences.get(clerk) {
                // Preferences set in CapLiquify are the member's newer choice.
                Some(id) if *id != ours => preferences
                    .0
                    .skip("the member has preferences in CapLiquify already (kept)"),
                _ => preferences.1.push(Row {
                    id: ours,
                    cells: vec![
                        ("user_id", Cell::Text(Some(clerk.clone()))),
                        ("preferences", Cell::Json(Some(p))),
                    ],
                }),
            }
        }
        out.push(member);
    }
    if let Some(o) = &owner
        && !out.iter().any(|m| m.email.to_lowercase() == *o)
    {
        return Err(SentiaError::Option(format!(
            "--owner {o}: no Sentia user with that email is imported (they need a Clerk account: \
             a member of this tenant already, or a line in --users)"
        )));
    }
    cx.push(
        "members",
        "users",
        generation,
        src.len(),
        tally,
        Rows::Members(out),
    );
    cx.push(
        "user_preferences",
        "users: preferences",
        generation,
        preferences.2,
        preferences.0,
        Rows::Table("user_preferences", preferences.1),
    );
    Ok(())
}
