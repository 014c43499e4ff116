//! Search correctness: Portuguese analysis (accents, case, plurals), phrases, boolean and field
//! queries, filters, pagination, facets, snippets, fuzzy matching, latest-version semantics,
//! replacement without duplicates, removal, one writer per index, read-only readers, audit; and
//! corpus documents found by their own words.

#[path = "../../stages/tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use docstore::{Identity, Timestamp};
use docstore_search::{IndexedVersion, SearchError, SearchIndex, SearchQuery, Sort};

const DAY: i64 = 86_400_000;

fn v(doc: &str, version: u64, patient: &str, kind: &str, day: i64, text: &str) -> IndexedVersion {
    IndexedVersion {
        document_id: doc.into(),
        version,
        patient_id: patient.into(),
        exam_id: format!("exam-{doc}"),
        kind: kind.into(),
        clinic: "Clínica São Lucas".into(),
        created_at: Timestamp(1_764_000_000_000 + day * DAY),
        text: text.into(),
    }
}

fn index_with(versions: &[IndexedVersion]) -> SearchIndex {
    let idx = SearchIndex::in_memory().unwrap();
    for x in versions {
        idx.upsert(x.clone()).unwrap();
        idx.commit().unwrap();
    }
    idx
}

fn ids(idx: &SearchIndex, q: SearchQuery) -> Vec<String> {
    let mut out: Vec<String> = idx
        .search(&q)
        .unwrap()
        .hits
        .into_iter()
        .map(|h| format!("{}@{}", h.version.document_id, h.version.version))
        .collect();
    out.sort();
    out
}

fn q(text: &str) -> SearchQuery {
    SearchQuery::new(text)
}

fn lab() -> Vec<IndexedVersion> {
    vec![
        v(
            "hemo",
            1,
            "pac-1",
            "report",
            0,
            "Hemograma completo\nHemoglobína 13,5 g/dL (12,0 a 16,0)\nLeucócitos 7.200 /mm³",
        ),
        v(
            "glic",
            1,
            "pac-1",
            "report",
            1,
            "Glicemia de jejum: glicoses elevadas, 126 mg/dL",
        ),
        v(
            "lipi",
            1,
            "pac-2",
            "report",
            2,
            "Lipidograma: colesterol total 190 mg/dL; HDL colesterol 45; triglicerídeos 150",
        ),
        v(
            "urin",
            1,
            "pac-2",
            "report",
            3,
            "Urina tipo I: ausência de glicose, proteínas negativas; total de leucócitos normal",
        ),
        v("foto", 1, "pac-3", "image", 4, ""),
    ]
}

#[test]
fn accents_case_and_plurals_fold_to_one_term() {
    let idx = index_with(&lab());
    assert_eq!(ids(&idx, q("hemoglobina")), ["hemo@1"]);
    assert_eq!(ids(&idx, q("HEMOGLOBÍNA")), ["hemo@1"]);
    assert_eq!(ids(&idx, q("leucocitos")), ["hemo@1", "urin@1"]);
    // "glicose" finds "glicoses" (and the singular in the urine report).
    assert_eq!(ids(&idx, q("glicose")), ["glic@1", "urin@1"]);
    assert_eq!(ids(&idx, q("triglicerideos")), ["lipi@1"]);
    assert_eq!(ids(&idx, q("ausencia")), ["urin@1"]);
}

#[test]
fn phrases_booleans_and_field_queries() {
    let idx = index_with(&lab());
    assert_eq!(ids(&idx, q("\"colesterol total\"")), ["lipi@1"]);
    // Both words, not adjacent in the urine report: no phrase hit there.
    assert_eq!(ids(&idx, q("\"total de leucócitos\"")), ["urin@1"]);
    assert_eq!(
        ids(&idx, q("total colesterol")),
        ["lipi@1"],
        "all words must match by default"
    );
    assert_eq!(ids(&idx, q("glicose -urina")), ["glic@1"]);
    assert_eq!(ids(&idx, q("hemoglobina OR colesterol")), ["hemo@1", "lipi@1"]);
    assert_eq!(ids(&idx, q("patient:pac-2 glicose")), ["urin@1"]);
    assert_eq!(ids(&idx, q("kind:image")), ["foto@1"]);
    assert!(matches!(
        idx.search(&q("\"unclosed")),
        Err(SearchError::Query(_)) | Ok(_)
    ));
    assert!(matches!(idx.search(&q("nofield:x")), Err(SearchError::Query(_))));
}

