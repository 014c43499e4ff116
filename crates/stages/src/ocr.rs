//! OCR (cargo feature `ocr`): Tesseract 5 through `tesseract-plumbing`, for PDF pages without a
//! text layer and for exam images (every page of a multi-page TIFF).
//!
//! Tesseract only ever sees pixels this crate decoded itself — images by `image`/`tiff` under the
//! thumbnail stage's limits, PDF pages rendered by `hayro` at [`OcrSettings::dpi`] — so Leptonica
//! never parses untrusted bytes. Initialised engines are pooled (loading `por+eng` costs more
//! than a small page). The whole call runs on a helper thread under a time bound, panics caught.
//!
//! Tesseract's OpenMP threads fight a worker's own concurrency: a process that OCRs should run with
//! `OMP_THREAD_LIMIT=1` (2.2 s instead of 13.7 s a page on 2 cores). The OpenMP runtime reads it
//! when the process starts, so [`single_threaded_omp`] re-executes the process with it set.

use std::ffi::CString;
use std::io::Cursor;
use std::sync::Mutex;
use std::time::Duration;

use tesseract_plumbing::TessBaseApi;
use unicode_normalization::UnicodeNormalization;

use super::extract::ExtractedText;
use super::thumbnail::{self, ThumbnailError, ThumbnailLimits};

/// How OCR runs.
#[derive(Debug, Clone)]
pub struct OcrSettings {
    /// Tesseract languages, `+`-separated (Debian packages `tesseract-ocr-<lang>`).
    pub languages: String,
    /// Resolution PDF pages are rendered at, dots per inch.
    pub dpi: f32,
    /// Largest page handed to Tesseract, pixels (bigger renders are scaled down to fit).
    pub max_pixels: u64,
    /// Most pages recognised per document.
    pub max_pages: usize,
    /// Longest one document's OCR may take.
    pub max_time: Duration,
    /// Decoding limits for images.
    pub image_limits: ThumbnailLimits,
}

impl Default for OcrSettings {
    fn default() -> Self {
        OcrSettings {
            languages: "por+eng".into(),
            dpi: 300.0,
            // An A4 page at 300 dpi is 8.7 Mpx; 40 Mpx keeps one grey page at 40 MB.
            max_pixels: 40_000_000,
            max_pages: 100,
            max_time: Duration::from_secs(300),
            image_limits: ThumbnailLimits::default(),
        }
    }
}

/// Why OCR gave no text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OcrError {
    /// Tesseract or its language data is missing (a deployment problem, not bad input).
    #[error("OCR unavailable: {0}")]
    Unavailable(String),
    /// The image could not be decoded under the limits.
    #[error("image: {0}")]
    Image(#[from] ThumbnailError),
    /// The PDF could not be read or rendered.
    #[error("cannot render the PDF: {0}")]
    Pdf(String),
    /// Tesseract failed on a page.
    #[error("recognition failed: {0}")]
    Recognition(String),
    /// OCR did not finish in time.
    #[error("gave up after {0:?}")]
    TimedOut(Duration),
    /// A decoder or Tesseract panicked; caught here.
    #[error("OCR panicked on this input")]
    Panicked,
}

/// A page ready for Tesseract: 8-bit grey, one byte per pixel, rows packed.
struct Grey {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

/// Initialised engines not in use, by language string.
static IDLE: Mutex<Vec<(String, TessBaseApi)>> = Mutex::new(Vec::new());
/// Most idle engines kept (each holds its language models, ~100 MB for por+eng).
const MAX_IDLE: usize = 2;

/// An initialised Tesseract engine, returned to the pool by [`Engine::release`] only after a
/// clean page (an engine that was in use when something panicked is dropped instead).
struct Engine {
    languages: String,
    api: TessBaseApi,
}

impl Engine {
    fn get(languages: &str) -> Result<Engine, OcrError> {
        let pooled = {
            let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
            idle.iter()
                .position(|(l, _)| l == languages)
                .map(|i| idle.swap_remove(i).1)
        };
        if let Some(api) = pooled {
            return Ok(Engine {
                languages: languages.to_owned(),
                api,
            });
        }
        let lang = CString::new(languages).map_err(|_| OcrError::Unavailable("bad language list".into()))?;
        let mut api = TessBaseApi::create();
        api.init_2(None, Some(&lang)).map_err(|_| {
            OcrError::Unavailable(format!(
                "Tesseract cannot load the languages {languages} (Debian: tesseract-ocr-por, tesseract-ocr-eng)"
            ))
        })?;
        // Tesseract prints diagnostics on stderr; a worker's logs are JSON lines and stay so.
        let _ = api.set_variable(c"debug_file", c"/dev/null");
        Ok(Engine {
            languages: languages.to_owned(),
            api,
        })
    }

