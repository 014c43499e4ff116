//! [`KeyProvider`] on AWS KMS: `GenerateDataKey` and `Decrypt` with the version's encryption
//! context, so KMS itself refuses a wrapped key presented for another document or version (and
//! CloudTrail records every use).

use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use std::collections::HashMap;
use zeroize::{Zeroize, Zeroizing};

use super::{KeyProvider, WrappedKey};
pub use crate::aws::AwsSettings;
use crate::envelope::{DataKey, EncryptionContext};
use crate::error::{Error, IntegrityError, KeyFailure, Result};

/// Provider name written into wrapped keys.
pub const PROVIDER: &str = "kms";

/// AWS KMS key provider. New data keys are generated under `key_id` (an alias such as
/// `alias/docstore`, a key id or an ARN). Decryption is strict, as in the AWS Encryption SDK's
/// strict mode: a wrapped key is sent to KMS only when it names that key or one added with
/// [`KmsKeys::allow`] (e.g. the previous key until `rewrap` has moved everything), each resolved
/// to its key ARN once with `DescribeKey`. Anything else is [`KeyFailure::NotAllowed`], so content
/// that someone with write access to blobs and metadata sealed under their own KMS key is
/// refused rather than served as authentic.
#[derive(Debug, Clone)]
pub struct KmsKeys {
    client: Client,
    key_id: String,
    also_allowed: Vec<String>,
    allowed: std::sync::Arc<tokio::sync::OnceCell<std::collections::HashSet<String>>>,
}

impl KmsKeys {
    /// A provider generating data keys under `key_id`, and unwrapping only keys wrapped under it.
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        KmsKeys {
            client,
            key_id: key_id.into(),
            also_allowed: Vec::new(),
            allowed: Default::default(),
        }
    }

    /// Also unwraps keys wrapped under `keys` (aliases, key ids or ARNs).
    pub fn allow(mut self, keys: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.also_allowed.extend(keys.into_iter().map(Into::into));
        self.allowed = Default::default();
        self
    }

    /// The key ARNs a wrapped key may name, resolved on first use (a failed lookup is retried
    /// on the next call).
    async fn allowed(&self) -> Result<&std::collections::HashSet<String>> {
        self.allowed
            .get_or_try_init(|| async {
                let mut arns = std::collections::HashSet::new();
                for key in std::iter::once(&self.key_id).chain(&self.also_allowed) {
                    let out = self
                        .client
                        .describe_key()
                        .key_id(key)
                        .send()
                        .await
                        .map_err(|e| kms_error(key, e))?;
                    let arn = out
                        .key_metadata()
                        .and_then(|m| m.arn())
                        .ok_or_else(|| Error::Key("KMS described a key without its ARN".into()))?;
                    arns.insert(arn.to_owned());
                }
                Ok(arns)
            })
            .await
    }

    /// The key new data keys are generated under.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn context(ctx: &EncryptionContext) -> HashMap<String, String> {
        ctx.pairs().iter().cloned().collect()
    }
}

/// Maps a KMS error to a typed error. Messages from KMS are not copied (they can echo request
/// details); the error code is enough to act on.
fn kms_error<E: ProvideErrorMetadata + std::fmt::Debug>(key_id: &str, e: SdkError<E>) -> Error {
    let failure = match e.code() {
        Some("InvalidCiphertextException") | Some("IncorrectKeyException") => {
            return Error::integrity("-", 0, IntegrityError::KeyUnwrap);
        }
        Some("AccessDeniedException") => KeyFailure::AccessDenied,
        Some("DisabledException") => KeyFailure::Disabled,
        Some("NotFoundException") | Some("KMSInvalidStateException") => KeyFailure::NotFound,
        Some("ThrottlingException") | Some("LimitExceededException") => KeyFailure::Throttled,
        _ => KeyFailure::Unavailable,
    };
    tracing::warn!(key_id, code = e.code().unwrap_or("none"), "kms request failed");
    Error::KeyUnavailable {
        key_id: key_id.to_owned(),
        failure,
    }
}

fn to_data_key(blob: Blob) -> Result<DataKey> {
    let mut raw = blob.into_inner();
    let mut key: DataKey = Zeroizing::new([0u8; 32]);
    let ok = raw.len() == 32;
    if ok {
        key.copy_from_slice(&raw);
    }
    raw.zeroize();
    if ok {
        Ok(key)
    } else {
        Err(Error::Key("KMS returned a data key of the wrong length".into()))
    }
}

#[async_trait]
impl KeyProvider for KmsKeys {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<(DataKey, WrappedKey)> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(KmsKeys::context(context)))
            .send()
            .await
            .map_err(|e| kms_error(&self.key_id, e))?;
        let key_arn = out.key_id().unwrap_or(&self.key_id).to_owned();
        let ciphertext = out
            .ciphertext_blob
            .ok_or_else(|| Error::Key("KMS returned no ciphertext".into()))?
            .into_inner();
        let plaintext = out
            .plaintext
            .ok_or_else(|| Error::Key("KMS returned no plaintext key".into()))?;
        Ok((
            to_data_key(plaintext)?,
            WrappedKey {
                provider: PROVIDER.into(),
                key_id: key_arn,
                ciphertext,
            },
        ))
    }

    async fn encrypt_data_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(key.to_vec()))
            .set_encryption_context(Some(KmsKeys::context(context)))
            .send()
            .await
            .map_err(|e| kms_error(&self.key_id, e))?;
        Ok(WrappedKey {
            provider: PROVIDER.into(),
            key_id: out.key_id().unwrap_or(&self.key_id).to_owned(),
            ciphertext: out
                .ciphertext_blob
                .ok_or_else(|| Error::Key("KMS returned no ciphertext".into()))?
                .into_inner(),
        })
    }

    async fn decrypt_data_key(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<DataKey> {
        if !self.allowed().await?.contains(&wrapped.key_id) {
            tracing::warn!(key_id = %wrapped.key_id, "wrapped key names a key not on the allowlist");
            return Err(Error::KeyUnavailable {
                key_id: wrapped.key_id.clone(),
                failure: KeyFailure::NotAllowed,
            });
        }
        let out = self
            .client
            .decrypt()
            .key_id(&wrapped.key_id)
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .set_encryption_context(Some(KmsKeys::context(context)))
            .send()
            .await
            .map_err(|e| kms_error(&wrapped.key_id, e))?;
        to_data_key(
            out.plaintext
                .ok_or_else(|| Error::Key("KMS returned no plaintext key".into()))?,
        )
    }
}
