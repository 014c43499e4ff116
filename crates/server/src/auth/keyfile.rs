//! Secret key files under the data directory: created once with `O_EXCL` and mode 0600 in a 0700
//! folder, refused when others can read them, read into zeroized memory.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or writing it.
    #[error("key file {path}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file, or readable by others.
    #[error("key file {0} must be a regular file with mode 0600")]
    Permissions(std::path::PathBuf),
}

/// The key at `path`, created from `generate` if the file does not exist yet.
pub fn open_or_create(
    path: &Path,
    generate: impl FnOnce() -> Zeroizing<Vec<u8>>,
) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(&generate()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyFileError::Permissions(path.to_owned()));
    }
    Ok(Zeroizing::new(std::fs::read(path).map_err(io)?))
}
