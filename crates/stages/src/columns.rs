//! Reading order of pages set in columns, from glyph positions.
//!
//! The extractors read a page in content-stream order or line by line across the page, so a
//! page whose lines are drawn row by row across two columns (or whose left lines run close to
//! the right column) comes out with the columns interleaved, and a phrase that ends one line and
//! begins the next of its column is no longer a phrase. pdftotext reads each column whole; this
//! module does the same from `pdf_oxide`'s glyphs:
//!
//! 1. glyphs that share a baseline form a row, cut into fragments where the gap between two
//!    glyphs exceeds an em;
//! 2. rows are grouped, top to bottom, into bands that share at least one empty vertical strip
//!    (a gutter) an em or more wide; a row that crosses every strip (a title, a footer) ends the
//!    band;
//! 3. a band of at least three rows whose gutters have text on both sides is read column by
//!    column, when every column holds prose: fragments of at least 12 ems and three words on
//!    average. Tables, with narrow cells of a word or two, stay rows, so a result stays next to
//!    its analyte.
//!
//! The stage keeps the extractors' reading unless it runs a row of one column into the next
//! (see [`Columns::crossed_by`]): their spacing and hyphen handling are better than a reading
//! rebuilt from glyphs, and a page they already read in order is left alone.

use pdf_oxide::layout::TextChar;

/// Gap, in ems, past which two glyphs of a row belong to different fragments.
const FRAGMENT_GAP: f32 = 1.0;
/// Gap, in ems, past which a space is put between two glyphs of a fragment.
const WORD_GAP: f32 = 0.2;
/// Width, in ems, of the narrowest gutter.
const GUTTER: f32 = 1.0;
/// Rows a band needs to be read as columns.
const MIN_ROWS: usize = 3;
/// Prose: mean fragment width (ems) and words per fragment in every column.
const MIN_COLUMN_WIDTH: f32 = 12.0;
const MIN_WORDS: f32 = 3.0;
/// Characters taken from each side of a gutter for a seam: enough to be unlikely by chance, few
/// enough that a reader breaking the row elsewhere is still caught.
const SEAM_SIDE: usize = 12;
/// Seams shorter than this (a word or two on each side) are not checked.
const MIN_SEAM: usize = 16;
/// Bounds the work on a page of scattered glyphs (a chart, a map): past it, no column reading.
const MAX_ROWS: usize = 2_000;

/// A page read column by column, and the seams its rows had across the gutters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Columns {
    /// The page's text: bands top to bottom, each column of a band whole, left to right.
    pub(crate) reading: String,
    /// For each row with text on both sides of a gutter: the end of its left fragment and the
    /// start of its right one, whitespace removed. A reading that holds one ran the row across.
    seams: Vec<String>,
}

impl Columns {
    /// Whether `text` (a whole page's reading) runs a row of one column into the next: it holds
    /// a row's left fragment immediately followed by that row's right one.
    pub(crate) fn crossed_by(&self, text: &str) -> bool {
        let squashed = squash(text);
        self.seams.iter().any(|seam| squashed.contains(seam.as_str()))
    }
}

#[derive(Debug, Clone)]
struct Fragment {
    x0: f32,
    x1: f32,
    em: f32,
    text: String,
}

impl Fragment {
    fn words(&self) -> usize {
        self.text.split_whitespace().count()
    }
}

type Row = Vec<Fragment>;

/// The page's column reading, or `None` when no band of it is set in columns (or its glyphs are
/// not all upright, or too scattered to tell).
pub(crate) fn detect(chars: &[TextChar]) -> Option<Columns> {
    if chars.iter().any(|c| c.rotation_degrees.abs() > 1.0) {
        return None;
    }
    let rows = rows(chars)?;
    let x0 = rows.iter().flatten().map(|f| f.x0).fold(f32::INFINITY, f32::min);
    let x1 = rows
        .iter()
        .flatten()
        .map(|f| f.x1)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut reading = String::new();
    let mut seams = Vec::new();
    let mut any_columns = false;
    for band in bands(&rows, x0, x1) {
        if !reading.is_empty() {
            reading.push('\n');
        }
        match columns(band.rows, &band.gutters) {
            Some(cols) => {
                any_columns = true;
                seams.extend(row_seams(band.rows, &band.gutters));
                let texts: Vec<String> = cols.iter().map(|c| lines(c)).collect();
                reading.push_str(&texts.join("\n\n"));
            }
            None => reading.push_str(&lines(band.rows)),
        }
    }
    any_columns.then_some(Columns { reading, seams })
}

