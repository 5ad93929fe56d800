//! Reading IDX files, the format of MNIST and Fashion-MNIST (LeCun et al.), gzipped or raw.
//!
//! ```text
//! bytes 0–1   0x00 0x00
//! byte  2     element type: 0x08 = unsigned byte (the only one these datasets use)
//! byte  3     number of dimensions d (3 for images [count, rows, cols], 1 for labels [count])
//! then        d big-endian u32 sizes, then the elements, row-major
//! ```
//! Every check names the file and says what is wrong: a missing file, a bad gzip stream, a wrong magic
//! number or dimension count, an empty set, or data shorter or longer than the header promises.

use std::io::Read;
use std::path::Path;

use autograd::Tensor;

use crate::error::{Error, Result};

/// Images of one IDX file: `count` images of `rows`×`cols` bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    /// count·rows·cols bytes, row-major.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// The images as a tensor [count, 1, rows, cols] with pixels scaled from 0..255 to [−1, 1].
    pub fn to_tensor(&self) -> Tensor {
        let data = self.pixels.iter().map(|&p| p as f32 / 127.5 - 1.0).collect();
        Tensor::from_vec(&[self.count, 1, self.rows, self.cols], data)
    }
}

/// Reads a whole file, un-gzipping it if it starts with the gzip magic bytes 1f 8b.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, format!("is not a valid gzip stream ({e})")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Checks an IDX header for unsigned bytes with `ndims` dimensions; returns the sizes and the element bytes.
fn parse<'a>(bytes: &'a [u8], path: &Path, ndims: usize, what: &str) -> Result<(Vec<usize>, &'a [u8])> {
    let bad = |problem: String| Error::format(path, problem);
    if bytes.is_empty() {
        return Err(bad("is empty".into()));
    }
    if bytes.len() < 4 {
        return Err(bad(format!("is {} bytes long, too short for an IDX header", bytes.len())));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let expected = 0x0800 | ndims as u32;
    if magic != expected {
        return Err(bad(format!(
            "has magic number 0x{magic:08x}, expected 0x{expected:08x} (IDX {what}: unsigned bytes, {ndims} dimension{})",
            if ndims == 1 { "" } else { "s" }
        )));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(bad(format!("is {} bytes long, shorter than its {header}-byte header", bytes.len())));
    }
    let dims: Vec<usize> =
        bytes[4..header].chunks(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    if dims[0] == 0 {
        return Err(bad(format!("holds no {what} (count 0)")));
    }
    if let Some(zero) = dims[1..].iter().position(|&d| d == 0) {
        return Err(bad(format!("has size 0 in dimension {} of {dims:?}", zero + 1)));
    }
    let expected_len = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let data = &bytes[header..];
    match expected_len {
        Some(n) if n == data.len() => Ok((dims, data)),
        Some(n) if n > data.len() => {
            Err(bad(format!("is truncated: dimensions {dims:?} need {n} bytes of data, found {}", data.len())))
        }
        Some(n) => {
            Err(bad(format!("has {} bytes after the {n} bytes its dimensions {dims:?} describe", data.len() - n)))
        }
        None => Err(bad(format!("has dimensions {dims:?} too large to address"))),
    }
}

/// Reads an IDX image file (magic 0x00000803), gzipped or raw.
pub fn read_images(path: impl AsRef<Path>) -> Result<IdxImages> {
    let path = path.as_ref();
    let bytes = read_maybe_gzip(path)?;
    let (dims, data) = parse(&bytes, path, 3, "images")?;
    Ok(IdxImages { count: dims[0], rows: dims[1], cols: dims[2], pixels: data.to_vec() })
}

/// Reads an IDX label file (magic 0x00000801), gzipped or raw.
pub fn read_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let bytes = read_maybe_gzip(path)?;
    let (_, data) = parse(&bytes, path, 1, "labels")?;
    Ok(data.to_vec())
}

/// An image dataset with labels, as read from an IDX pair.
#[derive(Clone, Debug)]
pub struct LabeledImages {
    pub images: IdxImages,
    pub labels: Vec<u8>,
}

/// Reads an images file and its labels file and checks that they describe the same number of items.
pub fn read_labeled(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<LabeledImages> {
    let imgs = read_images(images.as_ref())?;
    let labs = read_labels(labels.as_ref())?;
    if imgs.count != labs.len() {
        return Err(Error::format(
            labels.as_ref(),
            format!("holds {} labels but {} holds {} images", labs.len(), images.as_ref().display(), imgs.count),
        ));
    }
    Ok(LabeledImages { images: imgs, labels: labs })
}

/// The MNIST subset shipped in the repository (`data/mnist5k`, 5,000 images, CC BY-SA 3.0).
pub fn shipped_mnist_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist5k")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("idx-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn header(magic: u32, dims: &[u32]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
        v
    }

    #[test]
    fn shipped_mnist_loads_with_500_of_each_digit() {
        let dir = shipped_mnist_dir();
        let data = read_labeled(dir.join("images-idx3-ubyte.gz"), dir.join("labels-idx1-ubyte.gz")).unwrap();
        assert_eq!((data.images.count, data.images.rows, data.images.cols), (5000, 28, 28));
        let mut counts = [0; 10];
        data.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, [500; 10]);
        let t = data.images.to_tensor();
        assert_eq!(t.shape(), &[5000, 1, 28, 28]);
        assert!(t.data().iter().all(|v| (-1.0..=1.0).contains(v)));
        // Background pixels (byte 0) map to −1, and most pixels are background.
        let background = t.data().iter().filter(|&&v| v == -1.0).count() as f32 / t.numel() as f32;
        assert!(background > 0.7, "{background}");
    }

    #[test]
    fn raw_and_gzipped_files_read_the_same() {
        let mut bytes = header(0x803, &[2, 2, 3]);
        bytes.extend(0..12u8);
        let raw = temp("raw-idx3", &bytes);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&bytes).unwrap();
        let gz = temp("gz-idx3.gz", &gz.finish().unwrap());
        let (a, b) = (read_images(&raw).unwrap(), read_images(&gz).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.pixels[5], 5);
    }

    #[test]
    fn corrupt_files_get_errors_naming_the_file_and_the_problem() {
        let mut good = header(0x803, &[2, 2, 3]);
        good.extend(0..12u8);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "is empty"),
            ("short", vec![0, 0, 8], "too short for an IDX header"),
            (
                "magic",
                [&header(0x801, &[2, 2, 3])[..], &[0; 12]].concat(),
                "has magic number 0x00000801, expected 0x00000803",
            ),
            ("dims", [&header(0x802, &[2, 6])[..], &[0; 12]].concat(), "expected 0x00000803"),
            ("header", header(0x803, &[2])[..8].to_vec(), "shorter than its 16-byte header"),
            ("count0", header(0x803, &[0, 2, 3]), "holds no images (count 0)"),
            ("truncated", good[..20].to_vec(), "is truncated: dimensions [2, 2, 3] need 12 bytes of data, found 4"),
            ("trailing", [&good[..], &[1, 2]].concat(), "has 2 bytes after the 12 bytes"),
            ("badgz", vec![0x1f, 0x8b, 1, 2, 3], "is not a valid gzip stream"),
            ("huge", header(0x803, &[u32::MAX, u32::MAX, u32::MAX]), "too large to address"),
        ];
        for (name, bytes, expected) in cases {
            let path = temp(&format!("bad-{name}"), &bytes);
            let err = read_images(&path).unwrap_err().to_string();
            assert!(err.starts_with(&path.display().to_string()), "{name}: {err}");
            assert!(err.contains(expected), "{name}: {err}");
        }
        let missing = read_images("/no/such/images.idx").unwrap_err().to_string();
        assert!(missing.starts_with("/no/such/images.idx: ") && missing.contains("No such file"), "{missing}");
    }

    #[test]
    fn label_count_must_match_image_count() {
        let mut imgs = header(0x803, &[2, 1, 1]);
        imgs.extend([0, 1]);
        let mut labs = header(0x801, &[3]);
        labs.extend([0, 1, 2]);
        let (i, l) = (temp("pair-images", &imgs), temp("pair-labels", &labs));
        let err = read_labeled(&i, &l).unwrap_err().to_string();
        assert!(err.contains("holds 3 labels but") && err.contains("holds 2 images"), "{err}");
    }
}
