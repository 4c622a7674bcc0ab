//! The archive file: a plain POSIX tar (ustar), so any `tar` can list and unpack it.
//!
//! ```text
//! capliquify-backup-v1        empty entry: says what the file is and which layout follows
//! data/<table>.copy           one per tenant table: PostgreSQL COPY text format
//! public/<table>.ndjson       the tenant's public rows, one JSON object a line
//! manifest.json               versions, tenant, row counts, SHA-256 of every part
//! manifest.sig                last, when signed: HMAC-SHA256 of manifest.json (signing.rs)
//! ```
//!
//! Why tar, and why the manifest comes last: tar is the most widely readable container, and
//! a backup is streamed in one pass from `COPY … TO STDOUT` straight into the file. A tar
//! header carries its entry's size, which is known only once the table is written, so each
//! part's header is written as a placeholder and filled in by seeking back (the `tar` crate
//! formats the headers; it has no writer for data of unknown length). The manifest holds the
//! checksums of every part, so it can only be written after them. No compression: parts
//! are checksummed as stored, and operators can compress the whole file themselves.

use std::collections::BTreeMap;
use std::io::{Read, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};

use super::BackupError;

/// Name of the first entry; its suffix is the layout version.
pub const MARKER_PREFIX: &str = "capliquify-backup-v";
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
/// The most bytes of an entry [`scan`] reads into memory (checked against the entry's
/// header before reading): a hostile archive cannot make a restore allocate what it likes.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;
const MAX_SIGNATURE_BYTES: u64 = 1024;
const MAX_PUBLIC_PART_BYTES: u64 = 512 << 20;
const BLOCK: u64 = 512;

/// What was written for one part.
#[derive(Debug, Clone)]
pub struct Written {
    pub bytes: u64,
    /// Lines = rows (COPY text and NDJSON both end every row with a newline).
    pub rows: u64,
    pub sha256: String,
}

/// Writes entries one after another into `file`.
pub struct Writer {
    file: BufWriter<tokio::fs::File>,
    pos: u64,
    mtime: u64,
    open: Option<OpenPart>,
}

struct OpenPart {
    path: String,
    header_at: u64,
    bytes: u64,
    rows: u64,
    hash: Sha256,
}

impl Writer {
    pub fn new(file: tokio::fs::File, mtime: u64) -> Self {
        Self {
            file: BufWriter::with_capacity(256 * 1024, file),
            pos: 0,
            mtime,
            open: None,
        }
    }

    /// Starts an entry whose length is not known yet.
    pub async fn begin(&mut self, path: &str) -> Result<(), BackupError> {
        debug_assert!(self.open.is_none(), "one part at a time");
        let header_at = self.pos;
        self.put(&[0u8; BLOCK as usize]).await?;
        self.open = Some(OpenPart {
            path: path.to_owned(),
            header_at,
            bytes: 0,
            rows: 0,
            hash: Sha256::new(),
        });
        Ok(())
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), BackupError> {
        let part = self.open.as_mut().ok_or_else(no_part)?;
        part.bytes += data.len() as u64;
        part.rows += memchr_count(data);
        part.hash.update(data);
        self.put(data).await
    }

    /// Ends the open entry: pads it and fills in its header.
    pub async fn end(&mut self) -> Result<Written, BackupError> {
        let part = self.open.take().ok_or_else(no_part)?;
        self.pad().await?;
        let header = header(&part.path, part.bytes, self.mtime)?;
        self.file.seek(SeekFrom::Start(part.header_at)).await?;
        self.file.write_all(header.as_bytes()).await?;
        self.file.seek(SeekFrom::Start(self.pos)).await?;
        Ok(Written {
            bytes: part.bytes,
            rows: part.rows,
            sha256: hex(&part.hash.finalize()),
        })
    }

    /// A whole entry at once (the marker, the manifest).
    pub async fn entry(&mut self, path: &str, data: &[u8]) -> Result<(), BackupError> {
        let header = header(path, data.len() as u64, self.mtime)?;
        self.put(header.as_bytes()).await?;
        self.put(data).await?;
        self.pad().await
    }

    /// Writes the end-of-archive blocks and forces everything to disk.
    pub async fn finish(mut self) -> Result<u64, BackupError> {
        self.put(&[0u8; 2 * BLOCK as usize]).await?;
        self.file.flush().await?;
        let file = self.file.into_inner();
        file.sync_all().await?;
        Ok(self.pos)
    }

    async fn put(&mut self, data: &[u8]) -> Result<(), BackupError> {
        self.file.write_all(data).await?;
        self.pos += data.len() as u64;
        Ok(())
    }

    async fn pad(&mut self) -> Result<(), BackupError> {
        let rest = (BLOCK - self.pos % BLOCK) % BLOCK;
        if rest > 0 {
            self.put(&vec![0u8; rest as usize]).await?;
        }
        Ok(())
    }
}

fn no_part() -> BackupError {
    BackupError::Io(std::io::Error::other("archive writer: no open part"))
}

fn header(path: &str, size: u64, mtime: u64) -> Result<tar::Header, BackupError> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(header)
}

/// One entry as found in an archive.
#[derive(Debug, Clone)]
pub struct Found {
    /// Where its data starts in the file.
    pub offset: u64,
    pub bytes: u64,
    pub rows: u64,
    pub sha256: String,
}

