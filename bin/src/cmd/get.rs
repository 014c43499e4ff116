//! `docstore get`.

use std::path::{Path, PathBuf};

use clap::Args;
use docstore::Error;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{Ctx, IO_BUF, progress};

#[derive(Args)]
pub(crate) struct GetArgs {
    /// Document id.
    document: String,
    /// Version number (default: latest).
    #[arg(long)]
    version: Option<u64>,
    /// Byte range START-END (end exclusive), decrypting only the frames it needs.
    #[arg(long, value_parser = parse_range)]
    range: Option<(u64, u64)>,
    /// Output file (default: stdout). Written to a temporary name and renamed only when every
    /// byte has authenticated, so a failed read leaves no file.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once('-').ok_or("expected START-END")?;
    let a: u64 = a.trim().parse().map_err(|_| "bad START")?;
    let b: u64 = b.trim().parse().map_err(|_| "bad END")?;
    if b <= a {
        return Err("END must be greater than START".into());
    }
    Ok((a, b))
}

/// Writes a version (or a byte range of it) to a file, renamed into place only once every byte
/// has authenticated, or to standard output.
pub(crate) async fn run(ctx: &Ctx, a: GetArgs) -> Result<(), Error> {
    let (store, who) = (ctx.store().await?, &ctx.who);
    let out_err = |path: &Path| {
        let p = path.display().to_string();
        move |e| Error::Io { path: p, source: e }
    };
    if let Some((start, end)) = a.range {
        let bytes = store.get_range(who, &a.document, a.version, start..end).await?;
        return match &a.output {
            Some(path) => write_atomically(path, &bytes).await,
            None => tokio::io::stdout()
                .write_all(&bytes)
                .await
                .map_err(out_err(Path::new("stdout"))),
        };
    }
    let doc = store.get(who, &a.document, a.version).await?;
    let bar = progress(doc.record.size, "get");
    let mut stream = doc.into_stream();
    match &a.output {
        Some(path) => {
            let tmp = temp_name(path);
            let result = async {
                let f = docstore::create_private(&tmp).await.map_err(out_err(&tmp))?;
                // Each write of a tokio file is a blocking-pool hop: frames (64 KiB) are batched.
                let mut f = tokio::io::BufWriter::with_capacity(IO_BUF, f);
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    bar.inc(chunk.len() as u64);
                    f.write_all(&chunk).await.map_err(out_err(&tmp))?;
                }
                f.flush().await.map_err(out_err(&tmp))?;
                f.get_ref().sync_all().await.map_err(out_err(&tmp))?;
                tokio::fs::rename(&tmp, path).await.map_err(out_err(path))
            }
            .await;
            if result.is_err() {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            result?;
        }
        None => {
            let mut out = tokio::io::BufWriter::with_capacity(IO_BUF, tokio::io::stdout());
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk?)
                    .await
                    .map_err(out_err(Path::new("stdout")))?;
            }
            out.flush().await.map_err(out_err(Path::new("stdout")))?;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// A hidden name beside `path` for the bytes being written.
fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", uuid::Uuid::new_v4().simple()))
}

/// Writes `bytes` to a new private file and renames it to `path`; on failure nothing is left.
async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = temp_name(path);
    let io = |e| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    let result = async {
        let mut f = docstore::create_private(&tmp).await?;
        f.write_all(bytes).await?;
        f.sync_all().await?;
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result.map_err(io)
}
