//! Identifiers that reach SQL: tenant slugs and tenant schema names.
//!
//! They are parsed once ("parse, don't validate") and are valid everywhere afterwards.
//! [`SchemaName::quoted`] is the one place a schema name is turned into SQL text.

use std::fmt;

/// Words a tenant may not take as its slug: they name product surfaces, infrastructure or
/// would read as something official in a URL.
const RESERVED_SLUGS: &[&str] = &[
    "admin",
    "administrator",
    "api",
    "app",
    "assets",
    "auth",
    "billing",
    "blog",
    "capliquify",
    "cdn",
    "dashboard",
    "dev",
    "docs",
    "help",
    "internal",
    "login",
    "logout",
    "mail",
    "metrics",
    "null",
    "pg",
    "postgres",
    "public",
    "root",
    "settings",
    "signup",
    "static",
    "status",
    "support",
    "system",
    "tenant",
    "tenants",
    "test",
    "undefined",
    "webhooks",
    "www",
];

const SLUG_RULE: &str = "3 to 50 characters: lower-case letters, digits and hyphens, \
                         starting and ending with a letter or digit";

/// Why a slug was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("invalid slug {shown:?}: must be {SLUG_RULE}")]
    Invalid { shown: String },
    #[error("slug {0:?} is reserved; choose another")]
    Reserved(String),
}

/// A tenant's public handle (`^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$`, not reserved).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantSlug(String);

impl TenantSlug {
    pub fn parse(input: &str) -> Result<Self, SlugError> {
        let bytes = input.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let valid = (3..=50).contains(&bytes.len())
            && bytes.first().is_some_and(alnum)
            && bytes.last().is_some_and(alnum)
            && bytes.iter().all(|b| alnum(b) || *b == b'-');
        if !valid {
            return Err(SlugError::Invalid {
                shown: shorten(input),
            });
        }
        if RESERVED_SLUGS.contains(&input) {
            return Err(SlugError::Reserved(input.to_owned()));
        }
        Ok(Self(input.to_owned()))
    }

    /// Derives a slug candidate from a display name ("ACME Corp." → "acme-corp"); `None` when
    /// nothing usable is left.
    pub fn from_name(name: &str) -> Option<Self> {
        let mut out = String::new();
        for c in name.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
        }
        out.truncate(50);
        let trimmed = out.trim_matches('-');
        Self::parse(trimmed).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of one tenant's schema: `tenant_` followed by 1–56 of `[a-z0-9_]`.
///
/// The rule admits only characters that never need quoting, and [`SchemaName::quoted`]
/// quotes anyway, so a name can never carry SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant schema name {0:?}: must match ^tenant_[a-z0-9_]{{1,56}}$")]
pub struct SchemaNameError(String);

impl SchemaName {
    pub fn parse(input: &str) -> Result<Self, SchemaNameError> {
        let rest = input.strip_prefix("tenant_").unwrap_or("");
        let valid = (1..=56).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(Self(input.to_owned()))
        } else {
            Err(SchemaNameError(shorten(input)))
        }
    }

    /// The generated name for a tenant id: `tenant_<uuid without dashes>`.
    pub fn for_tenant(id: uuid::Uuid) -> Self {
        Self(format!("tenant_{}", id.simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a double-quoted SQL identifier.
    pub fn quoted(&self) -> String {
        // The parse rule leaves nothing to escape; quoting keeps it an identifier regardless.
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a table or column inside a tenant schema, as read from the catalog (a move
/// copies whatever tables the schema has): 1–63 of `[a-z0-9_]`, not starting with a digit.
/// Our migrations only make such names; anything else is refused rather than quoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unexpected table or column name {0:?} in a tenant schema: names must match ^[a-z_][a-z0-9_]{{0,62}}$"
)]
pub struct ObjectNameError(String);

impl ObjectName {
    pub fn parse(input: &str) -> Result<Self, ObjectNameError> {
        let valid = (1..=63).contains(&input.len())
            && input
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && input
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(Self(input.to_owned()))
        } else {
            Err(ObjectNameError(shorten(input)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a double-quoted SQL identifier.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Error messages echo bad input, so keep them short and printable.
fn shorten(input: &str) -> String {
    const MAX: usize = 60;
    if input.chars().count() <= MAX {
        input.to_owned()
    } else {
        let head: String = input.chars().take(MAX).collect();
        format!("{head}… ({} chars)", input.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_rule() {
        for ok in ["acme", "acme-corp", "a1b", "beta-industries-2026"] {
            assert_eq!(TenantSlug::parse(ok).unwrap().as_str(), ok);
        }
        let long = "a".repeat(200);
        for bad in [
            "",
            "ab",
            "Acme",
            "-acme",
            "acme-",
            "acme_corp",
            "acme corp",
            "acme\"; drop schema public;--",
            "ácme",
            long.as_str(),
        ] {
            assert!(
                matches!(TenantSlug::parse(bad), Err(SlugError::Invalid { .. })),
                "{bad:?} must be refused"
            );
        }
        assert_eq!(
            TenantSlug::parse(&"a".repeat(50)).unwrap().as_str().len(),
            50
        );
        assert!(TenantSlug::parse(&"a".repeat(51)).is_err());
    }

    #[test]
    fn reserved_slugs_are_refused() {
        assert_eq!(
            TenantSlug::parse("admin"),
            Err(SlugError::Reserved("admin".into()))
        );
        assert!(TenantSlug::parse("public").is_err());
    }

    #[test]
    fn long_bad_input_is_shortened_in_errors() {
        let msg = TenantSlug::parse(&"X".repeat(200)).unwrap_err().to_string();
        assert!(msg.contains("(200 chars)"), "{msg}");
        assert!(msg.len() < 300);
    }

    #[test]
    fn slugs_derive_from_names() {
        assert_eq!(
            TenantSlug::from_name("ACME Manufacturing, Inc.")
                .unwrap()
                .as_str(),
            "acme-manufacturing-inc"
        );
        assert!(TenantSlug::from_name("!!").is_none());
    }

    #[test]
    fn schema_names_follow_the_rule() {
        let id = uuid::Uuid::parse_str("123e4567-e89b-12d3-a456-426614174000").unwrap();
        let generated = SchemaName::for_tenant(id);
        assert_eq!(
            generated.as_str(),
            "tenant_123e4567e89b12d3a456426614174000"
        );
        assert!(SchemaName::parse(generated.as_str()).is_ok());
        assert_eq!(
            SchemaName::parse("tenant_acme").unwrap().quoted(),
            "\"tenant_acme\""
        );
        for bad in [
            "tenant_",
            "public",
            "tenant_ACME",
            "tenant_a\"b",
            "tenant_a;drop",
            "tenant_a-b",
        ] {
            assert!(SchemaName::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(SchemaName::parse(&format!("tenant_{}", "a".repeat(56))).is_ok());
        assert!(SchemaName::parse(&format!("tenant_{}", "a".repeat(57))).is_err());
    }
}
