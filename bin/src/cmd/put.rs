//! `docstore put`.

use std::path::{Path, PathBuf};

use clap::Args;
use docstore::{DocumentId, Error, ExamId, Kind, PatientId, PutRequest};

use super::{Ctx, IO_BUF, progress};

#[derive(Args)]
pub(crate) struct PutArgs {
    /// File to store, or - for stdin.
    file: PathBuf,
    /// Patient id.
    #[arg(long)]
    patient: String,
    /// Exam id.
    #[arg(long)]
    exam: String,
    /// Document kind: report, image, attachment.
    #[arg(long, default_value = "report")]
    kind: Kind,
    /// Existing document to add a version to (default: a new document).
    #[arg(long)]
    document: Option<String>,
    /// Media type (default: guessed from the content and the file name).
    #[arg(long)]
    media_type: Option<String>,
    /// Only commit if the latest version is N (0: the document must be new).
    #[arg(long)]
    expected_version: Option<u64>,
}

/// Stores the file (or standard input) as a new document or the next version of one.
pub(crate) async fn run(ctx: &Ctx, a: PutArgs) -> Result<(), Error> {
    let (store, who) = (ctx.store().await?, &ctx.who);
    let io = |e| Error::Io {
        path: a.file.display().to_string(),
        source: e,
    };
    let stdin = a.file.as_os_str() == "-";
    let (len, head) = if stdin {
        (0, Vec::new())
    } else {
        let mut head = vec![0u8; 16];
        let mut f = std::fs::File::open(&a.file).map_err(io)?;
        let n = std::io::Read::read(&mut f, &mut head).map_err(io)?;
        head.truncate(n);
        (f.metadata().map_err(io)?.len(), head)
    };
    let media_type = a
        .media_type
        .clone()
        .unwrap_or_else(|| guess_media_type(&a.file, &head));
    let mut req = PutRequest::new(PatientId::new(a.patient.clone())?, ExamId::new(a.exam.clone())?)
        .kind(a.kind)
        .media_type(media_type);
    req.document_id = a.document.clone().map(DocumentId::new).transpose()?;
    req.expected_version = a.expected_version;
    let bar = progress(len, "put");
    let record = if stdin {
        store.put(who, req, tokio::io::stdin()).await?
    } else {
        let f = tokio::fs::File::open(&a.file).await.map_err(io)?;
        // Each read of a tokio file is a blocking-pool hop: read 2 MiB at a time, not a frame.
        let f = tokio::io::BufReader::with_capacity(IO_BUF, f);
        store.put(who, req, bar.wrap_async_read(f)).await?
    };
    bar.finish_and_clear();
    crate::emit(ctx.json, &record, super::print_version);
    Ok(())
}

/// The media type of a file: sniffed from its first bytes, else from its extension.
fn guess_media_type(path: &Path, head: &[u8]) -> String {
    if head.starts_with(b"%PDF-") {
        return "application/pdf".into();
    }
    // Every image format the stages decode, sniffed by the decoder crate's own magic table, so
    // that what is stored as an image is what the stages read as one.
    if let Some(format) = docstore_stages::thumbnail::image_format(head) {
        return format.to_mime_type().into();
    }
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("txt") => "text/plain",
        Some("json") => "application/json",
        Some("dcm") => "application/dicom",
        _ => "application/octet-stream",
    }
    .into()
}