#[test]
fn filters_dates_pagination_facets_and_order() {
    let mut many = lab();
    for i in 0..25 {
        many.push(v(
            &format!("g{i:02}"),
            1,
            "pac-9",
            "report",
            10 + i,
            "glicemia de controle",
        ));
    }
    let idx = index_with(&many);
    let mut f = q("glicemia");
    f.patient = Some("pac-9".into());
    f.limit = 10;
    let mut seen = Vec::new();
    for page in 0..3 {
        f.offset = page * 10;
        let r = idx.search(&f).unwrap();
        assert_eq!(r.total, 25);
        seen.extend(r.hits.into_iter().map(|h| h.version.document_id.clone()));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25, "pages overlap or miss hits");

    let mut by_date = q("");
    by_date.from = Some(Timestamp(1_764_000_000_000 + DAY));
    by_date.until = Some(Timestamp(1_764_000_000_000 + 4 * DAY));
    assert_eq!(ids(&idx, by_date), ["glic@1", "lipi@1", "urin@1"]);

    let mut kinds = q("");
    kinds.limit = 1;
    let r = idx.search(&kinds).unwrap();
    assert_eq!(r.total, 30);
    assert_eq!(r.by_kind.get("report"), Some(&29));
    assert_eq!(r.by_kind.get("image"), Some(&1));
    let mut kind = q("");
    kind.kind = Some("image".into());
    assert_eq!(ids(&idx, kind), ["foto@1"]);
    let mut clinic = q("hemoglobina");
    clinic.clinic = Some("Outra".into());
    assert!(ids(&idx, clinic).is_empty());

    let mut newest = q("glicemia");
    newest.sort = Sort::Newest;
    newest.limit = 3;
    let r = idx.search(&newest).unwrap();
    let order: Vec<_> = r.hits.iter().map(|h| h.version.document_id.as_str()).collect();
    assert_eq!(order, ["g24", "g23", "g22"]);
}

#[test]
fn snippets_highlight_and_fuzzy_needs_the_flag() {
    let idx = index_with(&lab());
    let r = idx.search(&q("hemoglobina")).unwrap();
    let s = r.hits[0].snippet.as_ref().unwrap();
    let marked = s.marked("<", ">");
    assert!(marked.contains("<Hemoglobína>"), "{marked}");
    assert!(ids(&idx, q("hemoglobinna")).is_empty());
    let mut fuzzy = q("hemoglobinna");
    fuzzy.fuzzy = true;
    assert_eq!(ids(&idx, fuzzy.clone()), ["hemo@1"]);
    // The fuzzy match is highlighted too: the word the typo stood for.
    let r = idx.search(&fuzzy).unwrap();
    let marked = r.hits[0].snippet.as_ref().unwrap().marked("<", ">");
    assert!(marked.contains("<Hemoglobína>"), "{marked}");
    // And a phrase's words.
    let r = idx.search(&q("\"hemoglobina 13,5\"")).unwrap();
    assert_eq!(r.hits.len(), 1);
    let marked = r.hits[0].snippet.as_ref().unwrap().marked("<", ">");
    assert!(marked.contains("<Hemoglobína>"), "{marked}");
}

#[test]
fn latest_version_by_default_replacement_and_removal() {
    let idx = index_with(&[
        v("doc", 1, "pac-1", "report", 0, "resultado preliminar alfa"),
        v("doc", 2, "pac-1", "report", 1, "resultado final beta"),
    ]);
    assert!(ids(&idx, q("alfa")).is_empty(), "v1 is not the latest");
    assert_eq!(ids(&idx, q("beta")), ["doc@2"]);
    assert_eq!(ids(&idx, q("resultado")), ["doc@2"]);
    let mut all = q("resultado");
    all.all_versions = true;
    assert_eq!(ids(&idx, all.clone()), ["doc@1", "doc@2"]);

    // Re-indexing a version replaces it: never two entries.
    for _ in 0..3 {
        idx.upsert(v("doc", 2, "pac-1", "report", 1, "resultado final gama"))
            .unwrap();
        idx.commit().unwrap();
    }
    assert_eq!(ids(&idx, all.clone()), ["doc@1", "doc@2"]);
    assert!(ids(&idx, q("beta")).is_empty());
    assert_eq!(ids(&idx, q("gama")), ["doc@2"]);
    assert_eq!(idx.len(), 2);

    // Out-of-order arrival: v1 indexed after v2 does not become latest.
    idx.upsert(v("doc", 1, "pac-1", "report", 0, "resultado preliminar alfa"))
        .unwrap();
    idx.commit().unwrap();
    assert_eq!(ids(&idx, q("resultado")), ["doc@2"]);

    // The latest removed (shredded, say): the one before takes over.
    idx.remove_version("doc", 2).unwrap();
    idx.commit().unwrap();
    assert_eq!(ids(&idx, q("alfa")), ["doc@1"]);
    // The document deleted: gone.
    assert!(idx.contains("doc").unwrap());
    idx.replace_document("doc", &[]).unwrap();
    assert!(idx.contains("doc").unwrap(), "visible until the commit");
    idx.commit().unwrap();
    assert!(ids(&idx, all).is_empty());
    assert!(idx.is_empty());
    assert!(!idx.contains("doc").unwrap());
}

