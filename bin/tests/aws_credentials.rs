//! With no static keys in the environment, every AWS client (DynamoDB, KMS, S3) signs with what
//! the SDK's default credential chain finds: a shared credentials file, or the container
//! credentials endpoint. The test's own HTTP server on 127.0.0.1 plays the AWS endpoint (it
//! records each request's `Authorization` header and fails the call) and the credentials
//! endpoint; nothing leaves the machine (instance metadata is disabled).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

const PROFILE_KEY: &str = "AKIDPROFILEEXAMPLE01";
const CONTAINER_KEY: &str = "ASIACONTAINEREXAMPLE";

/// Recorded requests: (request line, Authorization header).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A one-thread HTTP server: `/creds` answers container credentials, anything else is recorded
/// (request line and Authorization header) and refused with a 500.
fn endpoint() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut first, mut auth, mut length) = (String::new(), String::new(), 0usize);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let l = line.trim_end().to_owned();
                line.clear();
                if l.is_empty() {
                    break;
                }
                let lower = l.to_ascii_lowercase();
                if first.is_empty() {
                    first = l;
                } else if lower.starts_with("authorization:") {
                    auth = l["authorization:".len()..].trim().to_owned();
                } else if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            let reply = if first.contains(" /creds ") {
                let creds = format!(
                    r#"{{"AccessKeyId":"{CONTAINER_KEY}","SecretAccessKey":"secret","Token":"token","Expiration":"2099-01-01T00:00:00Z"}}"#
                );
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{creds}",
                    creds.len()
                )
            } else {
                log.lock().unwrap().push((first, auth));
                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    (url, seen)
}

fn docstore(work: &std::path::Path, url: &str, vars: &[(&str, String)], args: &[&str]) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_docstore"));
    c.args(args)
        .current_dir(work)
        .env("DOCSTORE_DATA_DIR", work.join("data"))
        .env("AWS_ENDPOINT_URL", url)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", work.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", work.join("no-credentials"));
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "DOCSTORE_CONFIG",
        "DOCSTORE_BLOBS",
        "DOCSTORE_METADATA",
        "DOCSTORE_KEYS",
        "DOCSTORE_AUDIT",
    ] {
        c.env_remove(k);
    }
    for (k, v) in vars {
        c.env(k, v);
    }
    // The calls fail (the endpoint answers 500); what matters is how they were signed.
    let _ = c.output().unwrap();
}

/// The access key ids the recorded requests were signed with, by request line.
fn signers(seen: &Mutex<Vec<(String, String)>>) -> Vec<(String, String)> {
    std::mem::take(&mut *seen.lock().unwrap())
        .into_iter()
        .map(|(first, auth)| {
            let key = auth
                .split("Credential=")
                .nth(1)
                .and_then(|c| c.split('/').next())
                .unwrap_or("")
                .to_owned();
            (first, key)
        })
        .collect()
}

#[test]
fn clients_sign_with_the_default_credential_chain() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (url, seen) = endpoint();
    std::fs::write(
        work.join("credentials"),
        format!("[clinic]\naws_access_key_id = {PROFILE_KEY}\naws_secret_access_key = secret\n"),
    )
    .unwrap();
    let profile = [
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            work.join("credentials").display().to_string(),
        ),
        ("AWS_PROFILE", "clinic".to_owned()),
    ];
    let audit = format!("file://{}", work.join("audit.jsonl").display());
    let pdf = work.join("a.pdf");
    std::fs::write(&pdf, b"%PDF-1.4 credentials").unwrap();

    let pdf_arg = pdf.display().to_string();
    let init_and_put = |vars: &[(&str, String)]| {
        docstore(work, &url, vars, &["init"]);
        let put = ["put", &pdf_arg, "--patient", "p-1", "--exam", "e-1"];
        docstore(work, &url, vars, &put);
    };

    // DynamoDB, from a named profile in the shared credentials file.
    let mut vars = profile.to_vec();
    vars.push(("DOCSTORE_METADATA", "dynamodb://clinic".into()));
    docstore(work, &url, &vars, &["provision"]);
    let dynamodb = signers(&seen);
    assert!(!dynamodb.is_empty(), "no DynamoDB request reached the endpoint");
    assert!(dynamodb.iter().all(|(_, k)| k == PROFILE_KEY), "{dynamodb:?}");

    // KMS, from the same profile.
    let mut vars = profile.to_vec();
    vars.extend([
        ("DOCSTORE_KEYS", "kms://alias/clinic".to_owned()),
        ("DOCSTORE_AUDIT", audit.clone()),
    ]);
    init_and_put(&vars);
    let kms = signers(&seen);
    assert!(!kms.is_empty(), "no KMS request reached the endpoint");
    assert!(kms.iter().all(|(_, k)| k == PROFILE_KEY), "{kms:?}");

    // S3, from the container credentials endpoint (a local keyring seals the content first).
    let vars = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{url}/creds")),
        ("DOCSTORE_BLOBS", "s3://clinic/exams".to_owned()),
        ("DOCSTORE_AUDIT", audit),
    ];
    init_and_put(&vars);
    let s3 = signers(&seen);
    assert!(
        s3.iter().any(|(first, _)| first.starts_with("PUT ")),
        "no S3 upload: {s3:?}"
    );
    assert!(s3.iter().all(|(_, k)| k == CONTAINER_KEY), "{s3:?}");
}
