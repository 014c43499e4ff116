//! `docstore audit` and `docstore audit verify`.

use std::path::PathBuf;

use clap::Subcommand;
use docstore::Error;

use super::Ctx;

#[derive(Subcommand)]
pub(crate) enum AuditCheck {
    /// Check the audit file's hash chain: reports the first edited, removed or reordered line.
    Verify {
        /// Audit file (default: the configured one).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// Prints the newest `limit` audit records, optionally of one document.
pub(crate) async fn show(ctx: &Ctx, document: Option<String>, limit: usize) -> Result<(), Error> {
    let (store, who) = (ctx.store().await?, &ctx.who);
    let records = store.audit_log(who, document.as_deref(), limit).await?;
    crate::emit(ctx.json, &records, |rs| {
        for r in rs {
            say!(
                "{}  {:<14} {:<12} {}{}  {}",
                r.at.to_rfc3339(),
                r.action,
                r.outcome,
                r.document.as_deref().unwrap_or("-"),
                r.version.map(|v| format!(" v{v}")).unwrap_or_default(),
                r.actor
            );
        }
    });
    Ok(())
}

/// Checks the audit file's hash chain; a break is an error naming its line.
pub(crate) fn verify(ctx: &Ctx, file: Option<PathBuf>) -> Result<(), Error> {
    let path = match file {
        Some(f) => f,
        None => PathBuf::from(ctx.config.audit.strip_prefix("file://").ok_or_else(|| {
            Error::InvalidInput("the configured audit sink is not a file: give --file".into())
        })?),
    };
    let report = docstore::audit::verify_chain(&path)?;
    crate::emit(ctx.json, &report, |r| match &r.first_break {
        None => say!("audit chain intact: {} records", r.lines),
        Some(b) => say!("audit chain broken at line {}: {}", b.line, b.reason),
    });
    match report.first_break {
        None => Ok(()),
        Some(b) => Err(Error::Refused {
            document: path.display().to_string(),
            reason: format!("audit chain broken at line {}", b.line),
        }),
    }
}
