//! Choosing backends with URL-like settings, from a TOML file and/or environment variables.
//!
//! | setting | env var | accepted values |
//! | --- | --- | --- |
//! | `blobs` | `DOCSTORE_BLOBS` | `file:///abs/dir`, `s3://bucket[/prefix]`, `memory://` |
//! | `metadata` | `DOCSTORE_METADATA` | `sqlite:///abs/file.sqlite`, `postgres://user@host:port/db`, `dynamodb://table` |
//! | `keys` | `DOCSTORE_KEYS` | `keyring:///abs/keyring.json`, `kms://alias/name` (or a key id / ARN; `kms://NEW,OLD` also unwraps keys wrapped under OLD) |
//! | `audit` | `DOCSTORE_AUDIT` | `file:///abs/audit.jsonl` |
//!
//! AWS endpoints, region and credentials come from the standard `AWS_*` variables. Every
//! combination is allowed; CI runs the conformance suite on the mixes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::audit::{AuditSink, JsonlAudit};
use crate::blob::{BlobStore, ObjectBlobStore};
use crate::error::{Error, Result};
use crate::keys::KeyProvider;
use crate::keys::keyring::Keyring;
use crate::meta::MetadataStore;
use crate::meta::sqlite::SqliteMetadata;
use crate::store::{DocStore, LocalLayout};

/// Where each part of a store lives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Blob store URL.
    pub blobs: String,
    /// Metadata store URL.
    pub metadata: String,
    /// Key provider URL.
    pub keys: String,
    /// Audit sink URL.
    pub audit: String,
}

/// A partial configuration, as read from a file or the environment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Partial {
    blobs: Option<String>,
    metadata: Option<String>,
    keys: Option<String>,
    audit: Option<String>,
}

impl StoreConfig {
    /// The embedded default under `root` (the layout `docstore init` creates).
    pub fn local(root: &Path) -> Self {
        let l = LocalLayout::new(root);
        let url = |scheme: &str, p: PathBuf| format!("{scheme}://{}", p.display());
        StoreConfig {
            blobs: url("file", l.objects()),
            metadata: url("sqlite", l.metadata()),
            keys: url("keyring", l.keyring()),
            audit: url("file", l.audit()),
        }
    }

