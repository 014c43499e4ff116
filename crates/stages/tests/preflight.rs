//! The structural check every PDF passes before a stage: each hostile corpus PDF refused with the
//! defect listed for it, every other corpus PDF accepted (one with stale cross-reference entries
//! rebuilt), and hand-built files for the cases where a check could be too eager.

mod common;

use common::{corpus, hostile_pdf_verdict, pdfs, variant};
use docstore_stages::preflight::{PdfDefect, PreflightLimits, preflight};
use lopdf::{Document, Object, Stream, dictionary};

#[test]
fn corpus_pdfs_get_the_listed_verdict() {
    let dir = corpus();
    let limits = PreflightLimits::default();
    let mut problems = Vec::new();
    for path in pdfs(&dir, true) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let got = match preflight(&std::fs::read(&path).unwrap(), &limits) {
            Ok(_) => "accepted".to_owned(),
            Err(d) => variant(&d),
        };
        if got != hostile_pdf_verdict(&name) {
            problems.push(format!("{name}: {got}, expected {}", hostile_pdf_verdict(&name)));
        }
    }
    for path in pdfs(&dir, false) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let result = preflight(&std::fs::read(&path).unwrap(), &limits);
        let needs_password = matches!(
            name.as_str(),
            "encrypted-aes256-r6-userpw.pdf" | "encrypted-rc4-40-userpw.pdf"
        );
        match result {
            Err(PdfDefect::Encrypted) if needs_password => {}
            Ok(_) if !needs_password => {}
            other => problems.push(format!("{name}: {:?}", other.map(|_| "accepted"))),
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Its table puts object 3 (page 1) at the wrong offset; the rebuilt document has both pages.
#[test]
fn stale_cross_reference_entries_are_rebuilt_not_refused() {
    let dir = corpus();
    let bytes = std::fs::read(dir.join("scanned-2p-a4-jpeg-form.pdf")).unwrap();
    assert!(Document::load_mem(&bytes).unwrap().get_object((3, 0)).is_err());
    let doc = preflight(&bytes, &PreflightLimits::default()).unwrap();
    assert_eq!(doc.get_pages().len(), 2);
    assert!(doc.get_dictionary((3, 0)).is_ok());
}

/// One page whose content is `content`, with `form` (content `form_content`) as XObject /Fm0 in a
/// resource dictionary the page and the form share (as some generators write it).
fn pdf_with_form(content: &[u8], form_content: &[u8]) -> Vec<u8> {
    let mut doc = Document::with_version("1.7");
    let pages = doc.new_object_id();
    let form = doc.new_object_id();
    let resources = doc.add_object(dictionary! { "XObject" => dictionary! { "Fm0" => form } });
    doc.objects.insert(
        form,
        Object::Stream(Stream::new(
            dictionary! { "Type" => "XObject", "Subtype" => "Form", "BBox" => vec![0.into(), 0.into(), 10.into(), 10.into()], "Resources" => resources },
            form_content.to_vec(),
        )),
    );
    let contents = doc.add_object(Stream::new(dictionary! {}, content.to_vec()));
    let page = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages, "Contents" => contents, "Resources" => resources,
        "MediaBox" => vec![0.into(), 0.into(), 100.into(), 100.into()],
    });
    doc.objects.insert(
        pages,
        Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => vec![page.into()], "Count" => 1 }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages });
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

#[test]
fn a_form_listed_in_its_own_resources_is_fine_until_it_invokes_itself() {
    let limits = PreflightLimits::default();
    let listed = pdf_with_form(b"q /Fm0 Do Q", b"0 0 10 10 re f");
    assert!(preflight(&listed, &limits).is_ok());
    let recursive = pdf_with_form(b"q /Fm0 Do Q", b"q /Fm0 Do Q");
    assert!(matches!(
        preflight(&recursive, &limits),
        Err(PdfDefect::ContentCycle(_))
    ));
}

#[test]
fn content_that_inflates_past_the_limit_is_a_bomb() {
    let limits = PreflightLimits {
        max_stream_decoded: 1 << 20,
        ..PreflightLimits::default()
    };
    let mut doc = Document::load_mem(&pdf_with_form(b"q Q", b"")).unwrap();
    let contents = doc.get_pages()[&1];
    let contents = doc
        .get_dictionary(contents)
        .unwrap()
        .get(b"Contents")
        .unwrap()
        .as_reference()
        .unwrap();
    let mut bomb = Stream::new(dictionary! {}, vec![b' '; 2 << 20]);
    bomb.compress().unwrap();
    assert!(bomb.content.len() < 64 << 10, "{} bytes", bomb.content.len());
    doc.objects.insert(contents, Object::Stream(bomb));
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    assert!(matches!(
        preflight(&out, &limits),
        Err(PdfDefect::DecompressionBomb { limit, .. }) if limit == 1 << 20
    ));
    assert!(preflight(&out, &PreflightLimits::default()).is_ok());
}

#[test]
fn an_image_bigger_than_the_limits_is_refused_by_its_declared_size() {
    let mut doc = Document::load_mem(&pdf_with_form(b"q Q", b"")).unwrap();
    doc.add_object(Stream::new(
        dictionary! { "Type" => "XObject", "Subtype" => "Image", "Width" => 20_000, "Height" => 20_000,
        "BitsPerComponent" => 8, "ColorSpace" => "DeviceRGB", "Filter" => "DCTDecode" },
        vec![0xff, 0xd8],
    ));
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    assert!(matches!(
        preflight(&out, &PreflightLimits::default()),
        Err(PdfDefect::ImageTooLarge {
            width: 20_000,
            height: 20_000,
            ..
        })
    ));
}
