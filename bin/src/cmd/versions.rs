//! `docstore versions`.

use docstore::Error;

use super::Ctx;

/// Lists the versions of a document.
pub(crate) async fn run(ctx: &Ctx, document: String) -> Result<(), Error> {
    let (store, who) = (ctx.store().await?, &ctx.who);
    let versions = store.versions(who, &document).await?;
    crate::emit(ctx.json, &versions, |vs| vs.iter().for_each(super::print_version));
    Ok(())
}