    /// Resolves settings: environment variables override the TOML file, which overrides the
    /// embedded default under `root`.
    pub fn resolve(root: &Path, file: Option<&Path>) -> Result<Self> {
        let mut cfg = StoreConfig::local(root);
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
            cfg = StoreConfig::from_toml(root, &text).map_err(|e| match e {
                Error::InvalidInput(why) => Error::InvalidInput(format!("config {}: {why}", path.display())),
                other => other,
            })?;
        }
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        cfg.apply(Partial {
            blobs: var("DOCSTORE_BLOBS"),
            metadata: var("DOCSTORE_METADATA"),
            keys: var("DOCSTORE_KEYS"),
            audit: var("DOCSTORE_AUDIT"),
        });
        Ok(cfg)
    }

    /// Settings from a TOML text over the embedded default under `root` (environment not read).
    pub fn from_toml(root: &Path, text: &str) -> Result<Self> {
        let p: Partial = toml::from_str(text).map_err(|e| Error::InvalidInput(e.message().to_owned()))?;
        let mut cfg = StoreConfig::local(root);
        cfg.apply(p);
        Ok(cfg)
    }

    /// Checks the form of every setting (a scheme this build opens; absolute paths for local
    /// files) without opening anything.
    pub fn validate(&self) -> Result<()> {
        let aws = cfg!(feature = "aws");
        let pg = cfg!(feature = "postgres");
        let settings: [(&str, &str, &[Scheme]); 4] = [
            (
                "blobs",
                &self.blobs,
                &[("file", true, true), ("memory", true, false), ("s3", aws, false)],
            ),
            (
                "metadata",
                &self.metadata,
                &[
                    ("sqlite", true, true),
                    ("postgres", pg, false),
                    ("postgresql", pg, false),
                    ("dynamodb", aws, false),
                ],
            ),
            (
                "keys",
                &self.keys,
                &[("keyring", true, true), ("kms", aws, false)],
            ),
            ("audit", &self.audit, &[("file", true, true)]),
        ];
        for (what, url, schemes) in settings {
            let (scheme, rest) = split(url, what)?;
            match schemes.iter().find(|(s, on, _)| *s == scheme && *on) {
                Some((_, _, true)) => {
                    absolute(rest, what)?;
                }
                Some(_) => {}
                None => return Err(unsupported(what, scheme)),
            }
        }
        Ok(())
    }

    fn apply(&mut self, p: Partial) {
        for (slot, v) in [
            (&mut self.blobs, p.blobs),
            (&mut self.metadata, p.metadata),
            (&mut self.keys, p.keys),
            (&mut self.audit, p.audit),
        ] {
            if let Some(v) = v {
                *slot = v;
            }
        }
    }

    /// Whether every part is the embedded default under `root`.
    pub fn is_local(&self, root: &Path) -> bool {
        *self == StoreConfig::local(root)
    }

    /// Opens the store these settings describe. With `create`, local files that do not exist yet
    /// (SQLite database, keyring) are created; remote resources must exist (see `docstore provision`).
    pub async fn open(&self, create: bool) -> Result<DocStore> {
        let blobs = self.blob_store()?;
        let meta = self.metadata_store(create).await?;
        let keys = self.key_provider(create)?;
        let audit = self.audit_sink()?;
        Ok(DocStore::new(blobs, meta, keys, audit))
    }

    /// Like [`StoreConfig::open`], with explicit AWS settings instead of the `AWS_*` variables.
    #[cfg(feature = "aws")]
    pub async fn open_with(&self, create: bool, aws: &crate::aws::AwsSettings) -> Result<DocStore> {
        let blobs = self.blob_store_with(aws)?;
        let meta = self.metadata_store_with(create, aws).await?;
        let keys = self.key_provider_with(create, aws)?;
        let audit = self.audit_sink()?;
        Ok(DocStore::new(blobs, meta, keys, audit))
    }

    /// The blob store.
    pub fn blob_store(&self) -> Result<Arc<dyn BlobStore>> {
        self.blob_store_with(&aws_from_env())
    }

    #[cfg_attr(not(feature = "aws"), allow(unused_variables))]
    fn blob_store_with(&self, aws: &AwsFromEnv) -> Result<Arc<dyn BlobStore>> {
        let (scheme, rest) = split(&self.blobs, "blobs")?;
        match scheme {
            "file" => Ok(Arc::new(ObjectBlobStore::local(Path::new(absolute(
                rest, "blobs",
            )?))?)),
            "memory" => Ok(Arc::new(ObjectBlobStore::new(Arc::new(
                object_store::memory::InMemory::new(),
            )))),
            #[cfg(feature = "aws")]
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                Ok(Arc::new(ObjectBlobStore::s3(bucket, Some(prefix), aws)?))
            }
            other => Err(unsupported("blobs", other)),
        }
    }

    /// The metadata store.
    pub async fn metadata_store(&self, create: bool) -> Result<Arc<dyn MetadataStore>> {
        self.metadata_store_with(create, &aws_from_env()).await
    }

    #[cfg_attr(not(feature = "aws"), allow(unused_variables))]
    async fn metadata_store_with(&self, create: bool, aws: &AwsFromEnv) -> Result<Arc<dyn MetadataStore>> {
        let (scheme, rest) = split(&self.metadata, "metadata")?;
        match scheme {
            "sqlite" => Ok(Arc::new(
                SqliteMetadata::open(Path::new(absolute(rest, "metadata")?), create).await?,
            )),
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => Ok(Arc::new(
                crate::meta::postgres::PostgresMetadata::connect(&self.metadata, 16).await?,
            )),
            #[cfg(feature = "aws")]
            "dynamodb" => Ok(Arc::new(crate::meta::dynamodb::DynamoMetadata::new(
                aws.dynamodb_client(),
                rest,
            ))),
            other => Err(unsupported("metadata", other)),
        }
    }

    /// The key provider.
    pub fn key_provider(&self, create: bool) -> Result<Arc<dyn KeyProvider>> {
        self.key_provider_with(create, &aws_from_env())
    }

    #[cfg_attr(not(feature = "aws"), allow(unused_variables))]
    fn key_provider_with(&self, create: bool, aws: &AwsFromEnv) -> Result<Arc<dyn KeyProvider>> {
        let (scheme, rest) = split(&self.keys, "keys")?;
        match scheme {
            "keyring" => {
                let path = Path::new(absolute(rest, "keys")?);
                if create && !path.exists() {
                    Ok(Arc::new(Keyring::create(path)?))
                } else {
                    Ok(Arc::new(Keyring::open(path)?))
                }
            }
            #[cfg(feature = "aws")]
            // `kms://NEW[,OLDER…]`: data keys are made under the first; the others may still be
            // unwrapped (a rotation in progress). No other key is ever trusted.
            "kms" => {
                let mut keys = rest.split(',').map(str::trim);
                let first = keys
                    .next()
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| Error::InvalidInput("keys: kms:// needs a key id, alias or ARN".into()))?;
                Ok(Arc::new(
                    crate::keys::kms::KmsKeys::new(aws.kms_client(), first)
                        .allow(keys.filter(|k| !k.is_empty())),
                ))
            }
            other => Err(unsupported("keys", other)),
        }
    }

    /// The audit sink.
    pub fn audit_sink(&self) -> Result<Arc<dyn AuditSink>> {
        let (scheme, rest) = split(&self.audit, "audit")?;
        match scheme {
            "file" => Ok(Arc::new(JsonlAudit::open(Path::new(absolute(rest, "audit")?))?)),
            other => Err(unsupported("audit", other)),
        }
    }
}

