//! Infrastructure: thin wrappers over what stolid runs on, importing nothing of
//! the domain's. [`aws`] holds the SDKs' shared settings and deadlines; [`blob`]
//! (S3 originals) and [`queue`] (SQS, and the job contract) are built from it;
//! [`tokens`] counts cl100k tokens; [`retry`] is the one backoff policy;
//! [`telemetry`] sets up the JSON logs CloudWatch reads.

pub mod aws;
pub mod blob;
pub mod queue;
pub mod retry;
pub mod telemetry;
pub mod tokens;
