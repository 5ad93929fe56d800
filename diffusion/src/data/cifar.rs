//! Reading CIFAR-10's binary format (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny
//! Images"; the "binary version" at https://www.cs.toronto.edu/~kriz/cifar.html), gzipped or raw.
//!
//! ```text
//! a file is a sequence of 3073-byte records, nothing else (data_batch_1.bin … data_batch_5.bin hold
//! 10,000 each, test_batch.bin 10,000):
//! byte 0          the label, 0–9 (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck)
//! bytes 1–1024    the red plane, 32×32, row-major; then 1024 green, then 1024 blue
//! ```
//! The format has no header and no magic number, so the checks are what it allows: a non-empty file, a
//! whole number of records, and labels below 10 (a CIFAR-100 file, with its two label bytes, or any other
//! file fails one of them with overwhelming likelihood). Every error names the file and the problem.

use std::path::{Path, PathBuf};

use autograd::Tensor;

use crate::data::idx::read_maybe_gzip;
use crate::error::{Error, Result};

/// Bytes of one record: a label and 3×32×32 pixels.
pub const RECORD: usize = 1 + 3 * 32 * 32;

/// The class names, in label order.
pub const CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Labeled CIFAR-10 images.
#[derive(Clone, Debug, PartialEq)]
pub struct CifarImages {
    /// count·3·32·32 bytes: per image the red, green and blue planes.
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl CifarImages {
    pub fn count(&self) -> usize {
        self.labels.len()
    }

    /// The images as a tensor [count, 3, 32, 32] with pixels scaled from 0..255 to [−1, 1].
    pub fn to_tensor(&self) -> Tensor {
        let data = self.pixels.iter().map(|&p| p as f32 / 127.5 - 1.0).collect();
        Tensor::from_vec(&[self.count(), 3, 32, 32], data)
    }
}

/// The largest CIFAR-10 file this reads, un-gzipped: 256 MiB, over 87,000 records (a CIFAR-10 batch
/// file is 30 MB: 10,000 records). It has no header to check first, so the bound is on the bytes read.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Reads one CIFAR-10 binary file (gzipped or raw).
pub fn read_cifar10(path: impl AsRef<Path>) -> Result<CifarImages> {
    let path = path.as_ref();
    let bytes = read_maybe_gzip(path, MAX_FILE_BYTES)?;
    let bad = |problem: String| Error::format(path, problem);
    if bytes.is_empty() {
        return Err(bad("is empty".into()));
    }
    if bytes.len() % RECORD != 0 {
        return Err(bad(format!(
            "is {} bytes long, not a whole number of {RECORD}-byte CIFAR-10 records ({} records and {} bytes \
             over): truncated, or not CIFAR-10",
            bytes.len(),
            bytes.len() / RECORD,
            bytes.len() % RECORD
        )));
    }
    let count = bytes.len() / RECORD;
    let mut images =
        CifarImages { pixels: Vec::with_capacity(count * (RECORD - 1)), labels: Vec::with_capacity(count) };
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        if record[0] >= 10 {
            return Err(bad(format!(
                "record {i} has label {}; CIFAR-10 labels are 0-9 (a CIFAR-100 file, or not CIFAR at all?)",
                record[0]
            )));
        }
        images.labels.push(record[0]);
        images.pixels.extend_from_slice(&record[1..]);
    }
    Ok(images)
}

/// Reads a file, or the training set of a directory (`data_batch_1.bin` … `data_batch_5.bin`, those present,
/// in order; at least one must be).
pub fn read_cifar10_path(path: impl AsRef<Path>) -> Result<CifarImages> {
    let path = path.as_ref();
    if !path.is_dir() {
        return read_cifar10(path);
    }
    let files: Vec<PathBuf> =
        (1..=5).map(|i| path.join(format!("data_batch_{i}.bin"))).filter(|p| p.exists()).collect();
    if files.is_empty() {
        return Err(Error::format(path, "is a directory without data_batch_1.bin … data_batch_5.bin"));
    }
    let mut all = CifarImages { pixels: Vec::new(), labels: Vec::new() };
    for file in files {
        let part = read_cifar10(&file)?;
        all.pixels.extend(part.pixels);
        all.labels.extend(part.labels);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cifar-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// `count` records whose label is i % 10 and whose red, green and blue planes are i, 100 + i, 200 + i
    /// at pixel 0 and 0 elsewhere.
    fn records(count: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; count * RECORD];
        for (i, r) in bytes.chunks_exact_mut(RECORD).enumerate() {
            r[0] = (i % 10) as u8;
            r[1] = i as u8;
            r[1 + 1024] = 100 + i as u8;
            r[1 + 2048] = 200 + i as u8;
        }
        bytes
    }

    #[test]
    fn reads_labels_and_planes_raw_gzipped_and_from_a_directory() {
        let raw = temp("three.bin", &records(3));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&records(3)).unwrap();
        let gz = temp("three.bin.gz", &gz.finish().unwrap());
        let (a, b) = (read_cifar10(&raw).unwrap(), read_cifar10(&gz).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.labels, [0, 1, 2]);
        let t = a.to_tensor();
        assert_eq!(t.shape(), &[3, 3, 32, 32]);
        // Image 2: red 2, green 102, blue 202 at pixel (0, 0).
        assert_eq!(t.at(&[2, 0, 0, 0]), 2.0 / 127.5 - 1.0);
        assert_eq!(t.at(&[2, 1, 0, 0]), 102.0 / 127.5 - 1.0);
        assert_eq!(t.at(&[2, 2, 0, 0]), 202.0 / 127.5 - 1.0);
        assert_eq!(t.at(&[2, 2, 0, 1]), -1.0);

        let dir = std::env::temp_dir().join(format!("cifar-tests-{}/batches", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data_batch_1.bin"), records(2)).unwrap();
        std::fs::write(dir.join("data_batch_2.bin"), records(3)).unwrap();
        let both = read_cifar10_path(&dir).unwrap();
        assert_eq!(both.labels, [0, 1, 0, 1, 2]);
    }

    #[test]
    fn corrupt_files_get_errors_naming_the_file_and_the_problem() {
        let mut bad_label = records(4);
        bad_label[2 * RECORD] = 57;
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "is empty"),
            ("truncated", records(2)[..RECORD + 100].to_vec(), "is 3173 bytes long, not a whole number of 3073-byte"),
            ("trailing", [&records(1)[..], &[7, 7]].concat(), "(1 records and 2 bytes over)"),
            ("label", bad_label, "record 2 has label 57; CIFAR-10 labels are 0-9"),
            ("badgz", vec![0x1f, 0x8b, 9, 9], "is not a valid gzip stream"),
        ];
        for (name, bytes, expected) in cases {
            let path = temp(&format!("bad-{name}.bin"), &bytes);
            let err = read_cifar10(&path).unwrap_err().to_string();
            assert!(err.starts_with(&path.display().to_string()), "{name}: {err}");
            assert!(err.contains(expected), "{name}: {err}");
        }
        let missing = read_cifar10("/no/such/data_batch_1.bin").unwrap_err().to_string();
        assert!(missing.starts_with("/no/such/data_batch_1.bin: ") && missing.contains("No such file"), "{missing}");
        let empty_dir = std::env::temp_dir().join(format!("cifar-tests-{}/none", std::process::id()));
        std::fs::create_dir_all(&empty_dir).unwrap();
        let err = read_cifar10_path(&empty_dir).unwrap_err().to_string();
        assert!(err.contains("is a directory without data_batch_1.bin"), "{err}");
    }
}
