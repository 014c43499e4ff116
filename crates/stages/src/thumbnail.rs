//! Thumbnails of exam images and PDFs.
//!
//! Images: decode under limits, honour EXIF orientation, convert 16-bit, grey, palette and CMYK
//! sources to 8-bit RGB(A), resize to fit [`EDGE`] px with a Lanczos3 convolution
//! (`fast_image_resize`), encode PNG. PDFs: page 1 rendered by `hayro` (pure Rust) straight at the
//! scale that fits [`EDGE`], on white, with a time bound.
//!
//! Limits are checked from the header before any pixel is decoded (`image` enforces its
//! allocation limit in `ImageReader::decode` but not on the `into_decoder` path that orientation
//! needs, so the total size is checked here), and a panic inside a decoder is caught and reported
//! as [`ThumbnailError::DecoderPanicked`].

use std::io::Cursor;

use fast_image_resize as fr;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::described;
use super::preflight::{PdfDefect, PreflightLimits, preflight};

/// Longest edge of a thumbnail, px.
pub const EDGE: u32 = 256;

/// Bounds on what a thumbnail may cost.
#[derive(Debug, Clone, Copy)]
pub struct ThumbnailLimits {
    /// Largest input, bytes.
    pub max_input: usize,
    /// Largest width or height, px.
    pub max_side: u32,
    /// Largest decoded image, bytes (width × height × bytes per pixel).
    pub max_decoded: u64,
    /// Longest a PDF page may take to render.
    pub max_render_time: std::time::Duration,
}

impl Default for ThumbnailLimits {
    fn default() -> Self {
        ThumbnailLimits {
            max_input: 256 << 20,
            max_side: 30_000,
            // A 12-megapixel 16-bit RGBA photo is 96 MiB; 320 MiB keeps a worker under 512 MiB.
            max_decoded: 320 << 20,
            max_render_time: std::time::Duration::from_secs(4),
        }
    }
}

impl ThumbnailLimits {
    /// The structural checks a PDF passes first, with this stage's image limits.
    pub fn preflight(&self) -> PreflightLimits {
        PreflightLimits {
            max_image_side: self.max_side,
            max_image_decoded: self.max_decoded,
            ..PreflightLimits::default()
        }
    }
}

/// Why no thumbnail was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThumbnailError {
    /// Not an image format this stage reads.
    #[error("unsupported format: {0}")]
    Unsupported(String),
    /// The input or the decoded image exceeds the limits.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The bytes are not a valid image of their format.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// The PDF is encrypted (a password is needed to read it).
    #[error("encrypted PDF")]
    Encrypted,
    /// Rendering did not finish within the time bound.
    #[error("gave up after {0:?}")]
    TimedOut(std::time::Duration),
    /// A decoder panicked; caught at this boundary.
    #[error("the {0} decoder panicked on this input")]
    DecoderPanicked(String),
    /// Refused by the structural check (damaged or hostile PDF; see [`super::preflight`]).
    #[error(transparent)]
    Defect(PdfDefect),
}

impl From<PdfDefect> for ThumbnailError {
    fn from(defect: PdfDefect) -> Self {
        match defect {
            PdfDefect::Encrypted => ThumbnailError::Encrypted,
            other => ThumbnailError::Defect(other),
        }
    }
}

/// A thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// PNG bytes.
    pub png: Vec<u8>,
    /// Thumbnail width, px.
    pub width: u32,
    /// Thumbnail height, px.
    pub height: u32,
    /// Source width after orientation, px.
    pub source_width: u32,
    /// Source height after orientation, px.
    pub source_height: u32,
}

pub use crate::image_format;

/// A thumbnail of an image (CPU-bound: call from a blocking thread).
pub fn thumbnail_image(bytes: &[u8], limits: &ThumbnailLimits) -> Result<Thumbnail, ThumbnailError> {
    let format = check_image(bytes, limits)?;
    let name = format!("{format:?}");
    // Third-party decoders are not trusted not to panic on hostile input.
    match std::panic::catch_unwind(|| decode_and_resize(bytes, format, limits)) {
        Ok(result) => result,
        Err(_) => Err(ThumbnailError::DecoderPanicked(name)),
    }
}

/// A thumbnail of page 1 of a PDF (blocking; the render runs on a helper thread so that the time
/// bound holds even if the renderer loops: past it, the call returns and the thread is abandoned).
pub fn thumbnail_pdf(bytes: &[u8], limits: &ThumbnailLimits) -> Result<Thumbnail, ThumbnailError> {
    if bytes.len() > limits.max_input {
        return Err(ThumbnailError::TooLarge(format!("{} bytes", bytes.len())));
    }
    if !bytes.starts_with(b"%PDF-") {
        return Err(ThumbnailError::Unsupported("not a PDF".into()));
    }
    let data = bytes.to_vec();
    let checks = limits.preflight();
    match super::bounded("pdf-thumbnail", limits.max_render_time, move || {
        preflight(&data, &checks)?;
        render_first_page(data)
    }) {
        Ok(result) => result,
        Err(super::Aborted::TimedOut) => Err(ThumbnailError::TimedOut(limits.max_render_time)),
        Err(super::Aborted::Panicked) => Err(ThumbnailError::DecoderPanicked("PDF".into())),
        Err(super::Aborted::NoThread) => Err(ThumbnailError::Decode("no render thread".into())),
    }
}

