//! Settings shared by the AWS-backed stores (S3, DynamoDB, KMS).

use std::time::Duration;

use aws_sdk_kms::Client;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig, timeout::TimeoutConfig};

/// Connection settings shared by the AWS clients.
#[derive(Clone)]
pub struct AwsSettings {
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Endpoint override (moto, LocalStack, VPC endpoints); `None` for AWS itself.
    pub endpoint: Option<String>,
    /// Static credentials (access key id, secret); `None` is not supported yet (see README).
    pub credentials: Option<(String, String)>,
    /// Attempts per call, including the first (throttling and transient errors are retried with
    /// exponential backoff and jitter by the SDK).
    pub max_attempts: u32,
    /// Per-attempt timeout.
    pub attempt_timeout: Duration,
}

impl std::fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials.as_ref().map(|_| "<redacted>"))
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl AwsSettings {
    /// Settings for a local test endpoint with static test credentials.
    pub fn local(endpoint: &str) -> Self {
        AwsSettings {
            region: "us-east-1".into(),
            endpoint: Some(endpoint.into()),
            credentials: Some(("testing".into(), "testing".into())),
            max_attempts: 3,
            attempt_timeout: Duration::from_secs(5),
        }
    }

    /// Settings from the standard variables: `AWS_REGION`, `AWS_ENDPOINT_URL`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        AwsSettings {
            region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            endpoint: var("AWS_ENDPOINT_URL"),
            credentials: var("AWS_ACCESS_KEY_ID").zip(var("AWS_SECRET_ACCESS_KEY")),
            max_attempts: 3,
            attempt_timeout: Duration::from_secs(10),
        }
    }

    fn credentials(&self) -> Credentials {
        let (id, secret) = self.credentials.clone().unwrap_or_default();
        Credentials::new(id, secret, None, None, "docstore-static")
    }

    /// An S3 object store for `bucket` with these settings (path-style when an endpoint is set).
    pub fn s3_store(&self, bucket: &str) -> Result<object_store::aws::AmazonS3, object_store::Error> {
        use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
        let (id, secret) = self.credentials.clone().unwrap_or_default();
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_access_key_id(id)
            .with_secret_access_key(secret)
            // Never overwrite a key: `PutMode::Create` sends If-None-Match.
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(self.attempt_timeout)
                    .with_connect_timeout(self.attempt_timeout),
            )
            .with_retry(object_store::RetryConfig {
                max_retries: self.max_attempts.saturating_sub(1) as usize,
                retry_timeout: self.attempt_timeout * self.max_attempts,
                backoff: object_store::BackoffConfig::default(),
            });
        if let Some(e) = &self.endpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false);
        }
        b.build()
    }

    /// A KMS client for these settings.
    pub fn kms_client(&self) -> Client {
        let mut b = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::v2026_01_12())
            .region(Region::new(self.region.clone()))
            .credentials_provider(self.credentials())
            .retry_config(RetryConfig::standard().with_max_attempts(self.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(self.attempt_timeout)
                    .build(),
            );
        if let Some(e) = &self.endpoint {
            b = b.endpoint_url(e);
        }
        Client::from_conf(b.build())
    }

    /// A DynamoDB client for these settings.
    pub fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        use aws_sdk_dynamodb::config as c;
        let (id, secret) = self.credentials.clone().unwrap_or_default();
        let mut b = c::Builder::new()
            .behavior_version(c::BehaviorVersion::v2026_01_12())
            .region(c::Region::new(self.region.clone()))
            .credentials_provider(c::Credentials::new(id, secret, None, None, "docstore-static"))
            .retry_config(c::retry::RetryConfig::standard().with_max_attempts(self.max_attempts))
            .timeout_config(
                c::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(self.attempt_timeout)
                    .build(),
            );
        if let Some(e) = &self.endpoint {
            b = b.endpoint_url(e);
        }
        aws_sdk_dynamodb::Client::from_conf(b.build())
    }
}
