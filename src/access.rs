//! Who may do what inside a tenant: roles (`public.user_role`) and the acts they allow.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `public.user_role`, from the weakest to the strongest.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Encode,
    sqlx::Decode,
    ToSchema,
)]
#[sqlx(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Member,
    Admin,
    Owner,
}

crate::db::public_enum_type!(Role, "user_role");

/// Acts a role may be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Read the tenant's business data.
    ReadData,
    /// Create, change and delete business data.
    WriteData,
    /// Manage API credentials, other users' preferences; read the audit log.
    Administer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// The weakest role allowed to do `act`; owners may do everything.
    fn minimum_for(act: Act) -> Role {
        match act {
            Act::ReadData => Role::Viewer,
            Act::WriteData => Role::Member,
            Act::Administer => Role::Admin,
        }
    }

    pub fn allows(self, act: Act) -> bool {
        self >= Self::minimum_for(act)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_form_a_ladder() {
        let table = [
            (Role::Viewer, [true, false, false]),
            (Role::Member, [true, true, false]),
            (Role::Admin, [true, true, true]),
            (Role::Owner, [true, true, true]),
        ];
        for (role, expected) in table {
            let got = [Act::ReadData, Act::WriteData, Act::Administer].map(|a| role.allows(a));
            assert_eq!(got, expected, "{role:?}");
        }
    }
}