    fn read(&mut self, page: &Grey, dpi: f32) -> Result<String, OcrError> {
        let (w, h) = (
            i32::try_from(page.width).map_err(|_| OcrError::Recognition("page too wide".into()))?,
            i32::try_from(page.height).map_err(|_| OcrError::Recognition("page too tall".into()))?,
        );
        self.api
            .set_image(&page.pixels, w, h, 1, w)
            .map_err(|e| OcrError::Recognition(e.to_string()))?;
        self.api.set_source_resolution(dpi.round() as i32);
        self.api
            .recognize()
            .map_err(|_| OcrError::Recognition("Tesseract could not recognise the page".into()))?;
        let text = self
            .api
            .get_utf8_text()
            .map_err(|_| OcrError::Recognition("Tesseract returned no text".into()))?;
        let raw = text.as_ref().to_string_lossy();
        Ok(raw.nfkc().collect())
    }

    fn release(self) {
        let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((self.languages, self.api));
        }
    }
}

/// Checks that Tesseract loads `languages` (for a worker's start-up: fail there, not per event).
pub fn check(languages: &str) -> Result<(), OcrError> {
    Engine::get(languages)?.release();
    Ok(())
}

/// Runs `work` on a helper thread under the settings' time bound.
fn bounded<T: Send + 'static>(
    settings: &OcrSettings,
    work: impl FnOnce() -> Result<T, OcrError> + Send + 'static,
) -> Result<T, OcrError> {
    match super::bounded("ocr", settings.max_time, work) {
        Ok(result) => result,
        Err(super::Aborted::TimedOut) => Err(OcrError::TimedOut(settings.max_time)),
        Err(super::Aborted::Panicked) => Err(OcrError::Panicked),
        Err(super::Aborted::NoThread) => Err(OcrError::Recognition("no OCR thread".into())),
    }
}

/// The text of an image (every page of a TIFF, up to `max_pages`; the first frame of others).
pub fn ocr_image(bytes: &[u8], settings: &OcrSettings) -> Result<ExtractedText, OcrError> {
    let format = thumbnail::check_image(bytes, &settings.image_limits)?;
    let data = bytes.to_vec();
    let s = settings.clone();
    bounded(settings, move || {
        let pages = if format == image::ImageFormat::Tiff {
            tiff_pages(&data, &s)?
        } else {
            let img = thumbnail::decode_image(&data, format, &s.image_limits)?;
            vec![grey_of(img)]
        };
        let mut engine = Engine::get(&s.languages)?;
        let mut texts = Vec::with_capacity(pages.len());
        for page in pages {
            // Images carry no trustworthy resolution: 300 dpi is what scanners and Tesseract assume.
            texts.push(engine.read(&shrink(page, s.max_pixels), 300.0)?);
        }
        engine.release();
        let count = texts.len();
        Ok(ExtractedText {
            pages: texts,
            page_count: count,
            failed_pages: 0,
            ocr_pages: count,
            alternative_pages: 0,
        })
    })
}

