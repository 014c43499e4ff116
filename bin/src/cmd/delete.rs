//! `docstore delete`.

use docstore::Error;

use super::Ctx;

/// Soft-deletes a document: reads fail until it is restored.
pub(crate) async fn run(ctx: &Ctx, document: String) -> Result<(), Error> {
    let (store, who) = (ctx.store().await?, &ctx.who);
    crate::emit(
        ctx.json,
        &store.delete(who, &document).await?,
        super::print_document,
    );
    Ok(())
}