#[tokio::test]
async fn one_writer_per_index_readers_see_commits_and_permissions_are_checked() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(dir.path());
    let path = dir.path().join("index");
    assert!(matches!(
        SearchIndex::open_read_only(&path, &keys).await,
        Err(SearchError::Missing(_))
    ));
    let writer = SearchIndex::open(&path, &keys).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(matches!(
        SearchIndex::open(&path, &keys).await,
        Err(SearchError::Locked(_))
    ));
    let reader = SearchIndex::open_read_only(&path, &keys).await.unwrap();
    assert!(matches!(
        reader.replace_document("x", &[]),
        Err(SearchError::ReadOnly(_))
    ));
    writer.upsert(lab()[0].clone()).unwrap();
    writer.commit().unwrap();
    assert_eq!(
        ids(&writer, q("hemoglobina")),
        ["hemo@1"],
        "no stale read after commit"
    );
    reader.refresh().unwrap();
    assert_eq!(ids(&reader, q("hemoglobina")), ["hemo@1"]);
    drop((writer, reader));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(
        SearchIndex::open(&path, &keys).await,
        Err(SearchError::Permissions(_))
    ));
}

#[tokio::test]
async fn every_search_is_audited_without_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let store = docstore::DocStore::init_local(dir.path()).await.unwrap();
    let idx = Arc::new(index_with(&lab()));
    let who = Identity::new("staff:ana");
    let mut query = q("hemoglobina");
    query.patient = Some("pac-1".into());
    let r = docstore_search::search(&store, &idx, &who, query).await.unwrap();
    assert_eq!(r.total, 1);
    assert!(
        docstore_search::search(&store, &idx, &who, q("nofield:x"))
            .await
            .is_err()
    );
    let trail = store.audit_log(&who, None, 100).await.unwrap();
    let searches: Vec<_> = trail.iter().filter(|r| r.action == "search").collect();
    assert_eq!(searches.len(), 2, "{trail:?}");
    assert_eq!(searches[0].actor, "staff:ana");
    assert_eq!(searches[0].outcome, "ok");
    assert_eq!(searches[1].outcome, "invalid_input");
    let detail = searches[0].detail.clone().unwrap();
    assert!(
        detail.contains("patient=pac-1") && detail.contains("hits=1"),
        "{detail}"
    );
    assert!(
        !detail.contains("hemoglobina"),
        "query text in the audit log: {detail}"
    );
}

/// Corpus PDFs, text extracted by the text stage: each is found by words of its own.
#[test]
fn corpus_documents_are_found_by_their_own_words() {
    use docstore_stages::extract::{ExtractLimits, extract_pdf_text};
    let dir = common::corpus();
    let files = [
        "text-pt-8p-diario-oficial-signed.pdf",
        "text-11p-pagelabels.pdf",
        "text-19p-word2010-xrefstream.pdf",
        "text-multilang-libreoffice.pdf",
        "text-14p-paper-pdftex.pdf",
    ];
    let idx = SearchIndex::in_memory().unwrap();
    let mut texts = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        let text = extract_pdf_text(&bytes, &ExtractLimits::default())
            .unwrap()
            .joined();
        idx.upsert(v(f, 1, &format!("pac-{i}"), "report", i as i64, &text))
            .unwrap();
        texts.push(text);
    }
    idx.commit().unwrap();
    for (f, text) in files.iter().zip(&texts) {
        // The document's longest alphabetic words (rare ones, so mostly its own).
        let mut words: Vec<&str> = text
            .split(|c: char| !c.is_alphabetic())
            .filter(|w| w.chars().count() >= 6)
            .collect();
        words.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
        words.dedup();
        assert!(!words.is_empty(), "{f}: no words");
        for w in words.iter().take(5) {
            let mut query = q(w);
            query.limit = 10;
            let hits = ids(&idx, query);
            assert!(
                hits.contains(&format!("{f}@1")),
                "{f}: {w:?} not found ({hits:?})"
            );
        }
    }
}

/// Phrases are looked up by their word pairs on latest versions and by positions across all
/// versions: both must find the same documents, for phrases cut from the texts themselves
/// (each found at least where it was cut) and for phrases that span two reports.
#[test]
fn phrase_pairs_match_exactly_what_positions_match() {
    use rand::{Rng, SeedableRng};
    let mut g = docstore_tools::synthetic::Generator::new(7, "Clínica São Lucas", 40);
    let idx = SearchIndex::in_memory().unwrap();
    let mut texts = Vec::new();
    for i in 0..120 {
        let (patient, _, text) = g.report_text();
        idx.replace_document(
            &format!("r{i:03}"),
            &[v(&format!("r{i:03}"), 1, &patient, "report", i, &text)],
        )
        .unwrap();
        texts.push(text);
    }
    idx.commit().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut checked = 0;
    for _ in 0..100 {
        let at = rng.random_range(0..texts.len());
        let words: Vec<&str> = texts[at].split_whitespace().collect();
        let len = rng.random_range(2..=4usize).min(words.len());
        let start = rng.random_range(0..=words.len() - len);
        let phrase = words[start..start + len].join(" ").replace('"', "");
        let typed = format!("\"{phrase}\"");
        let mut pairs = q(&typed);
        pairs.limit = 1_000;
        let mut positions = pairs.clone();
        positions.all_versions = true;
        let by_pairs = ids(&idx, pairs.clone());
        assert_eq!(by_pairs, ids(&idx, positions.clone()), "{typed}");
        assert_eq!(
            idx.search(&pairs).unwrap().total,
            idx.search(&positions).unwrap().total,
            "{typed}"
        );
        // A phrase of punctuation only matches nothing (or everything) the same way; one of
        // words is found where it was cut.
        if phrase.chars().filter(|c| c.is_alphanumeric()).count() > 0 {
            assert!(
                by_pairs.contains(&format!("r{at:03}@1")),
                "{typed} not in r{at:03}"
            );
            checked += 1;
        }
    }
    assert!(checked > 80, "too few phrases checked: {checked}");
    // Words adjacent only across two documents' boundary never form a phrase.
    let last_of_first = texts[0].split_whitespace().last().unwrap();
    let first_of_second = texts[1].split_whitespace().next().unwrap();
    let spanning = format!("\"{last_of_first} {first_of_second} {last_of_first}\"");
    assert!(ids(&idx, q(&spanning)).is_empty(), "{spanning}");
}

