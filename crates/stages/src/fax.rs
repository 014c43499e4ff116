//! TIFF pages coded for fax: CCITT T.4 (Group 3, the compression of most fax machines and fax
//! servers, one- or two-dimensional) and CCITT Modified Huffman (TIFF compression 2). The `tiff`
//! crate reads Group 4 itself but refuses these ("compression method Fax3 is unsupported"), so for
//! such a page this module takes the strips the TIFF directory names and runs each through
//! `hayro-ccitt` (the CCITT decoder of the PDF renderer the stages already use), under the same
//! size limits as every other image. T.4 uncompressed mode (T4Options bit 1) is a typed
//! `Unsupported` error.

use std::io::Cursor;

use image::GrayImage;
use tiff::decoder::Decoder;
use tiff::tags::Tag;

use super::thumbnail::{ThumbnailError, ThumbnailLimits};

const COMPRESSION_CCITT_MH: u16 = 2;
const COMPRESSION_FAX3: u16 = 3;
const T4_OPTIONS: u16 = 292;
const T4_TWO_DIMENSIONAL: u32 = 1;
const T4_UNCOMPRESSED: u32 = 2;
const T4_FILL_BITS: u32 = 4;

fn bad(e: tiff::TiffError) -> ThumbnailError {
    ThumbnailError::Decode(super::described("TIFF (fax): the decoder refused the data", e))
}

fn compression<R: std::io::Read + std::io::Seek>(decoder: &mut Decoder<R>) -> Option<u16> {
    decoder.find_tag_unsigned::<u16>(Tag::Compression).ok().flatten()
}

/// True when the decoder's current page is coded Group 3 or Modified Huffman (the pages this
/// module reads).
pub(crate) fn is_group3<R: std::io::Read + std::io::Seek>(decoder: &mut Decoder<R>) -> bool {
    matches!(
        compression(decoder),
        Some(COMPRESSION_FAX3 | COMPRESSION_CCITT_MH)
    )
}

/// True when the first page of `bytes` is a page this module reads.
pub(crate) fn first_page_is_group3(bytes: &[u8]) -> bool {
    Decoder::new(Cursor::new(bytes))
        .map(|mut d| is_group3(&mut d))
        .unwrap_or(false)
}

/// Collects decoded rows as 8-bit grey, `rows` at most.
struct Rows<'a> {
    pixels: &'a mut Vec<u8>,
    width: u32,
    left: usize,
    white: u8,
    black: u8,
}

impl hayro_ccitt::Decoder for Rows<'_> {
    fn push_row(&mut self, changes: &[u32]) {
        if self.left == 0 {
            return;
        }
        self.left -= 1;
        // Each row starts white; every change flips the colour from its position on.
        let mut colour = self.white;
        let mut from = 0u32;
        for &at in changes.iter().chain(std::iter::once(&self.width)) {
            let at = at.min(self.width);
            let run = at.saturating_sub(from) as usize;
            self.pixels.extend(std::iter::repeat_n(colour, run));
            from = from.max(at);
            colour = if colour == self.white {
                self.black
            } else {
                self.white
            };
        }
    }
}

