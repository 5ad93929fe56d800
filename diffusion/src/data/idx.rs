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

use std::io::{BufRead, Read};
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

/// The largest data a reader takes from one file, before or after un-gzipping: 1 GiB (the full MNIST
/// training set is 47 MB). Checked before the bytes are read, so a gzip bomb or `/dev/zero` is refused
/// after reading at most this much.
pub const MAX_BYTES: u64 = 1 << 30;
/// The most images (or labels) one IDX file may hold, and the largest side of an image.
pub const MAX_COUNT: usize = 10_000_000;
pub const MAX_SIDE: usize = 4096;

/// A reader of `path`'s bytes, un-gzipping them if the file starts with the gzip magic bytes 1f 8b. Every
/// member of a multi-member gzip file is read (as `gunzip` does), and bytes after the last member that are
/// not another member are an error, not silently dropped.
pub fn open_maybe_gzip(path: &Path) -> Result<Box<dyn Read>> {
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(|e| Error::io(path, e))?);
    let start = file.fill_buf().map_err(|e| Error::io(path, e))?;
    if start.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// Reads all of `path` (un-gzipped), failing once it passes `limit` bytes; a read error inside a gzip
/// stream is a format error naming the file.
pub fn read_maybe_gzip(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let reader = open_maybe_gzip(path)?;
    reader.take(limit + 1).read_to_end(&mut out).map_err(|e| stream_error(path, e))?;
    if out.len() as u64 > limit {
        return Err(Error::format(path, format!("holds more than {limit} bytes, more than this reader takes")));
    }
    Ok(out)
}

/// A failed read: the gzip decoder reports bad data as `InvalidInput`/`InvalidData`, and a stream that
/// stops inside a member as `UnexpectedEof`.
fn stream_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            Error::format(path, format!("is not a valid gzip stream ({e})"))
        }
        _ => Error::io(path, e),
    }
}

/// Reads up to `buf.len()` bytes; returns how many (fewer only at the end of the data).
fn read_full(reader: &mut dyn Read, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error(path, e)),
        }
    }
    Ok(filled)
}

/// Reads an IDX file of unsigned bytes with `ndims` dimensions: the header first, checked against
/// [`MAX_COUNT`], [`MAX_SIDE`] and [`MAX_BYTES`], then at most the bytes it promises, then one more read
/// to make sure nothing follows. Returns the sizes and the element bytes.
fn read_idx(path: &Path, ndims: usize, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let bad = |problem: String| Error::format(path, problem);
    let mut reader = open_maybe_gzip(path)?;
    let mut header = vec![0u8; 4 + 4 * ndims];
    let got = read_full(&mut *reader, &mut header, path)?;
    if got == 0 {
        return Err(bad("is empty".into()));
    }
    if got < 4 {
        return Err(bad(format!("is {got} bytes long, too short for an IDX header")));
    }
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let expected = 0x0800 | ndims as u32;
    if magic != expected {
        return Err(bad(format!(
            "has magic number 0x{magic:08x}, expected 0x{expected:08x} (IDX {what}: unsigned bytes, {ndims} dimension{})",
            if ndims == 1 { "" } else { "s" }
        )));
    }
    if got < header.len() {
        return Err(bad(format!("is {got} bytes long, shorter than its {}-byte header", header.len())));
    }
    let dims: Vec<usize> =
        header[4..].chunks(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    if dims[0] == 0 {
        return Err(bad(format!("holds no {what} (count 0)")));
    }
    if let Some(zero) = dims[1..].iter().position(|&d| d == 0) {
        return Err(bad(format!("has size 0 in dimension {} of {dims:?}", zero + 1)));
    }
    if dims[0] > MAX_COUNT || dims[1..].iter().any(|&d| d > MAX_SIDE) {
        return Err(bad(format!(
            "has dimensions {dims:?}: more than {MAX_COUNT} {what} or a side over {MAX_SIDE}, more than this reader takes"
        )));
    }
    let n = dims.iter().map(|&d| d as u64).product::<u64>();
    if n > MAX_BYTES {
        return Err(bad(format!(
            "has dimensions {dims:?}: {n} bytes of data, more than the {MAX_BYTES} this reader takes"
        )));
    }
    // Grown as the bytes arrive, not sized by the header: a short file claiming 1 GiB allocates what it holds.
    let mut data = Vec::with_capacity((n as usize).min(1 << 20));
    (&mut reader).take(n).read_to_end(&mut data).map_err(|e| stream_error(path, e))?;
    let found = data.len();
    if found < n as usize {
        return Err(bad(format!("is truncated: dimensions {dims:?} need {n} bytes of data, found {found}")));
    }
    let mut extra = [0u8; 4096];
    let after = read_full(&mut *reader, &mut extra, path)?;
    if after > 0 {
        let more = if after == extra.len() { "at least " } else { "" };
        return Err(bad(format!("has {more}{after} bytes after the {n} bytes its dimensions {dims:?} describe")));
    }
    Ok((dims, data))
}

/// Reads an IDX image file (magic 0x00000803), gzipped or raw.
pub fn read_images(path: impl AsRef<Path>) -> Result<IdxImages> {
    let (dims, pixels) = read_idx(path.as_ref(), 3, "images")?;
    Ok(IdxImages { count: dims[0], rows: dims[1], cols: dims[2], pixels })
}

/// Reads an IDX label file (magic 0x00000801), gzipped or raw.
pub fn read_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    Ok(read_idx(path.as_ref(), 1, "labels")?.1)
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
            ("huge", header(0x803, &[u32::MAX, u32::MAX, u32::MAX]), "more than this reader takes"),
            ("big", header(0x803, &[10_000_000, 4096, 4096]), "bytes of data, more than the 1073741824"),
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
    fn gzip_members_are_all_read_and_junk_after_the_stream_is_refused() {
        let mut bytes = header(0x803, &[2, 2, 3]);
        bytes.extend(0..12u8);
        let gz = |part: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(part).unwrap();
            e.finish().unwrap()
        };
        let two = temp("two-members.gz", &[gz(&bytes[..7]), gz(&bytes[7..])].concat());
        assert_eq!(read_images(&two).unwrap().pixels, (0..12u8).collect::<Vec<_>>());
        let junk = temp("junk-after.gz", &[gz(&bytes), b"junk".to_vec()].concat());
        let err = read_images(&junk).unwrap_err().to_string();
        assert!(err.starts_with(&junk.display().to_string()) && err.contains("not a valid gzip stream"), "{err}");
        // A gzip bomb: 64 MB of zeros in a 64 KB file is refused at its header, before anything is unpacked.
        let bomb = temp("bomb.gz", &gz(&vec![0; 64 << 20]));
        assert!(std::fs::metadata(&bomb).unwrap().len() < 1 << 20);
        let err = read_images(&bomb).unwrap_err().to_string();
        assert!(err.contains("has magic number 0x00000000"), "{err}");
        let err = read_labels("/dev/zero").unwrap_err().to_string();
        assert!(err.starts_with("/dev/zero: has magic number 0x00000000"), "{err}");
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