#[test]
fn phrase_forms_slop_gaps_and_punctuation() {
    let long = "x".repeat(60);
    let idx = index_with(&[
        v(
            "a",
            1,
            "pac-1",
            "report",
            0,
            "colesterol total elevado; covid-19 negativo",
        ),
        v("b", 1, "pac-1", "report", 1, "colesterol muito total"),
        v("c", 1, "pac-1", "report", 2, &format!("pressão {long} arterial")),
    ]);
    assert_eq!(ids(&idx, q("\"colesterol total elevado\"")), ["a@1"]);
    assert_eq!(ids(&idx, q("\"COLESTEROL TOTAL\"")), ["a@1"]);
    assert_eq!(ids(&idx, q("\"colesterol total\"~1")), ["a@1", "b@1"]);
    assert_eq!(ids(&idx, q("covid-19")), ["a@1"]);
    assert!(ids(&idx, q("\"19 covid\"")).is_empty());
    assert_eq!(
        ids(&idx, q("\"colesterol total\" -elevado")),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&idx, q("\"colesterol total\" OR \"muito total\"")),
        ["a@1", "b@1"]
    );
    // The over-long word is dropped from the index but still holds its place.
    assert!(ids(&idx, q("\"pressão arterial\"")).is_empty());
    assert_eq!(ids(&idx, q(&format!("\"pressão {long} arterial\""))), ["c@1"]);
    // A literal with no words does not empty the query.
    assert_eq!(ids(&idx, q("colesterol !!!")), ["a@1", "b@1"]);
    assert_eq!(ids(&idx, q("(colesterol (total elevado))")), ["a@1"]);
}

/// A query on fields alone (no word of the text) still keeps to latest versions, and a prior
/// version found with `all_versions` gets its snippet from its own text.
#[test]
fn field_queries_keep_to_latest_and_prior_versions_have_snippets() {
    let idx = index_with(&[
        v("doc", 1, "pac-1", "report", 0, "resultado preliminar alfa"),
        v("doc", 2, "pac-1", "report", 1, "resultado final beta"),
    ]);
    assert_eq!(ids(&idx, q("patient:pac-1")), ["doc@2"]);
    assert_eq!(ids(&idx, q("patient:pac-1 OR kind:report")), ["doc@2"]);
    assert_eq!(ids(&idx, q("patient:pac-1 -beta")), Vec::<String>::new());
    assert_eq!(ids(&idx, q("alfa OR patient:pac-1")), ["doc@2"]);
    let mut all = q("alfa");
    all.all_versions = true;
    let r = idx.search(&all).unwrap();
    assert_eq!(r.total, 1);
    let marked = r.hits[0].snippet.as_ref().unwrap().marked("<", ">");
    assert!(marked.contains("<alfa>"), "{marked}");
    let mut phrase = q("\"preliminar alfa\"");
    phrase.all_versions = true;
    assert_eq!(ids(&idx, phrase), ["doc@1"]);
}

/// An index written under another schema is refused with a typed error; `open_or_replace`
/// (what `docstore reindex` uses) starts it afresh, and refuses while a writer holds it.
#[tokio::test]
async fn an_index_of_another_schema_is_outdated_and_replaced_on_reindex() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(dir.path());
    let path = dir.path().join("index");
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    {
        let mut b = tantivy::schema::Schema::builder();
        let text = b.add_text_field("text", tantivy::schema::TEXT | tantivy::schema::STORED);
        let old = tantivy::Index::create_in_dir(&path, b.build()).unwrap();
        let mut w = old.writer_with_num_threads(1, 15 << 20).unwrap();
        w.add_document(tantivy::doc!(text => "hemoglobina antiga"))
            .unwrap();
        w.commit().unwrap();
        assert!(matches!(
            SearchIndex::open(&path, &keys).await,
            Err(SearchError::Outdated(_))
        ));
        assert!(matches!(
            SearchIndex::open_read_only(&path, &keys).await,
            Err(SearchError::Outdated(_))
        ));
        assert!(matches!(
            SearchIndex::open_or_replace(&path, &keys).await,
            Err(SearchError::Locked(_))
        ));
        assert!(path.join("meta.json").exists(), "a locked index was removed");
    }
    let idx = SearchIndex::open_or_replace(&path, &keys).await.unwrap();
    assert!(idx.is_empty());
    idx.upsert(v("n", 1, "pac-1", "report", 0, "hemoglobina nova"))
        .unwrap();
    idx.commit().unwrap();
    assert_eq!(ids(&idx, q("hemoglobina")), ["n@1"]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

/// The end of a bulk load: merges awaited, the index then serves searches and refuses writes.
#[tokio::test]
async fn finish_writing_leaves_a_read_only_index_with_everything_committed() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(dir.path());
    let idx = SearchIndex::open(&dir.path().join("index"), &keys).await.unwrap();
    for i in 0..50 {
        let id = format!("d{i}");
        idx.replace_document(&id, &[v(&id, 1, "pac-1", "report", i, "glicemia de controle")])
            .unwrap();
        // Many small commits: many segments, so merges start.
        if i % 5 == 0 {
            idx.commit().unwrap();
        }
    }
    let idx = idx.finish_writing().unwrap();
    assert_eq!(
        idx.search(&q("glicemia")).unwrap().total,
        50,
        "the last writes were committed"
    );
    assert!(matches!(
        idx.upsert(v("late", 1, "pac-1", "report", 0, "x")),
        Err(SearchError::ReadOnly(_))
    ));
    // The writer lock is released: another writer may open it.
    drop(idx);
    SearchIndex::open(&dir.path().join("index"), &keys).await.unwrap();
}