/// Everything a full read of an archive found: the layout version from the marker, every
/// entry with its checksum, and the manifest's bytes.
#[derive(Debug)]
pub struct Scanned {
    pub layout_version: u32,
    pub entries: BTreeMap<String, Found>,
    pub manifest: Vec<u8>,
    /// `manifest.sig`, when the archive is signed.
    pub signature: Option<Vec<u8>>,
    /// Small parts kept in memory (the public rows), by path.
    pub small: BTreeMap<String, Vec<u8>>,
}

/// Parts under this folder (the public rows, small) are kept in memory by [`scan`].
const SMALL_PREFIX: &str = "public/";

/// Reads the whole archive once (blocking: run it on a blocking thread), checking that it is
/// ours and hashing every entry. A file that is not a tar, not ours, cut short or missing its
/// manifest is refused with what is wrong.
pub fn scan(path: &Path) -> Result<Scanned, BackupError> {
    let file = std::fs::File::open(path).map_err(|e| BackupError::Open {
        path: path.display().to_string(),
        error: e,
    })?;
    let not_ours = |reason: String| BackupError::NotAnArchive {
        path: path.display().to_string(),
        reason,
    };
    let corrupt = |what: String| BackupError::Corrupt {
        path: path.display().to_string(),
        what,
    };
    let length = file.metadata()?.len();
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(256 * 1024, file));
    let entries = archive
        .entries()
        .map_err(|e| not_ours(format!("not a tar archive ({e})")))?;

    let mut layout_version = None;
    let mut found = BTreeMap::new();
    let mut small = BTreeMap::new();
    let mut manifest = None;
    let mut signature = None;
    for (index, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| {
            if index == 0 {
                not_ours(format!("not a tar archive ({e})"))
            } else {
                corrupt(format!("unreadable entry after {index} entries ({e})"))
            }
        })?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        // Our archives hold plain files only; a link, a sparse or any other entry is not ours.
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(corrupt(format!(
                "entry {name:?} is not a plain file (a capliquify backup holds only plain files)"
            )));
        }
        let size = entry.size();
        let offset = entry.raw_file_position();
        if index == 0 {
            let version = name
                .strip_prefix(MARKER_PREFIX)
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| {
                    not_ours(format!(
                        "its first entry is {name:?}, not {MARKER_PREFIX}<N> (a capliquify tenant backup starts with it)"
                    ))
                })?;
            layout_version = Some(version);
        } else if signature.is_some() || (manifest.is_some() && name != SIGNATURE) {
            return Err(corrupt(format!(
                "entry {name:?} follows the manifest (only its signature may)"
            )));
        } else if name == SIGNATURE && manifest.is_none() {
            return Err(corrupt(format!(
                "entry {name:?} comes before the manifest it signs"
            )));
        }
        if offset.saturating_add(size) > length {
            return Err(corrupt(format!(
                "entry {name:?} is cut short: the file ends before its {size} bytes (truncated archive)"
            )));
        }
        let cap = if name == MANIFEST {
            Some(MAX_MANIFEST_BYTES)
        } else if name == SIGNATURE {
            Some(MAX_SIGNATURE_BYTES)
        } else if name.starts_with(SMALL_PREFIX) {
            Some(MAX_PUBLIC_PART_BYTES)
        } else {
            None
        };
        if let Some(cap) = cap
            && size > cap
        {
            return Err(corrupt(format!(
                "entry {name:?} is {size} bytes, more than the {cap} this build reads into memory"
            )));
        }
        let keep = cap.is_some();
        let mut kept = Vec::new();
        let mut hash = Sha256::new();
        let (mut bytes, mut rows) = (0u64, 0u64);
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| corrupt(format!("entry {name:?} cannot be read ({e})")))?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            hash.update(chunk);
            bytes += n as u64;
            rows += memchr_count(chunk);
            if keep {
                kept.extend_from_slice(chunk);
            }
        }
        if bytes != size {
            return Err(corrupt(format!(
                "entry {name:?} has {bytes} of its {size} bytes (truncated archive)"
            )));
        }
        if index == 0 {
            // The marker: its name was all there was to read.
        } else if name == MANIFEST {
            manifest = Some(kept);
        } else if name == SIGNATURE {
            signature = Some(kept);
        } else {
            if found.contains_key(&name) {
                return Err(corrupt(format!("entry {name:?} appears twice")));
            }
            if name.starts_with(SMALL_PREFIX) {
                small.insert(name.clone(), kept);
            }
            found.insert(
                name,
                Found {
                    offset,
                    bytes,
                    rows,
                    sha256: hex(&hash.finalize()),
                },
            );
        }
    }
    let layout_version =
        layout_version.ok_or_else(|| not_ours("the file holds no tar entries".into()))?;
    let manifest = manifest.ok_or_else(|| {
        corrupt("it has no manifest.json (the last entry): truncated or incomplete archive".into())
    })?;
    Ok(Scanned {
        layout_version,
        entries: found,
        manifest,
        signature,
        small,
    })
}

fn memchr_count(data: &[u8]) -> u64 {
    data.iter().filter(|b| **b == b'\n').count() as u64
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
