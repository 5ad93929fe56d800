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

/// Lays out images [N, C, H, W] with values in [−1, 1] (C = 1 gray or 3 RGB) as a grid of `cols` columns,
/// each pixel drawn as a `scale`×`scale` block, with a 2-pixel white border between images.
#[track_caller]
pub fn image_grid(images: &Tensor, cols: usize, scale: usize) -> Canvas {
    let s = images.shape();
    assert!(s.len() == 4 && (s[1] == 1 || s[1] == 3), "image_grid: images {s:?} must be [N, 1 or 3, H, W]");
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let gap = 2;
    let mut canvas = Canvas::new(cols * (w * scale + gap) + gap, rows * (h * scale + gap) + gap, [255, 255, 255]);
    let to_byte = |v: f32| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
    for i in 0..n {
        let (x0, y0) = (gap + (i % cols) * (w * scale + gap), gap + (i / cols) * (h * scale + gap));
        for y in 0..h {
            for x in 0..w {
                let px = |ch: usize| to_byte(images.data()[((i * c + ch) * h + y) * w + x]);
                let color = if c == 1 { [px(0); 3] } else { [px(0), px(1), px(2)] };
                for dy in 0..scale {
                    for dx in 0..scale {
                        canvas.put(x0 + x * scale + dx, y0 + y * scale + dy, color);
                    }
                }
            }
        }
    }
    canvas
}

#[cfg(test)]
mod grid_tests {
    use super::*;

    #[test]
    fn grid_places_images_and_maps_values_to_bytes() {
        let mut t = Tensor::full(&[3, 1, 2, 2], -1.0);
        t.set(&[2, 0, 1, 1], 1.0);
        let g = image_grid(&t, 2, 1);
        assert_eq!((g.width, g.height), (2 * (2 + 2) + 2, 2 * (2 + 2) + 2));
        // image 2 sits in row 1, column 0: its pixel (1, 1) is at (2 + 1, 2 + 4 + 1).
        let at = |x: usize, y: usize| g.rgb[3 * (y * g.width + x)];
        assert_eq!(at(3, 7), 255);
        assert_eq!(at(2, 6), 0);
    }
}