/// Every limit is a typed `Limit` naming the limit, never the query (which can name a patient);
/// parse errors do not quote it either; a query just inside each limit runs; a deadline already
/// passed ends the search; snippets are cut at the cap.
#[test]
fn limits_are_typed_and_never_echo_the_query() {
    use docstore_search::{MAX_OFFSET, MAX_SNIPPET_CHARS};
    let idx = index_with(&lab());
    let secret = "MARIASOUZA";
    let refused = |q: SearchQuery| match idx.search(&q) {
        Err(e @ SearchError::Limit(_)) => {
            assert!(!e.to_string().contains(secret), "{e}");
            e.to_string()
        }
        other => panic!("{} bytes: {:?}", q.text.len(), other.map(|r| r.total)),
    };
    let runs = |q: SearchQuery| idx.search(&q).map(|r| r.total).unwrap();

    let long = format!("{secret} {}", "a".repeat(1100));
    assert!(refused(q(&long)).contains("1 KiB"));
    // Deep nesting is refused before the parser recurses once per level.
    let deep = format!("{}{secret}{}", "(".repeat(33), ")".repeat(33));
    assert!(refused(q(&deep)).contains("nested"));
    runs(q(&format!("{}hemograma{}", "(".repeat(32), ")".repeat(32))));
    // Parentheses inside a phrase are words' punctuation, not nesting.
    runs(q(&format!("\"{}hemograma\"", "(".repeat(40))));

    // Distinct words: the grammar folds repeated ones into one clause.
    let terms = |n: usize| (0..n).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    assert!(refused(q(&format!("{secret} {}", terms(64)))).contains("64 terms"));
    runs(q(&terms(64)));
    assert!(refused(q(&format!("\"{secret} {}\"", terms(64)))).contains("64 terms"));
    let mut fuzzy = q(&terms(17));
    fuzzy.fuzzy = true;
    assert!(refused(fuzzy).contains("fuzzy"));
    let mut fuzzy = q(&terms(16));
    fuzzy.fuzzy = true;
    runs(fuzzy);

    let mut deep_page = q("hemograma");
    deep_page.offset = MAX_OFFSET + 1;
    assert!(refused(deep_page).contains("offset"));
    let mut last_page = q("hemograma");
    last_page.offset = MAX_OFFSET;
    runs(last_page);

    let mut late = q("hemograma");
    late.deadline = Some(std::time::Duration::ZERO);
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert!(refused(late).contains("deadline"));

    // Existence and regex leaves (a fuzz finding: `/…/` on an unknown field failed inside
    // tantivy with the field's name, a 5xx over HTTP): typed query errors, nothing echoed.
    for text in [
        format!("{secret}:*"),
        format!("/{secret}/"),
        format!("hemograma /x/ {secret}"),
    ] {
        match idx.search(&q(&text)) {
            Err(SearchError::Query(m)) => assert!(!m.contains(secret), "{m}"),
            other => panic!("{text}: {:?}", other.map(|r| r.total)),
        }
    }

    // The fuzz input itself.
    let found = String::from_utf8_lossy(&[
        1, 0, 0, 0, 0, 0, 0, 0, 104, 101, 158, 147, 111, 255, 27, 109, 42, 32, 47, 0, 0, 0, 0, 104, 101, 158,
        147, 111, 255, 27, 58, 42, 32, 47, 32, 47, 157, 157, 32, 47, 157, 157,
    ])
    .into_owned();
    assert!(matches!(
        idx.search(&q(&found)),
        Ok(_) | Err(SearchError::Query(_) | SearchError::Limit(_))
    ));

    // A query that does not parse: typed, and the text is not in the message.
    match idx.search(&q(&format!("{secret} patient:"))) {
        Err(SearchError::Query(m)) => assert!(!m.contains(secret), "{m}"),
        other => panic!("{:?}", other.map(|r| r.total)),
    }

    let mut long_snippets = q("hemograma");
    long_snippets.snippet_chars = 1_000_000;
    let long_text = format!("hemograma {}", "palavra ".repeat(2_000));
    let big = index_with(&[v("big", 1, "pac-9", "report", 0, &long_text)]);
    let hit = big.search(&long_snippets).unwrap().hits.remove(0);
    let fragment = hit.snippet.unwrap().fragment;
    assert!(
        fragment.chars().count() <= MAX_SNIPPET_CHARS + 16,
        "{}",
        fragment.len()
    );
}