#[cfg(feature = "aws")]
type AwsFromEnv = crate::aws::AwsSettings;
#[cfg(feature = "aws")]
fn aws_from_env() -> AwsFromEnv {
    crate::aws::AwsSettings::from_env()
}
/// Without the `aws` feature there are no AWS settings to carry.
#[cfg(not(feature = "aws"))]
type AwsFromEnv = ();
#[cfg(not(feature = "aws"))]
fn aws_from_env() -> AwsFromEnv {}

/// A scheme a setting accepts: (name, compiled into this build, takes an absolute path).
type Scheme = (&'static str, bool, bool);

fn split<'a>(url: &'a str, what: &str) -> Result<(&'a str, &'a str)> {
    url.split_once("://")
        .filter(|(s, _)| !s.is_empty())
        .ok_or_else(|| Error::InvalidInput(format!("{what} setting {url:?} is not a URL like scheme://...")))
}

fn absolute<'a>(path: &'a str, what: &str) -> Result<&'a str> {
    if path.starts_with('/') {
        Ok(path)
    } else {
        Err(Error::InvalidInput(format!(
            "{what}: file paths must be absolute (file:///abs/path), got {path:?}"
        )))
    }
}

fn unsupported(what: &str, scheme: &str) -> Error {
    let hint = match scheme {
        "s3" | "dynamodb" | "kms" => " (this build lacks the `aws` feature)",
        "postgres" | "postgresql" => " (this build lacks the `postgres` feature)",
        _ => "",
    };
    Error::InvalidInput(format!("{what}: unsupported scheme {scheme:?}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_default_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("docstore.toml");
        std::fs::write(&f, "metadata = \"postgres://u@127.0.0.1:5/db\"\n").unwrap();
        let cfg = StoreConfig::resolve(dir.path(), Some(&f)).unwrap();
        assert_eq!(cfg.metadata, "postgres://u@127.0.0.1:5/db");
        assert_eq!(cfg.blobs, StoreConfig::local(dir.path()).blobs);
        std::fs::write(&f, "metdata = \"x\"\n").unwrap();
        assert!(matches!(
            StoreConfig::resolve(dir.path(), Some(&f)),
            Err(Error::InvalidInput(_))
        ));
    }

    #[tokio::test]
    async fn bad_urls_are_clear_errors() {
        let mut cfg = StoreConfig::local(Path::new("/tmp/x"));
        cfg.blobs = "ftp://host/x".into();
        assert!(
            matches!(cfg.open(false).await, Err(Error::InvalidInput(m)) if m.contains("unsupported scheme"))
        );
        cfg.blobs = "file://relative/path".into();
        assert!(matches!(cfg.blob_store(), Err(Error::InvalidInput(m)) if m.contains("absolute")));
        cfg.blobs = "no-scheme".into();
        assert!(cfg.blob_store().is_err());
        #[cfg(feature = "aws")]
        for keys in ["kms://", "kms://,alias/old"] {
            cfg.keys = keys.into();
            assert!(
                matches!(cfg.key_provider(false), Err(Error::InvalidInput(m)) if m.contains("kms://")),
                "{keys}"
            );
        }
    }

    #[test]
    fn validate_agrees_with_what_opens() {
        let root = Path::new("/srv/d");
        assert!(StoreConfig::local(root).validate().is_ok());
        let cfg = StoreConfig::from_toml(root, "keys = \"keyring://rel/k.json\"").unwrap();
        assert!(matches!(cfg.validate(), Err(Error::InvalidInput(m)) if m.contains("absolute")));
        let cfg = StoreConfig::from_toml(root, "audit = \"s3://b\"").unwrap();
        assert!(matches!(cfg.validate(), Err(Error::InvalidInput(m)) if m.contains("unsupported scheme")));
        let cfg = StoreConfig::from_toml(root, "blobs = \"memory://\"").unwrap();
        assert!(cfg.validate().is_ok());
        assert!(StoreConfig::from_toml(root, "blobs = 3").is_err());
        assert!(StoreConfig::from_toml(root, "[x]\nblobs = \"memory://\"").is_err());
    }
}
