//! `docstore list`.

use clap::Args;
use docstore::Error;

use super::Ctx;

#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct ListArgs {
    /// Patient id.
    #[arg(long)]
    patient: Option<String>,
    /// Exam id.
    #[arg(long)]
    exam: Option<String>,
}

/// Lists the documents of a patient or of an exam.
pub(crate) async fn run(ctx: &Ctx, a: ListArgs) -> Result<(), Error> {
    let (store, who) = (ctx.store().await?, &ctx.who);
    let docs = match (a.patient, a.exam) {
        (Some(p), _) => store.documents_of_patient(who, &p).await?,
        (None, Some(e)) => store.documents_of_exam(who, &e).await?,
        // clap's argument group already refuses this; the library is not asked a vague question.
        (None, None) => return Err(Error::InvalidInput("give --patient or --exam".into())),
    };
    crate::emit(ctx.json, &docs, |ds| ds.iter().for_each(super::print_document));
    Ok(())
}
