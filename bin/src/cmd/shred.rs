//! `docstore shred`.

use docstore::Error;

use super::Ctx;

/// Crypto-shreds one version (destroys its wrapped key); asks for `--yes` first.
pub(crate) async fn run(ctx: &Ctx, document: String, version: u64, yes: bool) -> Result<(), Error> {
    if !yes {
        return Err(Error::InvalidInput(
            "shredding cannot be undone: repeat with --yes".into(),
        ));
    }
    let (store, who) = (ctx.store().await?, &ctx.who);
    let v = store.shred(who, &document, version).await?;
    crate::emit(ctx.json, &v, |v| {
        say!(
            "shredded {} v{}: its content can never be read again",
            v.document_id,
            v.version
        )
    });
    Ok(())
}
