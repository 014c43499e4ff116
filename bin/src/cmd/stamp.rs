//! `docstore stamp`: the stamp stage on a local PDF, no store.

use docstore::Error;
use serde_json::json;

/// `docstore stamp FILE`: the stamp stage on a local PDF.
pub(crate) async fn run(
    file: &std::path::Path,
    output: Option<&std::path::Path>,
    info: docstore_stages::stamp::StampInfo,
    json_out: bool,
) -> Result<(), Error> {
    use docstore_stages::stamp::{StampLimits, stamp_pdf};
    let limits = StampLimits::default();
    let bytes = super::read_limited(file, limits.max_input)?;
    let stamped = tokio::task::spawn_blocking(move || stamp_pdf(&bytes, &info, &limits))
        .await
        .map_err(|e| Error::InvalidInput(format!("stamp task failed: {e}")))?
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", file.display())))?;
    let out = output
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| file.with_extension("stamped.pdf"));
    std::fs::write(&out, &stamped).map_err(|e| Error::io(out.display().to_string(), e))?;
    let v = json!({"output": out, "bytes": stamped.len()});
    crate::emit(json_out, &v, |_| {
        say!("{} ({} bytes)", out.display(), stamped.len())
    });
    Ok(())
}
