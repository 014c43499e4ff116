//! `docstore thumbnail`: the thumbnail stage on a local file, no store.

use docstore::Error;
use serde_json::json;

/// `docstore thumbnail FILE`: the thumbnail stage on a local file.
pub(crate) async fn run(
    file: &std::path::Path,
    output: Option<&std::path::Path>,
    json_out: bool,
) -> Result<(), Error> {
    use docstore_stages::thumbnail::{ThumbnailError, ThumbnailLimits, thumbnail_image, thumbnail_pdf};
    let limits = ThumbnailLimits::default();
    let bytes = super::read_limited(file, limits.max_input)?;
    let thumb = tokio::task::spawn_blocking(move || {
        if bytes.starts_with(b"%PDF-") {
            thumbnail_pdf(&bytes, &limits)
        } else {
            thumbnail_image(&bytes, &limits)
        }
    })
    .await
    .map_err(|e| Error::InvalidInput(format!("thumbnail task failed: {e}")))?
    .map_err(|e: ThumbnailError| Error::InvalidInput(format!("{}: {e}", file.display())))?;
    let out = output
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| file.with_extension("thumb.png"));
    std::fs::write(&out, &thumb.png).map_err(|e| Error::io(out.display().to_string(), e))?;
    let v = json!({"output": out, "width": thumb.width, "height": thumb.height,
                   "source_width": thumb.source_width, "source_height": thumb.source_height});
    crate::emit(json_out, &v, |_| {
        say!(
            "{} ({}×{} from {}×{})",
            out.display(),
            thumb.width,
            thumb.height,
            thumb.source_width,
            thumb.source_height
        )
    });
    Ok(())
}