/// A local keyring to seal a test index under (the store's key provider in production).
fn keyring(dir: &std::path::Path) -> docstore::keys::keyring::Keyring {
    docstore::keys::keyring::Keyring::create(&dir.join("keyring")).unwrap()
}

/// Every file under `dir`, with its bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    docstore_testkit::files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Words of the texts, 6 letters or more (shorter ones match by chance in random bytes).
fn words(texts: &[String]) -> std::collections::BTreeSet<String> {
    texts
        .iter()
        .flat_map(|t| t.split(|c: char| !c.is_alphanumeric()))
        .filter(|w| w.len() >= 6)
        .map(str::to_owned)
        .collect()
}

/// After a bulk load (commits, merges), no word of the synthetic reports is found in any file
/// under the index directory, though searches find them. The same grep over a plain tantivy
/// index of the same texts finds them: the check can fail.
#[tokio::test]
async fn a_sealed_index_holds_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(dir.path());
    let path = dir.path().join("index");
    let mut generator = docstore_tools::synthetic::Generator::new(7, "Clínica São Lucas", 20);
    let idx = SearchIndex::open(&path, &keys).await.unwrap();
    let mut texts = Vec::new();
    for i in 0..200 {
        let (patient, _, text) = generator.report_text();
        let id = format!("doc-{i}");
        idx.replace_document(&id, &[v(&id, 1, &patient, "report", i, &text)])
            .unwrap();
        texts.push(text);
        if i % 40 == 39 {
            idx.commit().unwrap();
        }
    }
    let idx = idx.finish_writing().unwrap();
    let words = words(&texts);
    assert!(words.len() > 50, "{} distinct words", words.len());
    let probe = words
        .iter()
        .find(|w| w.chars().all(|c| c.is_ascii_lowercase()))
        .unwrap();
    assert!(idx.search(&q(probe)).unwrap().total > 0, "{probe} is searchable");
    drop(idx);
    let files = files_under(&path);
    assert!(files.len() > 5, "{} files", files.len());
    for (file, bytes) in &files {
        for w in &words {
            assert!(
                !bytes.windows(w.len()).any(|b| b == w.as_bytes()),
                "{w:?} in the clear in {}",
                file.display()
            );
        }
    }

    // The control: tantivy's own directory, same texts, same grep.
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let mut b = tantivy::schema::Schema::builder();
    let text = b.add_text_field("text", tantivy::schema::TEXT | tantivy::schema::STORED);
    let index = tantivy::Index::create_in_dir(&plain, b.build()).unwrap();
    let mut w = index.writer_with_num_threads(1, 15 << 20).unwrap();
    for t in &texts {
        w.add_document(tantivy::doc!(text => t.as_str())).unwrap();
    }
    w.commit().unwrap();
    let plain_files = files_under(&plain);
    let found = words
        .iter()
        .filter(|w| {
            plain_files
                .iter()
                .any(|(_, b)| b.windows(w.len()).any(|x| x == w.as_bytes()))
        })
        .count();
    assert!(
        found > words.len() / 4,
        "the grep finds {found} of {} words in a plain index",
        words.len()
    );
}

