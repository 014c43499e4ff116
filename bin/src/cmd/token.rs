//! `docstore token`: a bearer token from the embedded local issuer (not for production).

use std::path::Path;
use std::time::Duration;

use clap::Args;
use docstore::Error;
use docstore_server::auth::{LocalIssuer, TokenRequest};
use docstore_server::policy::Role;

use super::serve::server_error;

/// `docstore token`.
#[derive(Args)]
pub(crate) struct TokenArgs {
    /// Role: patient, doctor, staff, admin, auditor, service.
    #[arg(long)]
    role: String,
    /// Subject (user name).
    #[arg(long)]
    sub: String,
    /// Patient id (for --role patient).
    #[arg(long)]
    patient: Option<String>,
    /// Lifetime (e.g. 1h, 30m).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

/// Mints a token for `--role`/`--sub` and prints it.
pub(crate) fn run(data_dir: &Path, a: TokenArgs) -> Result<(), Error> {
    let role = Role::parse(&a.role).ok_or_else(|| {
        Error::InvalidInput(format!(
            "unknown role {:?} (patient, doctor, staff, admin, auditor, service)",
            a.role
        ))
    })?;
    docstore::validate_id("subject", &a.sub)?;
    if let Some(p) = &a.patient {
        docstore::validate_id("patient", p)?;
    }
    if role == Role::Patient && a.patient.is_none() {
        return Err(Error::InvalidInput("a patient token needs --patient".into()));
    }
    let issuer = LocalIssuer::open_or_create(data_dir).map_err(server_error)?;
    let token = issuer
        .mint(&TokenRequest {
            subject: a.sub,
            role,
            patient_id: a.patient,
            ttl: a.ttl,
        })
        .map_err(server_error)?;
    say!("{token}");
    Ok(())
}
