//! Images out: `[0, 1]` floats → RGB bytes → PNG, as diffusers' `numpy_to_pil`
//! (`(x * 255).round()`). Files are written by shoal-engine, not here.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// One RGB image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major RGB bytes.
    pub data: Vec<u8>,
}

/// Converts `(b, 3, h, w)` images in [0, 1] to RGB bytes.
pub fn to_rgb8(images: &Tensor) -> Result<Vec<Rgb8>> {
    let (b, c, h, w) = images.dims4()?;
    if c != 3 {
        return Err(Error::invalid(
            "images",
            format!("{:?}", images.dims()),
            "expected 3 channels",
        ));
    }
    let bytes = (images.to_dtype(DType::F32)? * 255.0)?
        .round()?
        .clamp(0f32, 255f32)?
        .permute((0, 2, 3, 1))?
        .to_dtype(DType::U8)?
        .flatten_all()?
        .to_vec1::<u8>()?;
    Ok(bytes
        .chunks(h * w * 3)
        .take(b)
        .map(|d| Rgb8 {
            width: w,
            height: h,
            data: d.to_vec(),
        })
        .collect())
}

/// Encodes an image as PNG bytes.
pub fn png_bytes(img: &Rgb8) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width as u32, img.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| Error::io("encoding PNG", std::io::Error::other(e)))?;
        w.write_image_data(&img.data)
            .map_err(|e| Error::io("encoding PNG", std::io::Error::other(e)))?;
    }
    Ok(out)
}
