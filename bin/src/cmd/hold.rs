//! `docstore hold`.

use clap::Args;
use docstore::meta::HoldChange;
use docstore::{Error, Timestamp};

use super::Ctx;

#[derive(Args)]
pub(crate) struct HoldArgs {
    /// Document id.
    document: String,
    /// Set the legal hold.
    #[arg(long, conflicts_with = "off")]
    on: bool,
    /// Clear the legal hold.
    #[arg(long)]
    off: bool,
    /// Keep until this date (2030-12-31 or RFC 3339).
    #[arg(long, conflicts_with = "clear_retention")]
    retain_until: Option<String>,
    /// Clear the retention date.
    #[arg(long)]
    clear_retention: bool,
}

/// Sets or clears a document's legal hold and retention date.
pub(crate) async fn run(ctx: &Ctx, a: HoldArgs) -> Result<(), Error> {
    let (store, who) = (ctx.store().await?, &ctx.who);
    let retain_until = match (a.retain_until, a.clear_retention) {
        (Some(d), _) => Some(Some(Timestamp::parse(&d)?)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let legal_hold = if a.on {
        Some(true)
    } else if a.off {
        Some(false)
    } else {
        None
    };
    if legal_hold.is_none() && retain_until.is_none() {
        return Err(Error::InvalidInput(
            "nothing to change: give --on, --off, --retain-until or --clear-retention".into(),
        ));
    }
    let doc = store
        .set_hold(
            who,
            &a.document,
            HoldChange {
                legal_hold,
                retain_until,
            },
        )
        .await?;
    crate::emit(ctx.json, &doc, super::print_document);
    Ok(())
}
