//! `docstore gc`.

use std::time::Duration;

use docstore::Error;

use super::Ctx;

/// Removes unreferenced blobs older than `grace`.
pub(crate) async fn run(ctx: &Ctx, grace: Duration) -> Result<(), Error> {
    let (store, who) = (ctx.store().await?, &ctx.who);
    let report = store.gc(who, grace).await?;
    crate::emit(ctx.json, &report, |r| {
        say!(
            "scanned {} blobs, removed {} orphans, kept {} young orphans",
            r.scanned,
            r.removed,
            r.young_orphans
        )
    });
    Ok(())
}
