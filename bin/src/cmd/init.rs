//! `docstore init`.

use docstore::{DocStore, Error};
use serde_json::json;

use super::Ctx;

/// Creates the embedded store in the data directory, or the configured backends' resources.
pub(crate) async fn run(ctx: &Ctx) -> Result<(), Error> {
    let dir = &ctx.dir;
    if ctx.local {
        DocStore::init_local(dir).await?;
    } else {
        ctx.config.open(true).await?;
    }
    crate::emit(ctx.json, &json!({"initialized": dir}), |_| {
        say!("initialised {}", dir.display());
        eprintln!("note: the local keyring is for development only; use AWS KMS in production");
    });
    Ok(())
}