/// A page's size in points, if sane (finite, 1 to 200,000 pt a side).
pub(crate) fn page_size(page: &hayro::hayro_syntax::page::Page<'_>) -> Result<(f32, f32), String> {
    let (w, h) = page.render_dimensions();
    if w.is_finite() && h.is_finite() && w >= 1.0 && h >= 1.0 && w <= 200_000.0 && h <= 200_000.0 {
        Ok((w, h))
    } else {
        Err(format!("page size {w}×{h} pt"))
    }
}

/// Renders a page with `hayro` at `scale` on an opaque white background (so its premultiplied
/// RGBA is plain RGBA); an empty result is an error.
pub(crate) fn render_on_white(
    page: &hayro::hayro_syntax::page::Page<'_>,
    scale: f32,
) -> Result<hayro::vello_cpu::Pixmap, String> {
    let pixmap = hayro::render(
        page,
        &hayro::RenderCache::new(),
        &hayro::hayro_interpret::InterpreterSettings::default(),
        &hayro::RenderSettings::default(),
        &hayro::PixmapSettings {
            x_scale: scale,
            y_scale: scale,
            bg_color: hayro::vello_cpu::color::palette::css::WHITE,
        },
    );
    if pixmap.width() == 0 || pixmap.height() == 0 {
        return Err("page rendered empty".into());
    }
    Ok(pixmap)
}

fn render_first_page(data: Vec<u8>) -> Result<Thumbnail, ThumbnailError> {
    use hayro::hayro_syntax::{LoadPdfError, Pdf};
    let pdf = Pdf::new(data).map_err(|e| match e {
        LoadPdfError::Decryption(_) => ThumbnailError::Encrypted,
        _ => ThumbnailError::Decode("not a readable PDF".into()),
    })?;
    let page = pdf
        .pages()
        .first()
        .ok_or_else(|| ThumbnailError::Decode("the PDF has no pages".into()))?;
    let (w, h) = page_size(page).map_err(ThumbnailError::Decode)?;
    // A hair over the exact ratio, so the long side truncates to EDGE, not EDGE - 1.
    let scale = (EDGE as f32 + 0.5) / w.max(h);
    let pixmap = render_on_white(page, scale).map_err(ThumbnailError::Decode)?;
    let (tw, th) = (pixmap.width() as u32, pixmap.height() as u32);
    let png = pixmap
        .into_png()
        .map_err(|e| ThumbnailError::Decode(format!("encode: {e}")))?;
    Ok(Thumbnail {
        png,
        width: tw,
        height: th,
        source_width: w.round() as u32,
        source_height: h.round() as u32,
    })
}

/// A JPEG ends its (last) scan with an EOI marker (`FF D9`); trailing bytes after it are allowed.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(sos) => bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

fn decode_err(e: image::ImageError) -> ThumbnailError {
    match e {
        image::ImageError::Limits(l) => ThumbnailError::TooLarge(l.to_string()),
        image::ImageError::Unsupported(u) => ThumbnailError::Unsupported(u.to_string()),
        other => ThumbnailError::Decode(super::described("the image decoder refused the data", other)),
    }
}

/// Decodes an image under `limits` (checked from the header before any pixel is decoded) and
/// applies its EXIF orientation. Panics are not caught here: callers run it under `catch_unwind`.
pub(crate) fn decode_image(
    bytes: &[u8],
    format: ImageFormat,
    limits: &ThumbnailLimits,
) -> Result<DynamicImage, ThumbnailError> {
    if format == ImageFormat::Tiff && super::fax::first_page_is_group3(bytes) {
        let mut decoder = tiff::decoder::Decoder::new(Cursor::new(bytes))
            .map_err(|e| ThumbnailError::Decode(super::described("TIFF: the decoder refused the data", e)))?;
        return super::fax::decode_page(&mut decoder, bytes, limits).map(DynamicImage::ImageLuma8);
    }
    let mut image_limits = Limits::default();
    image_limits.max_image_width = Some(limits.max_side);
    image_limits.max_image_height = Some(limits.max_side);
    image_limits.max_alloc = Some(limits.max_decoded);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(image_limits.clone());
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(ThumbnailError::Decode("zero-sized image".into()));
    }
    if w > limits.max_side || h > limits.max_side || decoder.total_bytes() > limits.max_decoded {
        return Err(ThumbnailError::TooLarge(format!("{w}×{h} px")));
    }
    decoder.set_limits(image_limits).map_err(decode_err)?;
    let orientation = decoder.orientation().map_err(decode_err)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Checks what [`thumbnail_image`] checks before decoding: size, a format this stage reads, and
