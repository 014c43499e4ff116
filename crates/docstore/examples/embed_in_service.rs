//! Embedding the store in a service of your own: one `DocStore` shared by every task (it is
//! `Send + Sync`; clone the `Arc`), your own error type built from the library's typed errors,
//! and a restart that finds everything again. Run:
//! `cargo run -p docstore --example embed_in_service`.

use std::sync::Arc;

use docstore::{DocStore, Error, ExamId, Identity, PatientId, PutRequest};

/// What the service's callers see: no storage detail, a class they can act on.
#[derive(Debug)]
enum ResultsError {
    /// Unknown document (or one the caller may not see: the store answers the same).
    Missing,
    /// Try again later (a backend is down).
    Unavailable,
    /// Anything else, by the library's stable class name.
    Failed(&'static str),
}

impl From<Error> for ResultsError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound { .. } | Error::Deleted { .. } => ResultsError::Missing,
            Error::Unavailable { .. } | Error::KeyUnavailable { .. } => ResultsError::Unavailable,
            other => ResultsError::Failed(other.class()),
        }
    }
}

impl std::fmt::Display for ResultsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResultsError::Missing => f.write_str("no such result"),
            ResultsError::Unavailable => f.write_str("try again later"),
            ResultsError::Failed(class) => write!(f, "failed ({class})"),
        }
    }
}

/// A clinic's results service with the store inside.
#[derive(Clone)]
struct Results {
    store: Arc<DocStore>,
}

impl Results {
    async fn publish(
        &self,
        who: &Identity,
        patient: &str,
        exam: &str,
        text: &str,
    ) -> Result<String, ResultsError> {
        let request = PutRequest::new(PatientId::new(patient)?, ExamId::new(exam)?).media_type("text/plain");
        Ok(self.store.put(who, request, text.as_bytes()).await?.document_id)
    }

    async fn fetch(&self, who: &Identity, document: &str) -> Result<String, ResultsError> {
        let bytes = self.store.get(who, document, None).await?.read_all().await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("data");
    let results = Results {
        store: Arc::new(DocStore::init_local(&root).await?),
    };
    let who = Identity::new("service:results");
    // Sixteen concurrent requests on one store.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (results, who) = (results.clone(), who.clone());
            tokio::spawn(async move {
                results
                    .publish(
                        &who,
                        &format!("patient-{i}"),
                        &format!("exam-{i}"),
                        &format!("Resultado {i}: normal"),
                    )
                    .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await?.map_err(|e| e.to_string())?);
    }
    println!("published {} reports", ids.len());
    if let Err(e) = results.fetch(&who, "no-such-document").await {
        println!("an unknown document: {e}");
    }
    if let Err(e) = results.publish(&who, "", "exam-x", "text").await {
        println!("an empty patient id: {e}");
    }

    // A restart: the same folder opened again has every report.
    drop(results);
    let results = Results {
        store: Arc::new(DocStore::open_local(&root).await?),
    };
    let first = results.fetch(&who, &ids[0]).await.map_err(|e| e.to_string())?;
    println!("after a restart, {}: {first}", ids[0]);
    assert_eq!(ids.len(), 16);
    assert_eq!(first, "Resultado 0: normal");
    Ok(())
}
