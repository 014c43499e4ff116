//! Structural checks every PDF passes before a stage hands it to a renderer or extractor.
//!
//! The PDF libraries we use are tolerant: they repair a broken cross-reference table, stop at a
//! loop in the page tree or the `/Prev` chain, and decode what they can. That is right for a
//! viewer and wrong for a clinic's records: a damaged or ambiguous file can render differently in
//! different readers (what the patient sees is not what was stamped and indexed), and the repair
//! paths are where parser bugs live. So a PDF is refused, with a typed [`PdfDefect`] that names
//! what is wrong, when it has:
//!
//! - a cross-reference table that cannot be read at all (lopdf rebuilt it by scanning), or a
//!   `/Prev` chain that loops;
//! - no page tree, a loop in it, or a `/Count` that disagrees with the pages it holds;
//! - page or form content in an image codec (`/JBIG2Decode` content is the classic bomb);
//! - a loop in the outline (bookmark) tree;
//! - an object stream that contains itself or sits inside another object stream;
//! - form XObjects or Type 3 glyphs whose content invokes itself, directly or through others;
//! - a stream that inflates past [`PreflightLimits::max_stream_decoded`], or all streams together
//!   past [`PreflightLimits::max_total_decoded`] (decompression bombs);
//! - an image whose declared size is beyond the thumbnail limits (side, decoded bytes).
//!
//! A table that reads but has stale entries (an object not where the table says, as some
//! scanners write) is common and harmless: when the page tree names an object the table does not
//! lead to, the file is rebuilt by scanning once and the rebuilt document is held to every check.
//!
//! A file that needs a user password is [`PdfDefect::Encrypted`] (each stage reports it as its own
//! `Encrypted`): its objects cannot be read or checked. Files lopdf decrypts (empty user password,
//! owner restrictions only) are checked decrypted. A trailer with no `/ID` (older writers of RC4
//! files left it out) is read as an empty first identifier, as poppler, pdf.js and hayro read it:
//! lopdf alone would refuse to derive the key.
//!
//! Every walk is bounded (visited sets, item caps), and decoding runs with lopdf's output limit,
//! so the check itself costs at most one parse plus bounded inflation.

use std::collections::{HashMap, HashSet};

use lopdf::content::Content;
use lopdf::xref::{XrefEntry, XrefRecovery};
use lopdf::{Dictionary, Document, Object, ObjectId};

use super::described;

/// Bounds the check enforces (and stays within itself).
#[derive(Debug, Clone, Copy)]
pub struct PreflightLimits {
    /// Largest decoded stream, bytes.
    pub max_stream_decoded: usize,
    /// Largest sum of decoded streams, bytes.
    pub max_total_decoded: u64,
    /// Largest image width or height, px (as the thumbnail stage).
    pub max_image_side: u32,
    /// Largest decoded image, bytes (width × height × components × bits / 8).
    pub max_image_decoded: u64,
    /// Most cross-reference sections (incremental updates).
    pub max_xref_sections: usize,
    /// Most nodes in the page tree or the outline tree.
    pub max_tree_nodes: usize,
}

impl Default for PreflightLimits {
    fn default() -> Self {
        PreflightLimits {
            // A content stream or font beyond 64 MiB is not a report; images are bounded by
            // their declared size instead and are not inflated here.
            max_stream_decoded: 64 << 20,
            max_total_decoded: 512 << 20,
            max_image_side: 30_000,
            max_image_decoded: 320 << 20,
            max_xref_sections: 1_000,
            max_tree_nodes: 200_000,
        }
    }
}

