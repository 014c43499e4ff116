//! Every non-hostile file of the shared corpus goes in and comes out byte-identical, with the
//! recorded SHA-256 matching the manifest; ranged reads at frame boundaries equal the plaintext slice.

mod common;

use docstore::{ExamId, Identity, Kind, PatientId, PutRequest};
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_round_trip_and_ranged_reads() {
    let corpus = docstore_testkit::corpus();
    let (_dir, store) = common::local_store().await;
    // A small frame size puts many frame boundaries inside every corpus file.
    let store = store.with_frame_size(4096).unwrap();
    let who = Identity::new("staff:corpus");
    let manifest = std::fs::read_to_string(corpus.join("MANIFEST.tsv")).unwrap();
    let mut checked = 0;
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (name, kind, sha) = (cols[0], cols[4], cols[6]);
        if name.starts_with("hostile-") || kind == "hostile" {
            continue;
        }
        let plain = std::fs::read(corpus.join(name)).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&plain)),
            sha,
            "{name}: corpus file differs from manifest"
        );
        let media_type = if name.ends_with(".pdf") {
            "application/pdf"
        } else {
            "application/octet-stream"
        };
        let req = PutRequest::new(
            PatientId::new("p-corpus").unwrap(),
            ExamId::new("e-corpus").unwrap(),
        )
        .kind(if name.ends_with(".pdf") {
            Kind::Report
        } else {
            Kind::Image
        })
        .media_type(media_type);
        let rec = store.put(&who, req, &plain[..]).await.unwrap();
        assert_eq!(rec.sha256, sha, "{name}: recorded digest");
        assert_eq!(rec.size, plain.len() as u64);
        let back = store
            .get(&who, &rec.document_id, None)
            .await
            .unwrap()
            .read_all()
            .await
            .unwrap();
        assert!(back[..] == plain[..], "{name}: round trip differs");
        assert_eq!(hex::encode(Sha256::digest(&back[..])), sha);
        let len = plain.len() as u64;
        let mut ranges = vec![(0, len.min(1))];
        for b in [4096u64, 8192, 3 * 4096] {
            if b + 1 < len {
                ranges.extend([(b - 1, b + 1), (b, b + 4096).min((b, len)), (b - 4096, b)]);
            }
        }
        ranges.push((len.saturating_sub(4097), len));
        for (a, b) in ranges {
            let got = store.get_range(&who, &rec.document_id, None, a..b).await.unwrap();
            assert!(got[..] == plain[a as usize..b as usize], "{name}: range {a}..{b}");
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} corpus files checked");
    eprintln!("{checked} corpus files round-tripped");
}
