//! `docstore restore`.

use docstore::Error;

use super::Ctx;

/// Undoes a soft delete.
pub(crate) async fn run(ctx: &Ctx, document: String) -> Result<(), Error> {
    let (store, who) = (ctx.store().await?, &ctx.who);
    crate::emit(
        ctx.json,
        &store.restore(who, &document).await?,
        super::print_document,
    );
    Ok(())
}