/// What makes a PDF unfit for processing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PdfDefect {
    /// No `%PDF-` header.
    #[error("not a PDF")]
    NotPdf,
    /// A user password is needed to read the file.
    #[error("encrypted PDF")]
    Encrypted,
    /// The file does not parse at all.
    #[error("unreadable PDF: {0}")]
    Unreadable(String),
    /// The cross-reference table could not be read as written and was rebuilt by scanning.
    #[error("damaged PDF: its cross-reference table is unreadable")]
    DamagedXref,
    /// The `/Prev` chain of cross-reference sections visits a section twice.
    #[error("damaged PDF: the cross-reference sections form a loop (offset {0})")]
    XrefLoop(usize),
    /// More incremental updates than the limit.
    #[error("PDF with more than {0} cross-reference sections")]
    TooManyRevisions(usize),
    /// The catalog has no usable page tree.
    #[error("damaged PDF: no page tree")]
    NoPageTree,
    /// A page-tree node is its own ancestor.
    #[error("damaged PDF: the page tree loops (object {0})")]
    PageTreeLoop(u32),
    /// A page-tree node's `/Count` is not the number of pages under it.
    #[error("damaged PDF: page tree node {object} declares {declared} pages and holds {found}")]
    PageCount {
        /// The node.
        object: u32,
        /// Its `/Count`.
        declared: i64,
        /// Pages found under it.
        found: usize,
    },
    /// The outline tree visits an item twice.
    #[error("damaged PDF: the outline (bookmarks) loops (object {0})")]
    OutlineLoop(u32),
    /// An object stream contains itself or lies inside another object stream.
    #[error("damaged PDF: object stream {0} contains itself")]
    ObjectStreamLoop(u32),
    /// The page tree names an object that is not in the file, even after a rebuild.
    #[error("damaged PDF: object {0} of the page tree is missing")]
    MissingObject(u32),
    /// Page or form content encoded with a filter that only images may use.
    #[error("hostile PDF: content stream {object} uses the image filter {filter}")]
    ContentFilter {
        /// The content stream.
        object: u32,
        /// The filter.
        filter: String,
    },
    /// Form XObjects, tiling patterns or Type 3 glyphs that invoke themselves.
    #[error("hostile PDF: content of object {0} invokes itself")]
    ContentCycle(u32),
    /// A stream, or all of them together, inflates past the limit.
    #[error("hostile PDF: stream {object} inflates past {limit} bytes")]
    DecompressionBomb {
        /// The stream (the one that crossed the total, for the sum).
        object: u32,
        /// The limit crossed.
        limit: u64,
    },
    /// An image whose declared size is over the limits.
    #[error("image {object} is {width}×{height} px, over the limits")]
    ImageTooLarge {
        /// The image XObject.
        object: u32,
        /// Declared width.
        width: i64,
        /// Declared height.
        height: i64,
    },
    /// More tree nodes than the limit.
    #[error("PDF with more than {0} page-tree or outline nodes")]
    TooManyNodes(usize),
}

/// Loads `bytes` with lopdf and checks its structure. Returns the loaded document (stages that use
/// lopdf reuse it, decrypted when it was encrypted with an empty user password), or the first
/// defect found.
pub fn preflight(bytes: &[u8], limits: &PreflightLimits) -> Result<Document, PdfDefect> {
    if !bytes.starts_with(b"%PDF-") {
        return Err(PdfDefect::NotPdf);
    }
    // lopdf stops quietly at a `/Prev` loop, so the chain is walked here first.
    xref_chain(bytes, limits)?;
    let mut doc = Document::load_mem(bytes)
        .map_err(|e| PdfDefect::Unreadable(described("lopdf could not parse the PDF", e)))?;
    decrypt_without_file_id(&mut doc, bytes);
    // Still encrypted after loading: lopdf needed a user password it does not have. A file it
    // could decrypt (empty user password, owner restrictions only) is checked like any other.
    if doc.is_encrypted() {
        return Err(PdfDefect::Encrypted);
    }
    if doc.xref_recovery == Some(XrefRecovery::Reconstructed) {
        return Err(PdfDefect::DamagedXref);
    }
    match check(&doc, limits) {
        Err(PdfDefect::MissingObject(_)) => {
            let options = lopdf::LoadOptions {
                force_reconstruct: true,
                ..Default::default()
            };
            let rebuilt = Document::load_mem_with_options(bytes, options).map_err(|e| {
                PdfDefect::Unreadable(described("lopdf could not rebuild the cross-reference table", e))
            })?;
            check(&rebuilt, limits)?;
            Ok(rebuilt)
        }
        Err(defect) => Err(defect),
        Ok(()) => Ok(doc),
    }
}