/// The sealed index refuses what it did not write: a flipped byte, a file moved over another,
/// another key provider, a missing key file. Each is a typed error, never a panic or a wrong
/// answer.
#[tokio::test]
async fn a_sealed_index_refuses_altered_files_and_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(dir.path());
    let path = dir.path().join("index");
    let idx = SearchIndex::open(&path, &keys).await.unwrap();
    for d in lab() {
        idx.replace_document(&d.document_id.clone(), &[d]).unwrap();
    }
    idx.commit().unwrap();
    drop(idx.finish_writing().unwrap());
    let search = |idx: &SearchIndex| idx.search(&q("hemoglobina")).map(|r| r.total);
    let reopened = SearchIndex::open_read_only(&path, &keys).await.unwrap();
    assert_eq!(search(&reopened).unwrap(), 1);
    drop(reopened);

    // Another provider's key cannot unwrap the index key.
    let other_dir = tempfile::tempdir().unwrap();
    let other = keyring(other_dir.path());
    assert!(matches!(
        SearchIndex::open_read_only(&path, &other).await,
        Err(SearchError::Key(_))
    ));

    let segment_files: Vec<std::path::PathBuf> = files_under(&path)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            !name.starts_with('.') && name != "meta.json" && name != docstore_search::KEY_FILE
        })
        .collect();
    assert!(segment_files.len() >= 2);
    // Fails to open or to search: either way an error.
    let refused = async |keys: &docstore::keys::keyring::Keyring| match SearchIndex::open_read_only(
        &path, keys,
    )
    .await
    {
        Err(e) => e.to_string(),
        Ok(idx) => match search(&idx) {
            Err(e) => e.to_string(),
            Ok(n) => panic!("an altered index answered {n} hits"),
        },
    };

    // A flipped byte in each segment file in turn.
    for file in &segment_files {
        let good = std::fs::read(file).unwrap();
        let mut bad = good.clone();
        let at = bad.len() / 2;
        bad[at] ^= 0x20;
        std::fs::write(file, &bad).unwrap();
        let why = refused(&keys).await;
        assert!(
            why.contains("sealed index file") || why.contains("frame"),
            "{}: {why}",
            file.display()
        );
        std::fs::write(file, &good).unwrap();
    }
    // One sealed file moved over another: its name is in its encryption context.
    let (a, b) = (&segment_files[0], &segment_files[1]);
    let b_bytes = std::fs::read(b).unwrap();
    std::fs::copy(a, b).unwrap();
    let why = refused(&keys).await;
    assert!(why.contains("sealed index file"), "{why}");
    std::fs::write(b, &b_bytes).unwrap();
    assert_eq!(
        search(&SearchIndex::open_read_only(&path, &keys).await.unwrap()).unwrap(),
        1
    );

    // Without its key file the index cannot be read: it must be rebuilt.
    std::fs::remove_file(path.join(docstore_search::KEY_FILE)).unwrap();
    assert!(matches!(
        SearchIndex::open_read_only(&path, &keys).await,
        Err(SearchError::Outdated(_))
    ));
    assert!(matches!(
        SearchIndex::open(&path, &keys).await,
        Err(SearchError::Outdated(_))
    ));
    let idx = SearchIndex::open_or_replace(&path, &keys).await.unwrap();
    assert!(idx.is_empty(), "reindex starts afresh");
}

/// The bytes of one object.
async fn object_bytes(blobs: &dyn docstore::blob::BlobStore, key: &str) -> Vec<u8> {
    use futures::StreamExt;
    let mut out = Vec::new();
    let mut s = blobs.get(key).await.unwrap().stream;
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

/// Writes `bytes` under `key`, replacing what is there (uploads never overwrite).
async fn put_object(blobs: &dyn docstore::blob::BlobStore, key: &str, bytes: Vec<u8>) {
    blobs.delete(key).await.unwrap();
    let mut up = blobs.upload(key).await.unwrap();
    up.write(bytes.into()).await.unwrap();
    up.finish().await.unwrap();
}

/// A snapshot in the object store holds none of the reports' words; restored on a new node it
/// answers the same queries with the same hits and totals. A flipped byte in a file or in the
/// manifest, a file missing or added, or another key provider is refused, and leaves nothing
/// where the index was to go.
#[tokio::test]
async fn a_snapshot_restores_the_same_answers_and_refuses_altered_bytes() {
    use docstore::blob::BlobStore;
    use docstore_search::snapshot;
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(dir.path());
    let path = dir.path().join("index");
    let mut generator = docstore_tools::synthetic::Generator::new(11, "Clínica São Lucas", 12);
    let idx = SearchIndex::open(&path, &keys).await.unwrap();
    let mut texts = Vec::new();
    for i in 0..120 {
        let (patient, _, text) = generator.report_text();
        let id = format!("doc-{i}");
        let kind = if i % 3 == 0 { "image" } else { "report" };
        idx.replace_document(&id, &[v(&id, 1, &patient, kind, i, &text)])
            .unwrap();
        texts.push(text);
        if i % 30 == 29 {
            idx.commit().unwrap();
        }
    }
    let idx = idx.finish_writing().unwrap();
    let objects = dir.path().join("objects");
    let blobs = docstore::blob::ObjectBlobStore::local(&objects).unwrap();
    assert_eq!(snapshot::manifest(&blobs, &keys, None).await.unwrap(), None);
    let covered = vec![snapshot::Position {
        topic: "file.processed".into(),
        partition: 3,
        offset: 42,
    }];
    let m = snapshot::take(&path, &blobs, &keys, covered.clone())
        .await
        .unwrap();
    assert_eq!(m.positions, covered);
    assert_eq!(m.entries, 120);
    assert!(m.files.iter().any(|f| f.name == "meta.json") && m.files.len() > 3);
    assert_eq!(snapshot::list(&blobs).await.unwrap(), std::slice::from_ref(&m.id));
    assert_eq!(
        snapshot::manifest(&blobs, &keys, None).await.unwrap(),
        Some(m.clone())
    );

    let words = words(&texts);
    for (file, bytes) in files_under(&objects) {
        for w in &words {
            assert!(
                !bytes.windows(w.len()).any(|b| b == w.as_bytes()),
                "{w:?} in the clear in {}",
                file.display()
            );
        }
    }

    let node2 = dir.path().join("node2");
    assert_eq!(snapshot::restore(&node2, &blobs, &keys, None).await.unwrap(), m);
    let restored = SearchIndex::open_read_only(&node2, &keys).await.unwrap();
    let mut probes: Vec<SearchQuery> = words
        .iter()
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase()))
        .take(8)
        .map(|w| q(w))
        .collect();
    let mut images = probes[0].clone();
    images.kind = Some("image".into());
    images.limit = 200;
    probes.push(images);
    for probe in &probes {
        let (a, b) = (idx.search(probe).unwrap(), restored.search(probe).unwrap());
        assert_eq!(a.total, b.total);
        assert_eq!(a.by_kind, b.by_kind);
        assert_eq!(ids(&idx, probe.clone()), ids(&restored, probe.clone()));
    }
    assert!(probes.iter().any(|p| idx.search(p).unwrap().total > 0));
    // Only into a new or empty directory.
    assert!(matches!(
        snapshot::restore(&node2, &blobs, &keys, None).await,
        Err(SearchError::Snapshot(_))
    ));

    // Altered, removed or added bytes: an integrity error, nothing restored.
    let file_key = |name: &str| format!("{}/{}/files/{name}", snapshot::SNAPSHOT_PREFIX, m.id);
    let largest = m.files.iter().max_by_key(|f| f.size).unwrap().name.clone();
    let manifest_key = format!("{}/{}/manifest", snapshot::SNAPSHOT_PREFIX, m.id);
    for (what, key) in [
        ("a file", file_key(&largest)),
        ("the manifest", manifest_key.clone()),
    ] {
        let good = object_bytes(&blobs, &key).await;
        let mut bad = good.clone();
        let at = bad.len() / 2;
        bad[at] ^= 0x01;
        put_object(&blobs, &key, bad).await;
        let target = dir.path().join("altered");
        let got = snapshot::restore(&target, &blobs, &keys, None).await;
        assert!(matches!(got, Err(SearchError::Integrity(_))), "{what}: {got:?}");
        assert!(!target.exists(), "{what}: nothing is put in place");
        put_object(&blobs, &key, good).await;
    }
    let smallest = m.files.iter().min_by_key(|f| f.size).unwrap().name.clone();
    let kept = object_bytes(&blobs, &file_key(&smallest)).await;
    blobs.delete(&file_key(&smallest)).await.unwrap();
    let got = snapshot::restore(&dir.path().join("missing"), &blobs, &keys, None).await;
    assert!(
        matches!(got, Err(SearchError::Integrity(_))),
        "a file missing: {got:?}"
    );
    put_object(&blobs, &file_key(&smallest), kept).await;
    put_object(&blobs, &file_key("extra.idx"), b"x".to_vec()).await;
    let got = snapshot::restore(&dir.path().join("extra"), &blobs, &keys, None).await;
    assert!(
        matches!(got, Err(SearchError::Integrity(_))),
        "a file added: {got:?}"
    );
    blobs.delete(&file_key("extra.idx")).await.unwrap();
    // Another provider cannot unwrap the index key.
    let other = tempfile::tempdir().unwrap();
    let got = snapshot::restore(&dir.path().join("other"), &blobs, &keyring(other.path()), None).await;
    assert!(matches!(got, Err(SearchError::Key(_))), "{got:?}");
    // Put back as it was, it restores again.
    snapshot::restore(&dir.path().join("node3"), &blobs, &keys, Some(&m.id))
        .await
        .unwrap();
}

