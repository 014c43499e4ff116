//! Reading order of two-column pages (fixtures and their writer in `tests/columns/`): the text
//! stage reads each column whole, as pdftotext does, so a phrase that wraps within a column is
//! still a phrase; a page drawn line by line across both columns is read so too, and a table's
//! rows stay rows.

mod common;

use std::path::PathBuf;

use docstore_stages::extract::{ExtractLimits, extract_pdf_text};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/columns")
        .join(name)
}

fn text(name: &str) -> String {
    let bytes = std::fs::read(path(name)).unwrap();
    extract_pdf_text(&bytes, &ExtractLimits::default())
        .unwrap()
        .joined()
}

/// Words in order, whitespace and line breaks ignored.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn joined_words(text: &str) -> String {
    words(text).join(" ")
}

/// Phrases that wrap within a column of both pages.
const PHRASES: [&str; 4] = [
    "das sete às dezenove horas, sem custo adicional para os conveniados.",
    "publicou o relatório no site da Findes.",
    "o novo aparelho de ultrassonografia permite exames com maior precisão",
    "Os resultados de hemograma completo, glicemia de jejum",
];

#[test]
fn phrases_that_wrap_within_a_column_are_read_whole() {
    for name in ["columns-frames.pdf", "columns-rows.pdf"] {
        let got = joined_words(&text(name));
        for phrase in PHRASES {
            assert!(got.contains(phrase), "{name}: {phrase:?} not in {got}");
        }
        // The left column ends before the right one begins.
        let (end_left, start_right) = (
            got.find("quando o laudo estiver disponível.").unwrap(),
            got.find("A equipe de enfermagem").unwrap(),
        );
        assert!(end_left < start_right, "{name}: {got}");
    }
}

/// Word for word, in pdftotext's order: the columns, and the footer where pdftotext puts it.
#[test]
fn the_words_come_in_pdftotexts_order() {
    let Some(reference) = common::pdftotext_or_skip(&path("columns-rows.pdf")) else {
        return;
    };
    assert_eq!(words(&text("columns-rows.pdf")), words(&reference));
    let frames = text("columns-frames.pdf");
    let reference = common::pdftotext(&path("columns-frames.pdf")).unwrap();
    // pdftotext reads the footer after the left column; the content stream has it last. The
    // columns themselves agree word for word.
    let without = |t: &str| joined_words(t).replace("Edição de dezembro de 2026 - distribuição gratuita", "");
    assert_eq!(
        joined_words(&without(&frames)),
        joined_words(&without(&reference))
    );
}

#[test]
fn a_tables_rows_stay_rows() {
    let got = joined_words(&text("table-rows.pdf"));
    for row in [
        "Hemoglobina 13,5 g/dL 12,0 a 16,0",
        "Glicemia de jejum 92 mg/dL 70 a 99",
        "Plaquetas 250.000 /mm3 150.000 a 450.000",
    ] {
        assert!(got.contains(row), "{row:?} not in {got}");
    }
}
