//! `docstore rewrap`.

use clap::Args;
use docstore::Error;

use super::Ctx;

#[derive(Args)]
pub(crate) struct RewrapArgs {
    /// Target key: `kms://alias/name` or `keyring:///abs/path.json` (created if missing).
    #[arg(long)]
    to: String,
    /// Only these documents (default: every document).
    #[arg(long = "document")]
    documents: Vec<String>,
    /// Resume after this document id (printed by an interrupted run).
    #[arg(long)]
    after: Option<String>,
}

/// Moves versions to another master key without touching their content (resumable).
pub(crate) async fn run(ctx: &Ctx, a: RewrapArgs) -> Result<(), Error> {
    let (store, who) = (ctx.store().await?, &ctx.who);
    let mut target_cfg = ctx.config.clone();
    target_cfg.keys = a.to.clone();
    let target = target_cfg.key_provider(true)?;
    let report = store
        .rewrap(who, target, &a.documents, a.after.as_deref())
        .await?;
    crate::emit(ctx.json, &report, |r| {
        say!(
            "rewrapped {} versions and {} renditions, {} versions already under the target key, {} shredded left alone",
            r.rewrapped,
            r.renditions_rewrapped,
            r.already,
            r.shredded
        )
    });
    Ok(())
}
