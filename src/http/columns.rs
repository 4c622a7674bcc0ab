//! One declaration per resource: [`resource_fields!`] turns a list of columns, each with
//! its [field type](super::fields) and how clients may write it, into the three types the
//! engine needs — the row a response carries, the body of a create, the body of a partial
//! update — with their serde forms, their OpenAPI schemas and their SQL column lists.
//! Adding a column to a resource is one line here plus its migration (docs/architecture.md,
//! "Adding a column").
//!
//! How a column may be written:
//!
//! | mode | row | create | update |
//! |---|---|---|---|
//! | `read` | yes | — | — |
//! | `fixed` | yes | required | — |
//! | `required` | yes | required | optional, not null |
//! | `optional` | nullable | optional, nullable | optional, nullable (`null` clears) |
//! | `defaulted` | yes | optional, not null (absent: the column's default) | optional, not null |

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema};

use super::fields::{Field, nullable};
use super::resource::Bind;

/// A response row: the SELECT list that reads it.
pub trait RowType {
    /// `col1, col2::text, …` — every column of the row in declaration order.
    fn select_list() -> &'static str;
}

/// A request body that becomes column values.
pub trait Columns {
    /// The values to write, only for the fields the client gave (or the engine set).
    fn columns(self) -> Vec<(&'static str, Bind)>;
}

/// Builds an object schema property by property (used by [`resource_fields!`]).
pub struct ObjectSchema {
    builder: ObjectBuilder,
}

impl ObjectSchema {
    pub fn new(title: &str, closed: bool) -> Self {
        let mut builder = ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Object)
            .title(Some(title));
        if closed {
            builder = builder.additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        }
        Self { builder }
    }

    /// Adds `name` with `T`'s schema (`nullable`: or null), required or not.
    pub fn property<T: Field>(
        mut self,
        name: &str,
        is_nullable: bool,
        required: bool,
        doc: &str,
    ) -> Self {
        let mut schema = T::schema();
        if is_nullable {
            schema = nullable(schema);
        }
        let doc = doc.trim();
        if !doc.is_empty()
            && let RefOr::T(Schema::Object(object)) = &mut schema
        {
            let merged = match object.description.take() {
                Some(rule) => format!("{doc}\n\n{rule}"),
                None => doc.to_owned(),
            };
            object.description = Some(merged);
        }
        self.builder = self.builder.property(name, schema);
        if required {
            self.builder = self.builder.required(name);
        }
        self
    }

    /// At least one property (update bodies: an empty change is not a change).
    pub fn non_empty(mut self) -> Self {
        self.builder = self.builder.min_properties(Some(1));
        self
    }

    pub fn build(self) -> RefOr<Schema> {
        RefOr::T(Schema::Object(self.builder.build()))
    }
}