/// Glyphs grouped into rows by baseline (top of the page first), each cut into fragments.
fn rows(chars: &[TextChar]) -> Option<Vec<Row>> {
    let mut order: Vec<&TextChar> = chars.iter().filter(|c| c.font_size > 0.0).collect();
    // PDF space: a larger y is higher on the page.
    order.sort_by(|a, b| b.bbox.y.total_cmp(&a.bbox.y));
    let mut rows: Vec<Vec<&TextChar>> = Vec::new();
    let mut baseline = f32::NAN;
    for c in order {
        let em = c.font_size.max(1.0);
        match rows.last_mut() {
            Some(row) if (baseline - c.bbox.y).abs() <= 0.4 * em => row.push(c),
            _ => {
                if rows.len() == MAX_ROWS {
                    return None;
                }
                baseline = c.bbox.y;
                rows.push(vec![c]);
            }
        }
    }
    Some(
        rows.into_iter()
            .map(|mut row| {
                row.sort_by(|a, b| a.bbox.x.total_cmp(&b.bbox.x));
                fragments(&row)
            })
            .filter(|r| !r.is_empty())
            .collect(),
    )
}

fn fragments(row: &[&TextChar]) -> Row {
    let mut out: Row = Vec::new();
    // The right edge of the last inked glyph: a space glyph does not extend a fragment.
    let mut ink_end = f32::NEG_INFINITY;
    for c in row {
        let em = c.font_size.max(1.0);
        let blank = c.char.is_whitespace();
        let gap = c.bbox.x - ink_end;
        match out.last_mut() {
            Some(f) if gap <= FRAGMENT_GAP * em => {
                if blank {
                    if !f.text.ends_with(' ') {
                        f.text.push(' ');
                    }
                    continue;
                }
                if gap > WORD_GAP * em && !f.text.ends_with(' ') {
                    f.text.push(' ');
                }
                f.text.push(c.char);
                f.x1 = f.x1.max(c.bbox.x + c.bbox.width);
                f.em = f.em.max(em);
            }
            _ if blank => continue,
            _ => out.push(Fragment {
                x0: c.bbox.x,
                x1: c.bbox.x + c.bbox.width,
                em,
                text: c.char.to_string(),
            }),
        }
        ink_end = c.bbox.x + c.bbox.width;
    }
    for f in &mut out {
        let trimmed = f.text.trim_end().len();
        f.text.truncate(trimmed);
    }
    out
}

struct Band<'a> {
    rows: &'a [Row],
    /// Gutters with text on both sides within the band, left to right.
    gutters: Vec<(f32, f32)>,
}

/// Rows grouped top to bottom into bands that share an empty strip at least a gutter wide with
/// text on both sides (an interior strip: the margin right of the text does not hold a band
/// together).
fn bands(rows: &[Row], x0: f32, x1: f32) -> Vec<Band<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut free: Vec<(f32, f32)> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let here = free_strips(row, x0, x1);
        if i == start {
            free = here;
            continue;
        }
        let shared = intersect(&free, &here, em_of(row));
        if shared.iter().any(|&s| interior(&rows[start..=i], s)) {
            free = shared;
        } else {
            out.push(band(&rows[start..i], &free));
            start = i;
            free = here;
        }
    }
    if start < rows.len() {
        out.push(band(&rows[start..], &free));
    }
    out
}

/// Whether `rows` have text on both sides of the strip.
fn interior(rows: &[Row], (g0, g1): (f32, f32)) -> bool {
    let left = rows.iter().flatten().any(|f| f.x1 <= g0);
    let right = rows.iter().flatten().any(|f| f.x0 >= g1);
    left && right
}

fn band<'a>(rows: &'a [Row], free: &[(f32, f32)]) -> Band<'a> {
    let gutters = free.iter().copied().filter(|&s| interior(rows, s)).collect();
    Band { rows, gutters }
}

fn em_of(row: &Row) -> f32 {
    row.iter().map(|f| f.em).fold(1.0, f32::max)
}

/// The strips of `[x0, x1]` no fragment of `row` covers, at least a gutter wide.
fn free_strips(row: &Row, x0: f32, x1: f32) -> Vec<(f32, f32)> {
    let min = GUTTER * em_of(row);
    let mut spans: Vec<(f32, f32)> = row.iter().map(|f| (f.x0, f.x1)).collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = Vec::new();
    let mut at = x0;
    for (s0, s1) in spans {
        if s0 - at >= min {
            out.push((at, s0));
        }
        at = at.max(s1);
    }
    if x1 - at >= min {
        out.push((at, x1));
    }
    out
}

