//! Settings shared by the AWS-backed stores (S3, DynamoDB, KMS).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_kms::Client;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig, timeout::TimeoutConfig};

/// Connection settings shared by the AWS clients.
#[derive(Clone)]
pub struct AwsSettings {
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Endpoint override (moto, LocalStack, VPC endpoints); `None` for AWS itself.
    pub endpoint: Option<String>,
    /// Static credentials (access key id, secret); `None` uses the AWS SDK's default chain
    /// (environment, shared config and credentials files with `AWS_PROFILE`, web identity, ECS
    /// container credentials, EC2 instance role), as every AWS tool does.
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

    /// Settings from the standard variables: `AWS_REGION`, `AWS_ENDPOINT_URL`, and static
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` when both are set (otherwise the default
    /// chain finds the credentials).
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

    /// The credentials every client signs with: the static pair, or the default chain (built on
    /// first use, since building it is asynchronous).
    fn credentials(&self) -> SharedCredentialsProvider {
        match &self.credentials {
            Some((id, secret)) => {
                SharedCredentialsProvider::new(Credentials::new(id, secret, None, None, "docstore-static"))
            }
            None => SharedCredentialsProvider::new(DefaultChain {
                region: Region::new(self.region.clone()),
                chain: Arc::default(),
            }),
        }
    }

    /// An S3 object store for `bucket` with these settings (path-style when an endpoint is set).
    pub fn s3_store(&self, bucket: &str) -> Result<object_store::aws::AmazonS3, object_store::Error> {
        use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_credentials(Arc::new(S3Credentials {
                source: self.credentials(),
                cached: Default::default(),
            }))
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
        let mut b = c::Builder::new()
            .behavior_version(c::BehaviorVersion::v2026_01_12())
            .region(c::Region::new(self.region.clone()))
            .credentials_provider(self.credentials())
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

/// The SDK's default credential chain, built on first use.
#[derive(Debug)]
struct DefaultChain {
    region: Region,
    chain: Arc<tokio::sync::OnceCell<DefaultCredentialsChain>>,
}

impl ProvideCredentials for DefaultChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let chain = self
                .chain
                .get_or_init(|| {
                    DefaultCredentialsChain::builder()
                        .region(self.region.clone())
                        .build()
                })
                .await;
            chain.provide_credentials().await
        })
    }
}

/// The same credentials for `object_store`'s S3 client, which asks before every request: kept
/// until five minutes before they expire (the SDK clients cache theirs the same way).
#[derive(Debug)]
struct S3Credentials {
    source: SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<(Arc<object_store::aws::AwsCredential>, Option<SystemTime>)>>,
}

#[async_trait::async_trait]
impl object_store::CredentialProvider for S3Credentials {
    type Credential = object_store::aws::AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        let mut cached = self.cached.lock().await;
        let fresh = |expiry: &Option<SystemTime>| {
            expiry.is_none_or(|t| SystemTime::now() + Duration::from_secs(300) < t)
        };
        if let Some((credential, _)) = cached.as_ref().filter(|(_, expiry)| fresh(expiry)) {
            return Ok(credential.clone());
        }
        let c = self
            .source
            .provide_credentials()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        let credential = Arc::new(object_store::aws::AwsCredential {
            key_id: c.access_key_id().to_owned(),
            secret_key: c.secret_access_key().to_owned(),
            token: c.session_token().map(str::to_owned),
        });
        *cached = Some((credential.clone(), c.expiry()));
        Ok(credential)
    }
}
