//! `docstore purge`.

use docstore::Error;
use serde_json::json;

use super::Ctx;

/// Removes a deleted document for good (refused under legal hold or retention).
pub(crate) async fn run(ctx: &Ctx, document: String) -> Result<(), Error> {
    let (store, who) = (ctx.store().await?, &ctx.who);
    let blobs = store.purge(who, &document).await?;
    crate::emit(ctx.json, &json!({"purged": document, "blobs": blobs}), |_| {
        say!("purged {document} ({blobs} blobs)")
    });
    Ok(())
}