/// The name of a declared type in the OpenAPI document.
pub fn schema_name(name: &'static str) -> Cow<'static, str> {
    Cow::Borrowed(name)
}

/// The SQL text of a column in a SELECT list.
pub fn select_column<T: Field>(name: &str) -> String {
    format!("{name}{}", T::CAST)
}

/// The position of the next column of a row read in [`RowType::select_list`]'s order,
/// checked against its name. Rows are read by position because sqlx's derived `FromRow`
/// looks every column up by name, a hash per column per row: about 2% of the service's
/// CPU for a 50-row page (docs/benchmarks.md, API benchmark). The name check keeps what the
/// lookup gave: a query whose columns come in another order fails (`ColumnNotFound`)
/// instead of filling fields from the wrong columns.
pub fn position(
    columns: &[sqlx::postgres::PgColumn],
    at: &mut usize,
    name: &str,
) -> sqlx::Result<usize> {
    let i = *at;
    *at += 1;
    match columns.get(i) {
        Some(column) if sqlx::Column::name(column) == name => Ok(i),
        _ => Err(sqlx::Error::ColumnNotFound(format!(
            "{name} (expected as column {} of the select list)",
            i + 1
        ))),
    }
}

/// Declares a resource's row, create body and update body from one list of columns (see
/// the module documentation for the modes). Each column is
/// `/// doc` `name: FieldType => mode,`; the engine also needs `impl Resource`.
#[macro_export]
macro_rules! resource_fields {
    (
        row $Row:ident, create $Create:ident, update $Update:ident;
        $($body:tt)*
    ) => {
        $crate::resource_fields!(@munch [$Row $Create $Update]
            row [] create [] update [] rowl [] createl [] updatel []
            $($body)*);
    };

    // read: in responses only.
    (@munch $names:tt row [$($r:tt)*] create $c:tt update $u:tt rowl [$($rl:tt)*] createl $cl:tt updatel $ul:tt
        $(#[doc = $d:literal])* $f:ident : $t:ty => read $(, $($rest:tt)*)?) => {
        $crate::resource_fields!(@munch $names
            row [$($r)* $(#[doc = $d])* pub $f: $t,] create $c update $u
            rowl [$($rl)* ($f, $t, false, [$($d)*])] createl $cl updatel $ul
            $($($rest)*)?);
    };
    // fixed: given on create, never changed.
    (@munch $names:tt row [$($r:tt)*] create [$($c:tt)*] update $u:tt rowl [$($rl:tt)*] createl [$($cl:tt)*] updatel $ul:tt
        $(#[doc = $d:literal])* $f:ident : $t:ty => fixed $(, $($rest:tt)*)?) => {
        $crate::resource_fields!(@munch $names
            row [$($r)* $(#[doc = $d])* pub $f: $t,]
            create [$($c)* $(#[doc = $d])* pub $f: $t,]
            update $u
            rowl [$($rl)* ($f, $t, false, [$($d)*])]
            createl [$($cl)* ($f, $t, required, [$($d)*])]
            updatel $ul
            $($($rest)*)?);
    };
    // required: given on create, may change, never null.
    (@munch $names:tt row [$($r:tt)*] create [$($c:tt)*] update [$($u:tt)*] rowl [$($rl:tt)*] createl [$($cl:tt)*] updatel [$($ul:tt)*]
        $(#[doc = $d:literal])* $f:ident : $t:ty => required $(, $($rest:tt)*)?) => {
        $crate::resource_fields!(@munch $names
            row [$($r)* $(#[doc = $d])* pub $f: $t,]
            create [$($c)* $(#[doc = $d])* pub $f: $t,]
            update [$($u)* $(#[doc = $d])* #[serde(default, deserialize_with = "crate::http::fields::present")] pub $f: Option<$t>,]
            rowl [$($rl)* ($f, $t, false, [$($d)*])]
            createl [$($cl)* ($f, $t, required, [$($d)*])]
            updatel [$($ul)* ($f, $t, present, [$($d)*])]
            $($($rest)*)?);
    };
    // optional: nullable everywhere; null in an update clears it.
    (@munch $names:tt row [$($r:tt)*] create [$($c:tt)*] update [$($u:tt)*] rowl [$($rl:tt)*] createl [$($cl:tt)*] updatel [$($ul:tt)*]
        $(#[doc = $d:literal])* $f:ident : $t:ty => optional $(, $($rest:tt)*)?) => {
        $crate::resource_fields!(@munch $names
            row [$($r)* $(#[doc = $d])* pub $f: Option<$t>,]
            create [$($c)* $(#[doc = $d])* #[serde(default)] pub $f: Option<$t>,]
            update [$($u)* $(#[doc = $d])* #[serde(default)] pub $f: $crate::http::fields::Patch<$t>,]
            rowl [$($rl)* ($f, $t, true, [$($d)*])]
            createl [$($cl)* ($f, $t, optional, [$($d)*])]
            updatel [$($ul)* ($f, $t, patch, [$($d)*])]
            $($($rest)*)?);
    };
    // defaulted: NOT NULL with a default; absent on create takes the default.
    (@munch $names:tt row [$($r:tt)*] create [$($c:tt)*] update [$($u:tt)*] rowl [$($rl:tt)*] createl [$($cl:tt)*] updatel [$($ul:tt)*]
        $(#[doc = $d:literal])* $f:ident : $t:ty => defaulted $(, $($rest:tt)*)?) => {
        $crate::resource_fields!(@munch $names
            row [$($r)* $(#[doc = $d])* pub $f: $t,]
            create [$($c)* $(#[doc = $d])* #[serde(default, deserialize_with = "crate::http::fields::present")] pub $f: Option<$t>,]
            update [$($u)* $(#[doc = $d])* #[serde(default, deserialize_with = "crate::http::fields::present")] pub $f: Option<$t>,]
            rowl [$($rl)* ($f, $t, false, [$($d)*])]
            createl [$($cl)* ($f, $t, present, [$($d)*])]
            updatel [$($ul)* ($f, $t, present, [$($d)*])]
            $($($rest)*)?);
    };

    // Every column read: emit the three types.
    (@munch [$Row:ident $Create:ident $Update:ident]
        row [$($r:tt)*] create [$($c:tt)*] update [$($u:tt)*]
        rowl [$(($rf:ident, $rt:ty, $rn:tt, [$($rd:tt)*]))*]
        createl [$(($cf:ident, $ct:ty, $ck:ident, [$($cd:tt)*]))*]
        updatel [$(($uf:ident, $ut:ty, $uk:ident, [$($ud:tt)*]))*]
    ) => {
        #[derive(Debug, serde::Serialize)]
        pub struct $Row { $($r)* }

        impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for $Row {
            fn from_row(row: &'r sqlx::postgres::PgRow) -> sqlx::Result<Self> {
                let columns = sqlx::Row::columns(row);
                let mut at = 0;
                Ok(Self {
                    $($rf: sqlx::Row::try_get(
                        row,
                        $crate::http::columns::position(columns, &mut at, stringify!($rf))?,
                    )?,)*
                })
            }
        }

        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $Create { $($c)* }

        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $Update { $($u)* }

        impl $crate::http::columns::RowType for $Row {
            fn select_list() -> &'static str {
                static LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                    [$($crate::http::columns::select_column::<$rt>(stringify!($rf))),*].join(", ")
                });
                &LIST
            }
        }

        impl utoipa::PartialSchema for $Row {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::http::columns::ObjectSchema::new(stringify!($Row), false)
                    $(.property::<$rt>(stringify!($rf), $rn, true, concat!($($rd, "\n",)* "")))*
                    .build()
            }
        }
        impl utoipa::ToSchema for $Row {
            fn name() -> std::borrow::Cow<'static, str> {
                $crate::http::columns::schema_name(stringify!($Row))
            }
        }

        impl utoipa::PartialSchema for $Create {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::http::columns::ObjectSchema::new(stringify!($Create), true)
                    $(.property::<$ct>(
                        stringify!($cf),
                        $crate::resource_fields!(@nullable $ck),
                        $crate::resource_fields!(@required $ck),
                        concat!($($cd, "\n",)* ""),
                    ))*
                    .build()
            }
        }
        impl utoipa::ToSchema for $Create {
            fn name() -> std::borrow::Cow<'static, str> {
                $crate::http::columns::schema_name(stringify!($Create))
            }
        }

        impl utoipa::PartialSchema for $Update {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::http::columns::ObjectSchema::new(stringify!($Update), true)
                    $(.property::<$ut>(
                        stringify!($uf),
                        $crate::resource_fields!(@nullable $uk),
                        false,
                        concat!($($ud, "\n",)* ""),
                    ))*
                    .non_empty()
                    .build()
            }
        }
        impl utoipa::ToSchema for $Update {
            fn name() -> std::borrow::Cow<'static, str> {
                $crate::http::columns::schema_name(stringify!($Update))
            }
        }

        impl $crate::http::columns::Columns for $Create {
            fn columns(self) -> Vec<(&'static str, $crate::http::resource::Bind)> {
                let mut values = Vec::new();
                $($crate::resource_fields!(@bind values, self.$cf, $cf, $ct, $ck);)*
                values
            }
        }

        impl $crate::http::columns::Columns for $Update {
            fn columns(self) -> Vec<(&'static str, $crate::http::resource::Bind)> {
                let mut values = Vec::new();
                $($crate::resource_fields!(@bind values, self.$uf, $uf, $ut, $uk);)*
                values
            }
        }
    };

    (@nullable required) => { false };
    (@nullable present) => { false };
    (@nullable optional) => { true };
    (@nullable patch) => { true };
    (@required required) => { true };
    (@required present) => { false };
    (@required optional) => { false };

    (@bind $values:ident, $value:expr, $f:ident, $t:ty, required) => {
        $values.push((stringify!($f), <$t as $crate::http::fields::Field>::bind(Some($value))));
    };
    (@bind $values:ident, $value:expr, $f:ident, $t:ty, present) => {
        if let Some(v) = $value {
            $values.push((stringify!($f), <$t as $crate::http::fields::Field>::bind(Some(v))));
        }
    };
    (@bind $values:ident, $value:expr, $f:ident, $t:ty, optional) => {
        if let Some(v) = $value {
            $values.push((stringify!($f), <$t as $crate::http::fields::Field>::bind(Some(v))));
        }
    };
    (@bind $values:ident, $value:expr, $f:ident, $t:ty, patch) => {
        if let Some(change) = $value.into_change() {
            $values.push((stringify!($f), <$t as $crate::http::fields::Field>::bind(change)));
        }
    };
}