/// Recognises the given pages (0-based) of a PDF, rendered at the settings' resolution; returns
/// `(page, text)` for each page recognised, in order.
pub fn ocr_pdf_pages(
    bytes: &[u8],
    pages: &[usize],
    settings: &OcrSettings,
) -> Result<Vec<(usize, String)>, OcrError> {
    let data = bytes.to_vec();
    let wanted: Vec<usize> = pages.iter().copied().take(settings.max_pages).collect();
    let s = settings.clone();
    bounded(settings, move || {
        use hayro::hayro_syntax::Pdf;
        let pdf = Pdf::new(data).map_err(|_| OcrError::Pdf("not a readable PDF".into()))?;
        let all = pdf.pages();
        let mut engine = Engine::get(&s.languages)?;
        let mut out = Vec::with_capacity(wanted.len());
        for index in wanted {
            let Some(page) = all.get(index) else { continue };
            let (grey, dpi) = render(page, &s)?;
            out.push((index, engine.read(&grey, dpi)?));
        }
        engine.release();
        Ok(out)
    })
}

/// A page with fewer non-blank characters than this has no usable text layer.
const MIN_TEXT_CHARS: usize = 8;

/// Fills in, by OCR, the pages of `text` (extracted from `pdf`) that have no usable text layer.
/// Returns how many pages were recognised.
pub fn fill_scanned_pages(
    pdf: &[u8],
    text: &mut ExtractedText,
    settings: &OcrSettings,
) -> Result<usize, OcrError> {
    let scanned: Vec<usize> = text
        .pages
        .iter()
        .enumerate()
        .filter(|(_, p)| p.chars().filter(|c| !c.is_whitespace()).count() < MIN_TEXT_CHARS)
        .map(|(i, _)| i)
        .collect();
    if scanned.is_empty() {
        return Ok(0);
    }
    let recognised = ocr_pdf_pages(pdf, &scanned, settings)?;
    for (index, page_text) in &recognised {
        text.pages[*index] = page_text.clone();
    }
    text.ocr_pages = recognised.len();
    Ok(recognised.len())
}

/// Renders a page on white at the settings' resolution, scaled down to `max_pixels` if needed;
/// returns the grey page and the resolution it was rendered at.
fn render(page: &hayro::hayro_syntax::page::Page<'_>, s: &OcrSettings) -> Result<(Grey, f32), OcrError> {
    let (w, h) = thumbnail::page_size(page).map_err(OcrError::Pdf)?;
    let mut scale = s.dpi / 72.0;
    let area = (w * scale) as f64 * (h * scale) as f64;
    if area > s.max_pixels as f64 {
        scale *= (s.max_pixels as f64 / area).sqrt() as f32;
    }
    // hayro sizes pixmaps in u16.
    scale = scale.min(65_535.0 / w.max(h));
    let pixmap = thumbnail::render_on_white(page, scale).map_err(OcrError::Pdf)?;
    let (pw, ph) = (pixmap.width() as u32, pixmap.height() as u32);
    let pixels = pixmap
        .data_as_u8_slice()
        .chunks_exact(4)
        .map(|p| luma(p[0], p[1], p[2]))
        .collect();
    Ok((
        Grey {
            width: pw,
            height: ph,
            pixels,
        },
        scale * 72.0,
    ))
}

fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((77 * r as u32 + 150 * g as u32 + 29 * b as u32) >> 8) as u8
}

fn grey_of(img: image::DynamicImage) -> Grey {
    let g = img.into_luma8();
    Grey {
        width: g.width(),
        height: g.height(),
        pixels: g.into_raw(),
    }
}

/// Scales a page down (box filter) until it fits `max_pixels`.
fn shrink(page: Grey, max_pixels: u64) -> Grey {
    let area = page.width as u64 * page.height as u64;
    if area <= max_pixels {
        return page;
    }
    let factor = (area as f64 / max_pixels as f64).sqrt().ceil() as u32;
    let (w, h) = ((page.width / factor).max(1), (page.height / factor).max(1));
    let mut pixels = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            let mut sum = 0u32;
            for dy in 0..factor {
                let row = ((y * factor + dy) * page.width) as usize;
                for dx in 0..factor {
                    sum += page.pixels[row + (x * factor + dx) as usize] as u32;
                }
            }
            pixels.push((sum / (factor * factor)) as u8);
        }
    }
    Grey {
        width: w,
        height: h,
        pixels,
    }
}