/// Every range of a sealed file reads back as written: within a frame, at and across frame
/// boundaries, across many frames, the whole file, the last byte; the first read decrypts and
/// a second read of the same range is served from the cache of opened plaintext, with the same
/// bytes. A read past the end is an error, not a short answer.
#[tokio::test]
async fn a_sealed_file_reads_back_every_range_twice() {
    use std::io::Write as _;
    use tantivy::directory::{Directory, TerminatingWrite};
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(dir.path());
    let path = dir.path().join("index");
    let key = docstore_search::IndexKey::load_or_create(&path, &keys)
        .await
        .unwrap();
    let sealed = docstore_search::SealedDirectory::open(&path, &key).unwrap();
    let fs = docstore_search::FRAME_SIZE as usize;
    let len = 7 * fs + 123;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let name = std::path::Path::new("t.idx");
    let mut w = sealed.open_write(name).unwrap();
    w.write_all(&data).unwrap();
    w.terminate().unwrap();
    let file = sealed.get_file_handle(name).unwrap();
    assert_eq!(file.len(), len);
    let ranges = [
        0..1,
        10..20,
        0..fs,
        fs - 1..fs + 1,
        fs..2 * fs,
        fs - 5..3 * fs + 5,
        2 * fs + 1..6 * fs,
        7 * fs..len,
        len - 1..len,
        0..len,
        3..3,
    ];
    for _round in 0..2 {
        for r in ranges.iter() {
            let got = file.read_bytes(r.clone()).unwrap();
            assert_eq!(got.as_slice(), &data[r.clone()], "range {r:?}");
        }
    }
    // Cached ranges overlapping others keep their own bytes.
    let inner = file.read_bytes(fs + 3..2 * fs + 9).unwrap();
    assert_eq!(inner.as_slice(), &data[fs + 3..2 * fs + 9]);
    assert!(file.read_bytes(len - 1..len + 1).is_err());
}
