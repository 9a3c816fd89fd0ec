//! What model calls cost and who may spend: the gateway's own books, with the
//! SQL of their tables. Prices per model are settings (`config::pricing`);
//! [`usage`]: every call recorded (the `model_calls` rows and their log lines),
//! with [`usage_rows`] the table's SQL and its reports; [`budget`]: per-tenant
//! daily limits, reserved before a call and settled after it, with
//! [`budget_rows`] the SQL.

pub mod budget;
pub mod budget_rows;
pub mod usage;
pub mod usage_rows;