fn intersect(a: &[(f32, f32)], b: &[(f32, f32)], em: f32) -> Vec<(f32, f32)> {
    let mut out = Vec::new();
    for &(a0, a1) in a {
        for &(b0, b1) in b {
            let (lo, hi) = (a0.max(b0), a1.min(b1));
            if hi - lo >= GUTTER * em {
                out.push((lo, hi));
            }
        }
    }
    out
}

/// Index of the column a fragment starting at `x` falls in.
fn column_of(x: f32, gutters: &[(f32, f32)]) -> usize {
    gutters.iter().filter(|&&(g0, _)| x >= g0).count()
}

/// The band's fragments split by column (each column a list of row pieces), or `None` when the
/// band is not prose set in columns.
fn columns(rows: &[Row], gutters: &[(f32, f32)]) -> Option<Vec<Vec<Row>>> {
    if gutters.is_empty() || rows.len() < MIN_ROWS {
        return None;
    }
    let mut cols: Vec<Vec<Row>> = vec![Vec::new(); gutters.len() + 1];
    for row in rows {
        let mut pieces: Vec<Row> = vec![Vec::new(); gutters.len() + 1];
        for f in row {
            pieces[column_of(f.x0, gutters)].push(f.clone());
        }
        for (col, piece) in cols.iter_mut().zip(pieces) {
            if !piece.is_empty() {
                col.push(piece);
            }
        }
    }
    let prose = cols.iter().all(|col| {
        let frags: Vec<&Fragment> = col.iter().flatten().collect();
        let n = frags.len() as f32;
        frags.len() >= MIN_ROWS
            && frags.iter().map(|f| (f.x1 - f.x0) / f.em).sum::<f32>() / n >= MIN_COLUMN_WIDTH
            && frags.iter().map(|f| f.words() as f32).sum::<f32>() / n >= MIN_WORDS
    });
    prose.then_some(cols)
}

/// For each row with text on both sides of a gutter, the end of its left piece followed by the
/// start of its right one ([`SEAM_SIDE`] characters each, whitespace removed); short ones (under
/// 16 characters) are left out, as they could occur in an ordered reading by chance.
fn row_seams(rows: &[Row], gutters: &[(f32, f32)]) -> Vec<String> {
    let mut out = Vec::new();
    for row in rows {
        for k in 0..gutters.len() {
            let left = row.iter().rfind(|f| column_of(f.x0, gutters) == k);
            let right = row.iter().find(|f| column_of(f.x0, gutters) == k + 1);
            if let (Some(l), Some(r)) = (left, right) {
                let (l, r) = (squash(&l.text), squash(&r.text));
                let tail: String = {
                    let n = l.chars().count();
                    l.chars().skip(n.saturating_sub(SEAM_SIDE)).collect()
                };
                let seam: String = tail.chars().chain(r.chars().take(SEAM_SIDE)).collect();
                if seam.chars().count() >= MIN_SEAM {
                    out.push(seam);
                }
            }
        }
    }
    out
}

/// Rows as lines, a row's fragments joined by a space.
fn lines(rows: &[impl AsRef<[Fragment]>]) -> String {
    rows.iter()
        .map(|r| {
            r.as_ref()
                .iter()
                .map(|f| f.text.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` without whitespace, NFKC-normalised as the stage's readings are.
fn squash(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    text.nfkc().filter(|c| !c.is_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_chars(name: &str) -> Vec<TextChar> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/columns")
            .join(name);
        let doc = pdf_oxide::PdfDocument::from_bytes(std::fs::read(path).unwrap()).unwrap();
        doc.extract_chars(0).unwrap()
    }

    #[test]
    fn a_page_drawn_row_by_row_is_read_column_by_column() {
        let cols = detect(&page_chars("columns-rows.pdf")).expect("two columns");
        let (left, right) = cols.reading.split_once("\n\n").unwrap();
        assert!(left.starts_with("Boletim Informativo"), "{left}");
        assert!(
            left.contains("sem custo\nadicional para os conveniados."),
            "{left}"
        );
        assert!(right.starts_with("A equipe de enfermagem"), "{right}");
        assert!(right.contains("no site da\nFindes."), "{right}");
        // The row the extractor ran across the gutter is one of the seams.
        assert!(cols.crossed_by("horas, sem custoultrassonografia permite exames com maior"));
        assert!(!cols.crossed_by(&cols.reading));
    }

    #[test]
    fn a_table_of_narrow_cells_is_not_columns() {
        assert_eq!(detect(&page_chars("table-rows.pdf")), None);
    }

    #[test]
    fn one_column_of_prose_is_not_columns() {
        let chars: Vec<TextChar> = page_chars("columns-rows.pdf")
            .into_iter()
            .filter(|c| c.bbox.x < 290.0)
            .collect();
        assert_eq!(detect(&chars), None);
    }
}