/// Decodes the decoder's current page (Group 3 or Modified Huffman) from `bytes`, the whole file,
/// into 8-bit grey (white 255). Panics are not caught here: callers run it under `catch_unwind` or
/// `bounded`.
pub(crate) fn decode_page<R: std::io::Read + std::io::Seek>(
    decoder: &mut Decoder<R>,
    bytes: &[u8],
    limits: &ThumbnailLimits,
) -> Result<GrayImage, ThumbnailError> {
    let (w, h) = decoder.dimensions().map_err(bad)?;
    if w == 0 || h == 0 {
        return Err(ThumbnailError::Decode("zero-sized image".into()));
    }
    if w > limits.max_side || h > limits.max_side || w as u64 * h as u64 > limits.max_decoded {
        return Err(ThumbnailError::TooLarge(format!("{w}×{h} px")));
    }
    let modified_huffman = compression(decoder) == Some(COMPRESSION_CCITT_MH);
    let options = decoder
        .find_tag_unsigned::<u32>(Tag::Unknown(T4_OPTIONS))
        .map_err(bad)?
        .unwrap_or(0);
    if !modified_huffman && options & T4_UNCOMPRESSED != 0 {
        return Err(ThumbnailError::Unsupported(
            "CCITT T.4 uncompressed-mode coding".into(),
        ));
    }
    let settings = |rows: u32| hayro_ccitt::DecodeSettings {
        columns: w,
        rows,
        end_of_block: !modified_huffman,
        end_of_line: !modified_huffman,
        // Modified Huffman rows always start on a byte; T.4 rows do when fill bits are used.
        rows_are_byte_aligned: modified_huffman || options & T4_FILL_BITS != 0,
        encoding: if !modified_huffman && options & T4_TWO_DIMENSIONAL != 0 {
            hayro_ccitt::EncodingMode::Group3_2D
        } else {
            hayro_ccitt::EncodingMode::Group3_1D
        },
        // A damaged row is skipped to the next EOL and shown white, as fax software does.
        strict: false,
    };
    let lsb_first = decoder.find_tag_unsigned::<u16>(Tag::FillOrder).map_err(bad)? == Some(2);
    // A white run codes 0 bits. WhiteIsZero (0, the fax default) shows them white; BlackIsZero
    // (1) shows them black.
    let inverted = decoder
        .find_tag_unsigned::<u16>(Tag::PhotometricInterpretation)
        .map_err(bad)?
        == Some(1);
    let rows_per_strip = decoder
        .find_tag_unsigned::<u32>(Tag::RowsPerStrip)
        .map_err(bad)?
        .unwrap_or(h)
        .clamp(1, h);
    let offsets = decoder.get_tag_u64_vec(Tag::StripOffsets).map_err(bad)?;
    let counts = decoder.get_tag_u64_vec(Tag::StripByteCounts).map_err(bad)?;
    let strips = h.div_ceil(rows_per_strip) as usize;
    if offsets.len() < strips || counts.len() < strips {
        return Err(ThumbnailError::Decode("fewer strips than rows need".into()));
    }

    let (white, black) = if inverted { (0u8, 255u8) } else { (255u8, 0u8) };
    let mut pixels = Vec::with_capacity(w as usize * h as usize);
    let mut reversed = Vec::new();
    for s in 0..strips {
        let start = usize::try_from(offsets[s]).unwrap_or(usize::MAX);
        let len = usize::try_from(counts[s]).unwrap_or(usize::MAX);
        let mut strip = start
            .checked_add(len)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| ThumbnailError::Decode("strip outside the file".into()))?;
        if lsb_first {
            reversed.clear();
            reversed.extend(strip.iter().map(|b| b.reverse_bits()));
            strip = &reversed;
        }
        let rows = rows_per_strip.min(h - s as u32 * rows_per_strip);
        let before = pixels.len();
        let mut sink = Rows {
            pixels: &mut pixels,
            width: w,
            left: rows as usize,
            white,
            black,
        };
        let mut context = hayro_ccitt::DecoderContext::new(settings(rows));
        let result = hayro_ccitt::decode(strip, &mut sink, &mut context);
        let decoded = (pixels.len() - before) / w as usize;
        // The decoder reports an error at the end of data even after the last row: only rows
        // that are missing make the page unreadable.
        if decoded < rows as usize {
            return Err(ThumbnailError::Decode(match result {
                Err(e) => format!("fax strip {s}: {e} after {decoded} of {rows} rows"),
                Ok(_) => format!("fax strip {s}: {decoded} of {rows} rows"),
            }));
        }
    }
    if pixels.len() != w as usize * h as usize {
        return Err(ThumbnailError::Decode("fax page of the wrong size".into()));
    }
    GrayImage::from_raw(w, h, pixels).ok_or_else(|| ThumbnailError::Decode("fax page size".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thumbnail::{self, ThumbnailError};
    use image::ImageFormat;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fax/").to_owned() + name).unwrap()
    }

    fn decode(name: &str, limits: &ThumbnailLimits) -> Result<GrayImage, ThumbnailError> {
        thumbnail::decode_image(&fixture(name), ImageFormat::Tiff, limits).map(|i| i.to_luma8())
    }

    /// The same page coded by libtiff as Group 4 (read by the tiff crate) and as every Group 3
    /// variant and as Modified Huffman (read here): the same pixels, bit for bit.
    #[test]
    fn group3_pages_decode_to_the_group4_pixels() {
        let limits = ThumbnailLimits::default();
        assert!(!first_page_is_group3(&fixture("fax-g4.tif")));
        let reference = decode("fax-g4.tif", &limits).unwrap();
        assert_eq!(reference.dimensions(), (1728, 600));
        let black = reference.pixels().filter(|p| p.0[0] == 0).count();
        assert!(
            black > 10_000 && black < 1728 * 600 / 4,
            "text drawn: {black} black px"
        );
        for name in [
            "fax-g3-1d.tif",
            "fax-g3-1d-fill.tif",
            "fax-g3-1d-lsb.tif",
            "fax-g3-1d-strips.tif",
            "fax-g3-1d-2p.tif",
            "fax-g3-2d.tif",
            "fax-mh.tif",
        ] {
            assert!(first_page_is_group3(&fixture(name)), "{name}");
            let page = decode(name, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(page == reference, "{name}: pixels differ from the Group 4 coding");
        }
    }

    #[test]
    fn fax_pages_are_held_to_the_image_limits() {
        let limits = ThumbnailLimits {
            max_side: 1000,
            ..ThumbnailLimits::default()
        };
        let err = decode("fax-g3-1d.tif", &limits).unwrap_err();
        assert!(matches!(err, ThumbnailError::TooLarge(_)), "{err}");
    }

    /// Cut short, or with bytes of the coded rows changed: a typed error or some page, never a
    /// panic past the stage's boundary and never more than a thumbnail.
    #[test]
    fn damaged_fax_data_fails_typed() {
        let good = fixture("fax-g3-1d-strips.tif");
        let limits = ThumbnailLimits::default();
        let cut = &good[..good.len() * 2 / 3];
        assert!(thumbnail::thumbnail_image(cut, &limits).is_err());
        for at in (200..good.len()).step_by(97) {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            match thumbnail::thumbnail_image(&bad, &limits) {
                // A changed directory byte may change the page size itself.
                Ok(t) => assert!(t.width <= 256 && t.height <= 256, "byte {at}"),
                Err(ThumbnailError::DecoderPanicked(d)) => panic!("byte {at}: {d} panicked"),
                Err(_) => {}
            }
        }
    }
}