/// (for JPEG) that the scan is complete.
pub(crate) fn check_image(bytes: &[u8], limits: &ThumbnailLimits) -> Result<ImageFormat, ThumbnailError> {
    if bytes.len() > limits.max_input {
        return Err(ThumbnailError::TooLarge(format!("{} bytes", bytes.len())));
    }
    let format = image_format(bytes)
        .ok_or_else(|| ThumbnailError::Unsupported("not a JPEG, PNG, TIFF, WebP or GIF".into()))?;
    if format == ImageFormat::Png {
        png_text_within_limit(bytes)?;
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        // The decoder would fill the missing rows with grey; a truncated upload is bad input.
        return Err(ThumbnailError::Decode(
            "truncated JPEG: no end-of-image marker after the scan".into(),
        ));
    }
    Ok(format)
}

/// Largest decompressed PNG text chunk (`zTXt`, compressed `iTXt`), as Pillow's limit: nobody
/// shows this metadata, but a chunk that inflates past it is a bomb by intent.
const MAX_PNG_TEXT: usize = 1 << 20;

/// Walks a PNG's chunks and inflates each compressed text chunk under [`MAX_PNG_TEXT`]. The image
/// decoders skip these chunks, so a bomb there costs nothing today; it is refused so that no
/// later reader of the metadata inflates it. Malformed chunks are left to the decoder.
fn png_text_within_limit(bytes: &[u8]) -> Result<(), ThumbnailError> {
    let mut at = 8; // past the signature
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = &header[4..8];
        let Some(data) = at.checked_add(8 + len).and_then(|end| bytes.get(at + 8..end)) else {
            return Ok(());
        };
        let nul = |from: usize| data.get(from..)?.iter().position(|b| *b == 0).map(|i| from + i);
        // zTXt: keyword NUL method data. iTXt: keyword NUL flag method language NUL
        // translated-keyword NUL text, compressed when flag is 1.
        let compressed = match kind {
            b"zTXt" => nul(0).and_then(|k| data.get(k + 2..)),
            b"iTXt" => nul(0).filter(|k| data.get(k + 1) == Some(&1)).and_then(|k| {
                let lang = nul(k + 3)?;
                let translated = nul(lang + 1)?;
                data.get(translated + 1..)
            }),
            b"IEND" => return Ok(()),
            _ => None,
        };
        if let Some(c) = compressed
            && let Err(e) = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(c, MAX_PNG_TEXT)
            && e.status == miniz_oxide::inflate::TINFLStatus::HasMoreOutput
        {
            return Err(ThumbnailError::TooLarge(format!(
                "PNG text chunk inflates past {MAX_PNG_TEXT} bytes"
            )));
        }
        at += 12 + len; // length, type, data, CRC
    }
    Ok(())
}

/// A decoded image and the source's full size after orientation.
type Decoded = (DynamicImage, (u32, u32));

/// Decodes an 8-bit grey or RGB JPEG at the smallest IDCT scale (1/8, 1/4, 1/2 or 1) that still
/// leaves at least `2 × edge` px on the long side, so the resize has pixels to filter: a
/// 12-megapixel photo is decoded at 1/4 scale, 16× fewer pixels (vipsthumbnail's
/// shrink-on-load). `None` for JPEGs this path does not take (CMYK, 12/16-bit, lossless): the
/// general decoder reads those. Returns the image and the source's full size after orientation.
fn decode_jpeg_scaled(
    bytes: &[u8],
    edge: u32,
    limits: &ThumbnailLimits,
) -> Result<Option<Decoded>, ThumbnailError> {
    use jpeg_decoder::{CodingProcess, PixelFormat};
    let bad =
        |e: jpeg_decoder::Error| ThumbnailError::Decode(described("JPEG: the decoder refused the data", e));
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(usize::try_from(limits.max_decoded).unwrap_or(usize::MAX));
    decoder.read_info().map_err(bad)?;
    let Some(info) = decoder.info() else {
        return Ok(None);
    };
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    if w == 0 || h == 0 {
        return Err(ThumbnailError::Decode("zero-sized image".into()));
    }
    if w > limits.max_side || h > limits.max_side {
        return Err(ThumbnailError::TooLarge(format!("{w}×{h} px")));
    }
    let plain = matches!(info.pixel_format, PixelFormat::L8 | PixelFormat::RGB24)
        && info.coding_process != CodingProcess::Lossless;
    if !plain {
        return Ok(None);
    }
    let want = (2 * edge).min(u32::from(u16::MAX)) as u16;
    let (sw, sh) = decoder.scale(want, want).map_err(bad)?;
    let pixels = decoder.decode().map_err(bad)?;
    let (sw, sh) = (u32::from(sw), u32::from(sh));
    let mut img = match info.pixel_format {
        PixelFormat::L8 => image::GrayImage::from_raw(sw, sh, pixels).map(DynamicImage::ImageLuma8),
        _ => image::RgbImage::from_raw(sw, sh, pixels).map(DynamicImage::ImageRgb8),
    }
    .ok_or_else(|| ThumbnailError::Decode("JPEG: short pixel buffer".into()))?;
    let mut full = (w, h);
    if let Some(o) = decoder
        .exif_data()
        .and_then(image::metadata::Orientation::from_exif_chunk)
    {
        img.apply_orientation(o);
        if img.width() != sw {
            full = (h, w);
        }
    }
    Ok(Some((img, full)))
}

