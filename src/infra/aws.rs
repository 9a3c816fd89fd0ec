//! The AWS SDK's shared settings for S3 and SQS: region, endpoint (emulators),
//! credentials, and the deadlines every call gets.

use std::time::Duration;

use aws_sdk_s3::config::timeout::TimeoutConfig;

use crate::config::AwsConfig;

/// The SDK configuration both clients are built from.
pub async fn sdk_config(config: &AwsConfig) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(config.region.clone()));
    if let Some(endpoint) = &config.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some((id, secret)) = &config.credentials {
        loader =
            loader.credentials_provider(aws_sdk_s3::config::Credentials::new(id, secret, None, None, "stolid-config"));
    }
    loader.load().await
}

/// Deadlines for an AWS call: `attempt` per try, 2.5 times that for the whole
/// call with the SDK's retries, and a quick connect.
pub fn call_timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(attempt.min(Duration::from_secs(3)))
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt.mul_f64(2.5))
        .build()
}
