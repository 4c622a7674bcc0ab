//! The tenant resources, one module each; [`crate::http::resource`] serves them.

pub mod companies;
pub mod products;