/// Reloads with the empty user password a document lopdf left encrypted only because its trailer
/// has no `/ID`: lopdf derives the key from the trailer it parsed, so the bytes it parses get an
/// empty `/ID` in their last trailer (after every object and cross-reference table, so no offset
/// moves), and the `/ID` lent for that is taken away again. A document that still needs a password
/// stays as loaded.
fn decrypt_without_file_id(doc: &mut Document, bytes: &[u8]) {
    if !doc.is_encrypted() || doc.trailer.has(b"ID") {
        return;
    }
    let Some(patched) = with_empty_file_id(bytes) else {
        return;
    };
    if let Ok(mut reloaded) = Document::load_mem(&patched)
        && !reloaded.is_encrypted()
    {
        reloaded.trailer.remove(b"ID");
        *doc = reloaded;
    }
}

/// `bytes` with `/ID [<> <>]` opening the dictionary of the classic `trailer` that the final
/// `startxref` governs; `None` for a cross-reference stream or a tail that does not read.
fn with_empty_file_id(bytes: &[u8]) -> Option<Vec<u8>> {
    let tail_start = bytes.len().saturating_sub(1024);
    let tail = &bytes[tail_start..];
    let keyword = tail_start + rfind(tail, b"startxref")?;
    let digits: Vec<u8> = bytes[keyword + 9..]
        .iter()
        .copied()
        .skip_while(u8::is_ascii_whitespace)
        .take_while(u8::is_ascii_digit)
        .collect();
    let xref: usize = std::str::from_utf8(&digits).ok()?.parse().ok()?;
    let section = bytes.get(xref..keyword)?;
    if !section.starts_with(b"xref") {
        return None;
    }
    let trailer = xref + rfind(section, b"trailer")? + 7;
    let open = trailer
        + bytes[trailer..keyword]
            .iter()
            .position(|b| !b.is_ascii_whitespace())?;
    if !bytes[open..].starts_with(b"<<") {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    out.extend_from_slice(&bytes[..open + 2]);
    out.extend_from_slice(b" /ID [<> <>] ");
    out.extend_from_slice(&bytes[open + 2..]);
    Some(out)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

fn check(doc: &Document, limits: &PreflightLimits) -> Result<(), PdfDefect> {
    object_streams(doc)?;
    page_tree(doc, limits)?;
    outlines(doc, limits)?;
    streams(doc, limits)?;
    content_cycles(doc, limits)
}

/// Filters lopdf decodes; content (as opposed to an image) must use only these.
const CONTENT_FILTERS: &[&[u8]] = &[
    b"FlateDecode",
    b"LZWDecode",
    b"ASCII85Decode",
    b"ASCIIHexDecode",
    b"RunLengthDecode",
    b"BrotliDecode",
];

/// Refuses a content stream (`id`) in an image codec.
fn content_filters(id: u32, stream: &lopdf::Stream) -> Result<(), PdfDefect> {
    for filter in stream.filters().unwrap_or_default() {
        if !CONTENT_FILTERS.contains(&filter) {
            return Err(PdfDefect::ContentFilter {
                object: id,
                filter: String::from_utf8_lossy(filter).chars().take(40).collect(),
            });
        }
    }
    Ok(())
}

/// Follows `startxref` and every `/Prev` through the raw bytes, refusing a loop. A section this
/// scan cannot read ends the walk (lopdf then judges the file; its repairs are checked above).
fn xref_chain(bytes: &[u8], limits: &PreflightLimits) -> Result<(), PdfDefect> {
    let tail = bytes.len().saturating_sub(4096);
    let Some(at) = find_last(&bytes[tail..], b"startxref").map(|i| tail + i) else {
        return Ok(());
    };
    let Some(mut offset) = integer_after(bytes, at + b"startxref".len()) else {
        return Ok(());
    };
    let mut seen = HashSet::new();
    loop {
        if !seen.insert(offset) {
            return Err(PdfDefect::XrefLoop(offset));
        }
        if seen.len() > limits.max_xref_sections {
            return Err(PdfDefect::TooManyRevisions(limits.max_xref_sections));
        }
        let Some(dict) = section_dictionary(bytes, offset) else {
            return Ok(());
        };
        match key_integer(dict, b"/Prev") {
            Some(prev) => offset = prev,
            None => return Ok(()),
        }
    }
}

/// The trailer dictionary of a classic section at `offset`, or the dictionary of a
/// cross-reference stream there, as raw bytes.
fn section_dictionary(bytes: &[u8], offset: usize) -> Option<&[u8]> {
    let rest = bytes.get(offset..)?;
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &rest[start..];
    // A section is at most a few MB of entries; its dictionary follows within that.
    let window = &rest[..rest.len().min(16 << 20)];
    if rest.starts_with(b"xref") {
        let t = find_first(window, b"trailer")?;
        let end = find_first(&window[t..], b"startxref").map_or(window.len(), |e| t + e);
        Some(&window[t..end])
    } else if rest.first().is_some_and(u8::is_ascii_digit) {
        let obj = find_first(&window[..window.len().min(64)], b"obj")?;
        let end = find_first(&window[obj..], b"stream").map_or(window.len(), |e| obj + e);
        Some(&window[obj..end])
    } else {
        None
    }
}

fn find_first(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The unsigned integer after optional whitespace at `at`.
fn integer_after(bytes: &[u8], at: usize) -> Option<usize> {
    let rest = bytes.get(at..)?;
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let digits: Vec<u8> = rest[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .take(19)
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The integer value of `key` (a name including its slash) in a raw dictionary.
fn key_integer(dict: &[u8], key: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = find_first(&dict[from..], key) {
        let after = from + i + key.len();
        // `/Prev` and not `/PrevPage`: the name ends at whitespace or a delimiter.
        if dict.get(after).is_some_and(|b| b.is_ascii_alphanumeric()) {
            from = after;
            continue;
        }
        return integer_after(dict, after);
    }
    None
}

fn object_streams(doc: &Document) -> Result<(), PdfDefect> {
    let entries = &doc.reference_table.entries;
    let mut containers = HashSet::new();
    for (&id, entry) in entries {
        if let XrefEntry::Compressed { container, .. } = entry {
            if *container == id || matches!(entries.get(container), Some(XrefEntry::Compressed { .. })) {
                return Err(PdfDefect::ObjectStreamLoop(*container));
            }
            containers.insert(*container);
        }
    }
    // The container's own header may also list the container (lopdf then resolves the number to
    // whichever copy it met first).
    for container in containers {
        let Ok(Object::Stream(stream)) = doc.get_object((container, 0)) else {
            continue;
        };
        let n = stream.dict.get(b"N").and_then(Object::as_i64).unwrap_or(0);
        let Ok(data) = stream.decompressed_content_with_limit(64 << 20) else {
            continue;
        };
        let header = String::from_utf8_lossy(&data[..data.len().min(64 * 1024)]);
        let mut numbers = header.split_ascii_whitespace();
        for _ in 0..n.clamp(0, 100_000) {
            match numbers.next().and_then(|s| s.parse::<u32>().ok()) {
                Some(obj) if obj == container => return Err(PdfDefect::ObjectStreamLoop(container)),
                Some(_) => {}
                None => break,
            }
            numbers.next();
        }
    }
    Ok(())
}

fn page_tree(doc: &Document, limits: &PreflightLimits) -> Result<(), PdfDefect> {
    let root = doc
        .catalog()
        .ok()
        .and_then(|c| c.get(b"Pages").ok())
        .and_then(|p| p.as_reference().ok())
        .ok_or(PdfDefect::NoPageTree)?;
    if doc.get_dictionary(root).is_err() {
        return Err(PdfDefect::NoPageTree);
    }
    let mut on_path = HashSet::new();
    let mut nodes = 0;
    count_pages(doc, root, &mut on_path, &mut nodes, limits)?;
    Ok(())
}

/// Pages under `node`, checking each intermediate node's `/Count` (recursive; the depth is bounded
/// by the node cap and the loop check).
fn count_pages(
    doc: &Document,
    node: ObjectId,
    on_path: &mut HashSet<ObjectId>,
    nodes: &mut usize,
    limits: &PreflightLimits,
) -> Result<usize, PdfDefect> {
    *nodes += 1;
    if *nodes > limits.max_tree_nodes || on_path.len() > 256 {
        return Err(PdfDefect::TooManyNodes(limits.max_tree_nodes));
    }
    if !on_path.insert(node) {
        return Err(PdfDefect::PageTreeLoop(node.0));
    }
    let Ok(dict) = doc.get_dictionary(node) else {
        return Err(PdfDefect::MissingObject(node.0));
    };
    let is_page = dict
        .get(b"Type")
        .and_then(Object::as_name)
        .is_ok_and(|t| t == b"Page")
        || (dict.get(b"Kids").is_err() && dict.get(b"Contents").is_ok());
    let found = if is_page {
        page_contents(doc, dict)?;
        1
    } else {
        let kids = match dict.get(b"Kids").map(|k| doc.dereference(k)) {
            Ok(Ok((_, Object::Array(kids)))) => kids.clone(),
            _ => Vec::new(),
        };
        let mut found = 0;
        for kid in kids {
            if let Ok(id) = kid.as_reference() {
                found += count_pages(doc, id, on_path, nodes, limits)?;
            }
        }
        if let Ok(count) = dict
            .get(b"Count")
            .and_then(|c| doc.dereference(c))
            .and_then(|(_, c)| c.as_i64())
            && count != found as i64
        {
            return Err(PdfDefect::PageCount {
                object: node.0,
                declared: count,
                found,
            });
        }
        found
    };
    on_path.remove(&node);
    Ok(found)
}

fn page_contents(doc: &Document, page: &Dictionary) -> Result<(), PdfDefect> {
    let refs = match page.get(b"Contents") {
        Ok(Object::Reference(id)) => match doc.get_object(*id) {
            Ok(Object::Array(items)) => items.clone(),
            _ => vec![Object::Reference(*id)],
        },
        Ok(Object::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    for r in refs {
        let Ok(id) = r.as_reference() else { continue };
        if let Ok(Object::Stream(stream)) = doc.get_object(id) {
            content_filters(id.0, stream)?;
        }
    }
    Ok(())
}

fn outlines(doc: &Document, limits: &PreflightLimits) -> Result<(), PdfDefect> {
    let Some(first) = doc
        .catalog()
        .ok()
        .and_then(|c| c.get(b"Outlines").ok())
        .and_then(|o| doc.dereference(o).ok())
        .and_then(|(_, o)| o.as_dict().ok())
        .and_then(|o| o.get(b"First").ok())
        .and_then(|f| f.as_reference().ok())
    else {
        return Ok(());
    };
    let mut seen = HashSet::new();
    let mut todo = vec![first];
    while let Some(item) = todo.pop() {
        if !seen.insert(item) {
            return Err(PdfDefect::OutlineLoop(item.0));
        }
        if seen.len() > limits.max_tree_nodes {
            return Err(PdfDefect::TooManyNodes(limits.max_tree_nodes));
        }
        let Ok(dict) = doc.get_dictionary(item) else {
            continue;
        };
        for key in [b"Next".as_slice(), b"First"] {
            if let Ok(next) = dict.get(key).and_then(Object::as_reference) {
                todo.push(next);
            }
        }
    }
    Ok(())
}

fn is_image(dict: &Dictionary) -> bool {
    dict.get(b"Subtype")
        .and_then(Object::as_name)
        .is_ok_and(|s| s == b"Image")
}

fn streams(doc: &Document, limits: &PreflightLimits) -> Result<(), PdfDefect> {
    let mut total = 0u64;
    for (&(id, _), object) in &doc.objects {
        let Object::Stream(stream) = object else { continue };
        if is_image(&stream.dict) {
            image_size(doc, id, &stream.dict, limits)?;
            continue;
        }
        let bomb = |limit| PdfDefect::DecompressionBomb { object: id, limit };
        match stream.decompressed_content_with_limit(limits.max_stream_decoded) {
            Ok(data) => {
                total += data.len() as u64;
                if total > limits.max_total_decoded {
                    return Err(bomb(limits.max_total_decoded));
                }
            }
            Err(lopdf::Error::Decompress(lopdf::DecompressError::MemoryLimitExceeded { .. })) => {
                return Err(bomb(limits.max_stream_decoded as u64));
            }
            // Filters lopdf does not decode (images' codecs), or broken data: the stages judge.
            Err(_) => {}
        }
    }
    Ok(())
}

fn image_size(doc: &Document, id: u32, dict: &Dictionary, limits: &PreflightLimits) -> Result<(), PdfDefect> {
    let int = |key: &[u8]| {
        dict.get(key)
            .and_then(|v| doc.dereference(v))
            .and_then(|(_, v)| v.as_i64())
            .ok()
    };
    let (Some(width), Some(height)) = (int(b"Width"), int(b"Height")) else {
        return Ok(());
    };
    let bits = int(b"BitsPerComponent").unwrap_or(8).clamp(1, 16) as u64;
    let side = i64::from(limits.max_image_side);
    let too_large = PdfDefect::ImageTooLarge {
        object: id,
        width,
        height,
    };
    if width <= 0 || height <= 0 || width > side || height > side {
        return Err(too_large);
    }
    // Up to 4 components (CMYK); the colour space is not resolved here.
    if (width as u64) * (height as u64) * 4 * bits / 8 > limits.max_image_decoded {
        return Err(too_large);
    }
    Ok(())
}

/// Content that can invoke other content: form XObjects (`Do`), tiling patterns (`scn`) and Type 3
/// fonts (`Tf`, then their glyph procedures). Pages cannot be invoked, so a cycle can only run through these; the graph's
/// edges are the names each one's content actually invokes, resolved in its own resources.
fn content_cycles(doc: &Document, limits: &PreflightLimits) -> Result<(), PdfDefect> {
    let mut invokes: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&(id, _), object) in &doc.objects {
        let (resources, contents): (Option<&Object>, Vec<&lopdf::Stream>) = match object {
            Object::Stream(s)
                if s.dict
                    .get(b"Subtype")
                    .and_then(Object::as_name)
                    .is_ok_and(|t| t == b"Form")
                    || s.dict
                        .get(b"PatternType")
                        .and_then(Object::as_i64)
                        .is_ok_and(|t| t == 1) =>
            {
                content_filters(id, s)?;
                (s.dict.get(b"Resources").ok(), vec![s])
            }
            Object::Dictionary(d)
                if d.get(b"Subtype")
                    .and_then(Object::as_name)
                    .is_ok_and(|t| t == b"Type3") =>
            {
                let procs = d
                    .get(b"CharProcs")
                    .and_then(|p| doc.dereference(p))
                    .and_then(|(_, p)| p.as_dict())
                    .map(|p| {
                        p.iter()
                            .filter_map(|(_, v)| doc.dereference(v).ok()?.1.as_stream().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                (d.get(b"Resources").ok(), procs)
            }
            _ => continue,
        };
        let Some(resources) = resources
            .and_then(|r| doc.dereference(r).ok())
            .and_then(|(_, r)| r.as_dict().ok())
        else {
            continue;
        };
        let mut edges = Vec::new();
        for stream in contents {
            let Ok(data) = stream.decompressed_content_with_limit(limits.max_stream_decoded) else {
                continue;
            };
            let Ok(content) = Content::decode(&data) else {
                continue;
            };
            for op in &content.operations {
                // `scn`/`SCN` name a pattern as their last operand.
                let (category, operand): (&[u8], _) = match op.operator.as_str() {
                    "Do" => (b"XObject", op.operands.first()),
                    "Tf" => (b"Font", op.operands.first()),
                    "scn" | "SCN" => (b"Pattern", op.operands.last()),
                    _ => continue,
                };
                let Some(name) = operand.and_then(|o| o.as_name().ok()) else {
                    continue;
                };
                let target = resources
                    .get(category)
                    .and_then(|c| doc.dereference(c))
                    .and_then(|(_, c)| c.as_dict())
                    .and_then(|c| c.get(name))
                    .and_then(Object::as_reference);
                if let Ok(target) = target {
                    edges.push(target.0);
                }
            }
        }
        invokes.insert(id, edges);
    }
    // Depth-first search for a back edge (iterative: hostile graphs can be deep).
    let mut state: HashMap<u32, u8> = HashMap::new(); // 1 on the stack, 2 done
    for &start in invokes.keys() {
        if state.contains_key(&start) {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        state.insert(start, 1);
        while let Some((node, next)) = stack.pop() {
            let edges = invokes.get(&node).map(Vec::as_slice).unwrap_or_default();
            if let Some(&target) = edges.get(next) {
                stack.push((node, next + 1));
                if !invokes.contains_key(&target) {
                    continue;
                }
                match state.get(&target) {
                    Some(1) => return Err(PdfDefect::ContentCycle(target)),
                    Some(_) => {}
                    None => {
                        state.insert(target, 1);
                        stack.push((target, 0));
                    }
                }
            } else {
                state.insert(node, 2);
            }
        }
    }
    Ok(())
}
