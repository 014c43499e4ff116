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
/// `alias/docstore`, a key id or an ARN); decryption uses whatever key the wrapped key names, so
/// versions wrapped under an older key keep reading after a rotation.
#[derive(Debug, Clone)]
pub struct KmsKeys {
    client: Client,
    key_id: String,
}

impl KmsKeys {
    /// A provider generating data keys under `key_id`.
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        KmsKeys {
            client,
            key_id: key_id.into(),
        }
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
