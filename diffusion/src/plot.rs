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

impl Canvas {
    /// A straight line from (x0, y0) to (x1, y1), `width` pixels thick (Bresenham's algorithm).
    pub fn line(&mut self, (x0, y0): (isize, isize), (x1, y1): (isize, isize), width: usize, color: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.dot((x, y), width / 2, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// A filled square of half-width `r` centred on (x, y).
    pub fn dot(&mut self, (x, y): (isize, isize), r: usize, color: [u8; 3]) {
        let r = r as isize;
        for py in y - r..=y + r {
            for px in x - r..=x + r {
                if px >= 0 && py >= 0 {
                    self.put(px as usize, py as usize, color);
                }
            }
        }
    }

    /// Digits, '.', '-' and spaces in a 3×5 pixel font drawn `scale` times larger, top-left at (x, y). Other
    /// characters are skipped (a space's width).
    pub fn text(&mut self, (x, y): (usize, usize), text: &str, scale: usize, color: [u8; 3]) {
        // Each glyph: five rows of three bits, the top row first, the left pixel the high bit.
        const GLYPHS: [(char, [u8; 5]); 12] = [
            ('0', [7, 5, 5, 5, 7]),
            ('1', [2, 6, 2, 2, 7]),
            ('2', [7, 1, 7, 4, 7]),
            ('3', [7, 1, 7, 1, 7]),
            ('4', [5, 5, 7, 1, 1]),
            ('5', [7, 4, 7, 1, 7]),
            ('6', [7, 4, 7, 5, 7]),
            ('7', [7, 1, 1, 1, 1]),
            ('8', [7, 5, 7, 5, 7]),
            ('9', [7, 5, 7, 1, 7]),
            ('.', [0, 0, 0, 0, 2]),
            ('-', [0, 0, 7, 0, 0]),
        ];
        for (i, ch) in text.chars().enumerate() {
            let Some((_, rows)) = GLYPHS.iter().find(|(c, _)| *c == ch) else { continue };
            let x0 = x + i * 4 * scale;
            for (r, bits) in rows.iter().enumerate() {
                for b in 0..3 {
                    if bits & (4 >> b) != 0 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                self.put(x0 + b * scale + dx, y + r * scale + dy, color);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One series of a [`line_chart`]: points (x, y), drawn as dots joined by lines.
pub struct Series {
    pub points: Vec<(f64, f64)>,
    pub color: [u8; 3],
}

/// A chart of `series` over a log₁₀ x axis with ticks at `x_ticks` and a linear y axis from 0 to `y_max`
/// with 5 labelled ticks; `levels` are horizontal reference lines (y, color), drawn dashed.
pub fn line_chart(series: &[Series], x_ticks: &[f64], y_max: f64, levels: &[(f64, [u8; 3])]) -> Canvas {
    let (w, h, left, bottom, top, right) = (720usize, 420usize, 70usize, 40usize, 20usize, 20usize);
    let mut c = Canvas::new(w, h, [255, 255, 255]);
    let (x_lo, x_hi) = x_ticks.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &t| (lo.min(t.log10()), hi.max(t.log10())));
    let pad = 0.05 * (x_hi - x_lo).max(1e-9);
    let (x_lo, x_hi) = (x_lo - pad, x_hi + pad);
    let px = |x: f64| (left as f64 + (x.log10() - x_lo) / (x_hi - x_lo) * (w - left - right) as f64).round() as isize;
    let py = |y: f64| (top as f64 + (1.0 - y / y_max) * (h - top - bottom) as f64).round() as isize;
    let axis = [90, 90, 90];
    let (x_axis, y_axis) = (py(0.0), left as isize);
    c.line((y_axis, x_axis), ((w - right) as isize, x_axis), 1, axis);
    c.line((y_axis, top as isize), (y_axis, x_axis), 1, axis);
    for &t in x_ticks {
        c.line((px(t), x_axis), (px(t), x_axis + 5), 1, axis);
        let label = format!("{t}");
        c.text(((px(t) - 4 * label.len() as isize) as usize, (x_axis + 10) as usize), &label, 2, axis);
    }
    for k in 0..=4 {
        let y = y_max * k as f64 / 4.0;
        c.line((y_axis - 5, py(y)), (y_axis, py(y)), 1, axis);
        let label = format!("{y:.1}");
        c.text((4, (py(y) - 5).max(0) as usize), &label, 2, axis);
    }
    for &(y, color) in levels {
        let mut x = left as isize;
        while x < (w - right) as isize {
            c.line((x, py(y)), ((x + 6).min((w - right) as isize), py(y)), 2, color);
            x += 12;
        }
    }
    for s in series {
        for pair in s.points.windows(2) {
            c.line((px(pair[0].0), py(pair[0].1)), (px(pair[1].0), py(pair[1].1)), 3, s.color);
        }
        for &(x, y) in &s.points {
            c.dot((px(x), py(y)), 4, s.color);
        }
    }
    c
}

#[cfg(test)]
mod chart_tests {
    use super::*;

    #[test]
    fn lines_dots_and_text_land_where_asked() {
        let mut c = Canvas::new(20, 10, [255; 3]);
        c.line((0, 0), (9, 9), 1, [0; 3]);
        assert!((0..10).all(|i| c.rgb[3 * (i * 20 + i)] == 0), "the diagonal is drawn");
        c.text((12, 0), "1", 1, [0; 3]);
        // '1' is [2, 6, 2, 2, 7]: its top row has only the middle pixel.
        assert_eq!((c.rgb[3 * 12], c.rgb[3 * 13], c.rgb[3 * 14]), (255, 0, 255));
        let chart = line_chart(
            &[Series { points: vec![(10.0, 1.0), (100.0, 2.0)], color: [200, 0, 0] }],
            &[10.0, 100.0],
            4.0,
            &[(0.5, [0, 0, 200])],
        );
        assert!(chart.rgb.chunks(3).any(|p| p == [200, 0, 0]) && chart.rgb.chunks(3).any(|p| p == [0, 0, 200]));
    }
}
