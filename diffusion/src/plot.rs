//! Pictures: an RGB canvas, scatter plots of 2-D points, and PNG output (through the `png` crate).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use autograd::Tensor;

use crate::error::{Error, Result};

/// An RGB image, row-major, 3 bytes per pixel.
#[derive(Clone, Debug)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: [u8; 3]) -> Canvas {
        Canvas { width, height, rgb: background.repeat(width * height) }
    }

    pub fn put(&mut self, x: usize, y: usize, color: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = 3 * (y * self.width + x);
            self.rgb[i..i + 3].copy_from_slice(&color);
        }
    }

    /// Draws `points` [n, 2] as small dots; `bounds` = (min, max) of both axes in data units, y pointing up.
    pub fn scatter(&mut self, points: &Tensor, bounds: (f32, f32), color: [u8; 3]) {
        let (lo, hi) = bounds;
        for p in points.data().chunks(2) {
            let px = ((p[0] - lo) / (hi - lo) * self.width as f32) as isize;
            let py = ((hi - p[1]) / (hi - lo) * self.height as f32) as isize;
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let (x, y) = (px + dx, py + dy);
                if x >= 0 && y >= 0 {
                    self.put(x as usize, y as usize, color);
                }
            }
        }
    }

    /// Places `other` to the right of this canvas, with a `gap`-pixel separator.
    pub fn beside(&self, other: &Canvas, gap: usize, gap_color: [u8; 3]) -> Canvas {
        let height = self.height.max(other.height);
        let mut out = Canvas::new(self.width + gap + other.width, height, gap_color);
        for (src, x0) in [(self, 0), (other, self.width + gap)] {
            for y in 0..src.height {
                let from = 3 * y * src.width;
                let to = 3 * (y * out.width + x0);
                out.rgb[to..to + 3 * src.width].copy_from_slice(&src.rgb[from..from + 3 * src.width]);
            }
        }
        out
    }

    /// Writes the canvas as an 8-bit RGB PNG.
    pub fn write_png(&self, path: impl AsRef<Path>) -> Result<()> {
        write_png(path.as_ref(), self.width, self.height, png::ColorType::Rgb, &self.rgb)
    }
}

/// Writes `bytes` (row-major, 8 bits per channel) as a PNG file, creating its directory if needed.
pub fn write_png(path: &Path, width: usize, height: usize, color: png::ColorType, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let to_io = |e: png::EncodingError| Error::io(path, std::io::Error::other(e));
    let mut writer = encoder.write_header().map_err(to_io)?;
    writer.write_image_data(bytes).map_err(to_io)?;
    writer.finish().map_err(to_io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip() {
        let dir = std::env::temp_dir().join(format!("plot-test-{}", std::process::id()));
        let path = dir.join("a.png");
        let mut c = Canvas::new(4, 3, [255, 255, 255]);
        c.put(1, 2, [10, 20, 30]);
        let wide = c.beside(&c, 1, [0, 0, 0]);
        wide.write_png(&path).unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (9, 3));
        let i = 3 * (2 * 9 + 6); // pixel (1, 2) of the right copy
        assert_eq!(&buf[i..i + 3], &[10, 20, 30]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn write_png_names_the_file_on_error() {
        let err = Canvas::new(1, 1, [0; 3]).write_png("/proc/no-such-dir/x.png").unwrap_err().to_string();
        assert!(err.starts_with("/proc/no-such-dir"), "{err}");
    }
}