fn decode_and_resize(
    bytes: &[u8],
    format: ImageFormat,
    limits: &ThumbnailLimits,
) -> Result<Thumbnail, ThumbnailError> {
    let scaled = if format == ImageFormat::Jpeg {
        decode_jpeg_scaled(bytes, EDGE, limits)?
    } else {
        None
    };
    let (img, source) = match scaled {
        Some(scaled) => scaled,
        None => {
            let img = decode_image(bytes, format, limits)?;
            let size = (img.width(), img.height());
            (img, size)
        }
    };
    let (sw, sh) = (img.width(), img.height());
    let (tw, th) = fit(sw, sh, EDGE);
    let (pixels, pixel_type, color) = if img.color().has_alpha() {
        (
            img.into_rgba8().into_raw(),
            fr::PixelType::U8x4,
            image::ExtendedColorType::Rgba8,
        )
    } else {
        (
            img.into_rgb8().into_raw(),
            fr::PixelType::U8x3,
            image::ExtendedColorType::Rgb8,
        )
    };
    let src = fr::images::Image::from_vec_u8(sw, sh, pixels, pixel_type)
        .map_err(|e| ThumbnailError::Decode(format!("resize source: {e}")))?;
    let mut dst = fr::images::Image::new(tw, th, pixel_type);
    fr::Resizer::new()
        .resize(
            &src,
            &mut dst,
            &fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3)),
        )
        .map_err(|e| ThumbnailError::Decode(format!("resize: {e}")))?;
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        dst.buffer(),
        tw,
        th,
        color,
    )
    .map_err(|e| ThumbnailError::Decode(format!("encode: {e}")))?;
    Ok(Thumbnail {
        png,
        width: tw,
        height: th,
        source_width: source.0,
        source_height: source.1,
    })
}

/// Fits `w × h` within `edge × edge`, keeping the aspect ratio; never upscales; at least 1 px.
fn fit(w: u32, h: u32, edge: u32) -> (u32, u32) {
    if w <= edge && h <= edge {
        return (w, h);
    }
    if w >= h {
        (edge, ((h as u64 * edge as u64) / w as u64).max(1) as u32)
    } else {
        (((w as u64 * edge as u64) / h as u64).max(1) as u32, edge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect_and_never_upscales() {
        assert_eq!(fit(4032, 3024, 256), (256, 192));
        assert_eq!(fit(3024, 4032, 256), (192, 256));
        assert_eq!(fit(100, 50, 256), (100, 50));
        assert_eq!(fit(100_000, 1, 256), (256, 1));
    }

    /// A 1×1 PNG with a `zTXt` chunk holding `text_len` zero bytes, compressed, after `IHDR`.
    fn png_with_ztxt(text_len: usize) -> Vec<u8> {
        let mut png = Vec::new();
        image::RgbImage::new(1, 1)
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let mut data = b"Comment\0\0".to_vec();
        data.extend(miniz_oxide::deflate::compress_to_vec_zlib(
            &vec![0u8; text_len],
            9,
        ));
        let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
        chunk.extend(b"zTXt");
        chunk.extend(&data);
        chunk.extend([0; 4]); // CRC: not checked by the walk
        png.splice(33..33, chunk);
        png
    }

    #[test]
    fn compressed_text_chunks_are_inflated_under_a_limit() {
        assert!(png_text_within_limit(&png_with_ztxt(1 << 10)).is_ok());
        let bomb = png_with_ztxt(4 << 20);
        assert!(bomb.len() < 16 << 10, "{} bytes", bomb.len());
        assert!(matches!(
            png_text_within_limit(&bomb),
            Err(ThumbnailError::TooLarge(_))
        ));
        // A truncated file: the walk stops, the decoder judges.
        assert!(png_text_within_limit(&bomb[..40]).is_ok());
    }
}