/// Every page of a TIFF (up to `max_pages`) as grey, under the image limits.
fn tiff_pages(bytes: &[u8], s: &OcrSettings) -> Result<Vec<Grey>, OcrError> {
    use tiff::ColorType;
    use tiff::decoder::{Decoder, DecodingResult, Limits};
    let bad = |e: tiff::TiffError| {
        OcrError::Image(ThumbnailError::Decode(super::described(
            "TIFF: the decoder refused the data",
            e,
        )))
    };
    let mut limits = Limits::default();
    limits.decoding_buffer_size = s.image_limits.max_decoded as usize;
    limits.intermediate_buffer_size = s.image_limits.max_decoded as usize;
    let mut decoder = Decoder::new(Cursor::new(bytes)).map_err(bad)?.with_limits(limits);
    let mut pages = Vec::new();
    loop {
        let (w, h) = decoder.dimensions().map_err(bad)?;
        if w == 0 || h == 0 || w > s.image_limits.max_side || h > s.image_limits.max_side {
            return Err(OcrError::Image(ThumbnailError::TooLarge(format!("{w}×{h} px"))));
        }
        let area = w as usize * h as usize;
        if super::fax::is_group3(&mut decoder) {
            let page = super::fax::decode_page(&mut decoder, bytes, &s.image_limits)?;
            pages.push(Grey {
                width: w,
                height: h,
                pixels: page.into_raw(),
            });
            if pages.len() >= s.max_pages || !decoder.more_images() {
                break;
            }
            decoder.next_image().map_err(bad)?;
            continue;
        }
        let color = decoder.colortype().map_err(bad)?;
        let pixels = match (color, decoder.read_image().map_err(bad)?) {
            (ColorType::Gray(1), DecodingResult::U8(v)) => {
                let row = w.div_ceil(8) as usize;
                let mut out = Vec::with_capacity(area);
                for r in v.chunks_exact(row).take(h as usize) {
                    out.extend(
                        (0..w as usize).map(|x| if r[x / 8] & (0x80 >> (x % 8)) != 0 { 255 } else { 0 }),
                    );
                }
                out
            }
            (ColorType::Gray(8), DecodingResult::U8(v)) => v,
            (ColorType::Gray(16), DecodingResult::U16(v)) => v.iter().map(|p| (p >> 8) as u8).collect(),
            (ColorType::RGB(8), DecodingResult::U8(v)) => {
                v.chunks_exact(3).map(|p| luma(p[0], p[1], p[2])).collect()
            }
            (ColorType::RGBA(8), DecodingResult::U8(v)) => {
                v.chunks_exact(4).map(|p| luma(p[0], p[1], p[2])).collect()
            }
            (ColorType::RGB(16), DecodingResult::U16(v)) => v
                .chunks_exact(3)
                .map(|p| luma((p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8))
                .collect(),
            // Anything else (CMYK, palette, planar …): the first page through `image`, which
            // converts every layout it reads.
            _ if pages.is_empty() => {
                let img = thumbnail::decode_image(bytes, image::ImageFormat::Tiff, &s.image_limits)?;
                return Ok(vec![grey_of(img)]);
            }
            _ => break,
        };
        if pixels.len() != area {
            return Err(OcrError::Image(ThumbnailError::Decode(
                "TIFF page is short of pixels".into(),
            )));
        }
        pages.push(Grey {
            width: w,
            height: h,
            pixels,
        });
        if pages.len() >= s.max_pages || !decoder.more_images() {
            break;
        }
        decoder.next_image().map_err(bad)?;
    }
    Ok(pages)
}

/// Makes sure this process runs Tesseract with one OpenMP thread: if `OMP_THREAD_LIMIT` is not
/// set, re-executes the current program (same arguments, same pid) with it set to 1, so this
/// returns only if it was already set (`Ok`) or the re-execution failed (`Err`). Call it first
/// thing in `main`, before any thread starts.
pub fn ensure_single_omp_thread() -> std::io::Result<()> {
    docstore_pipeline::process::reexec_with_defaults(&[("OMP_THREAD_LIMIT", "1")])
}
