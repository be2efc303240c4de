//! What the base image has at the paths the new layer touches: a directory, a symlink, something else,
//! or nothing. A builder looks at the base's files before it writes (a `WORKDIR` that exists is left as
//! it is, a file copied onto a directory goes into it); `assemble` reads the base's layers' tar headers
//! for the same answers.
//!
//! Only the paths asked about are kept (every `COPY` destination and `WORKDIR`, and their parents), so
//! memory does not grow with the base image; the reading is bounded by a [`Budget`]. Layers are applied
//! in order with the OCI whiteouts (`.wh.<name>` deletes a lower path, `.wh..wh..opq` empties a lower
//! directory).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use tar::EntryType;

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What the base image has at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseKind {
    Dir,
    Symlink,
    /// A regular file, a hard link, a device...: nothing goes below it.
    Other,
}

/// The base image's files at the paths wanted (relative to `/`, as [`crate::assemble::layer`] names
/// them); `FROM scratch` has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BaseFiles {
    wanted: BTreeSet<PathBuf>,
    found: BTreeMap<PathBuf, BaseKind>,
}

/// How much of the base image's layers may be read: a real base has at most some hundred thousand
/// entries and a few GiB; a hostile one must not keep the build pod busy forever.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    limits: (u64, u64),
    entries_left: u64,
    bytes_left: u64,
}

impl Budget {
    /// At most `entries` tar entries and `bytes` of uncompressed tar, over all layers.
    pub fn new(entries: u64, bytes: u64) -> Budget {
        Budget { limits: (entries, bytes), entries_left: entries, bytes_left: bytes }
    }
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::new(4_000_000, 64 << 30)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BaseFilesError {
    #[error("the base image's layers hold more than {0} entries, more than assemble reads")]
    TooManyEntries(u64),
    #[error("the base image's layers unpack to more than {0} bytes, more than assemble reads")]
    TooLarge(u64),
    #[error("a layer of the base image is compressed with {0}, which assemble does not read (gzip or none)")]
    Compression(&'static str),
    #[error("a layer of the base image is not a readable tar: {0}")]
    Tar(#[source] io::Error),
}

impl BaseFiles {
    /// An empty view that will keep what the layers say about `wanted`.
    pub fn knowing(wanted: BTreeSet<PathBuf>) -> BaseFiles {
        BaseFiles { wanted, found: BTreeMap::new() }
    }

    /// What the base has at `path` (one of the wanted paths; any other reads as nothing).
    pub fn get(&self, path: &Path) -> Option<BaseKind> {
        self.found.get(path).copied()
    }

    /// Applies one layer blob (gzipped or plain tar) on top of the layers before it, reading it to its
    /// end, and takes what it reads from `budget`.
    pub fn apply_layer<R: Read>(&mut self, blob: R, budget: &mut Budget) -> Result<(), BaseFilesError> {
        let mut blob = BufReader::new(blob);
        let magic = blob.fill_buf().map_err(BaseFilesError::Tar)?;
        let tar: Box<dyn Read + '_> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(MultiGzDecoder::new(blob))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            return Err(BaseFilesError::Compression("zstd"));
        } else {
            Box::new(blob)
        };
        let over = Rc::new(Cell::new(false));
        let counted = Counted { inner: tar, left: budget.bytes_left, over: over.clone() };
        let (entries_limit, bytes_limit) = budget.limits;
        let too_large = |error: io::Error| match over.get() {
            true => BaseFilesError::TooLarge(bytes_limit),
            false => BaseFilesError::Tar(error),
        };
        let mut archive = tar::Archive::new(counted);
        let mut layer = LayerChanges::default();
        for entry in archive.entries().map_err(too_large)? {
            let entry = entry.map_err(too_large)?;
            budget.entries_left =
                budget.entries_left.checked_sub(1).ok_or(BaseFilesError::TooManyEntries(entries_limit))?;
            let path = normal_path(&entry.path().map_err(too_large)?);
            let kind = match entry.header().entry_type() {
                EntryType::Directory => BaseKind::Dir,
                EntryType::Symlink => BaseKind::Symlink,
                _ => BaseKind::Other,
            };
            layer.add(path, kind);
        }
        // To the end: what follows the tar's end marker, so that the whole blob is read (and its digest
        // checked by the caller).
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(too_large)?;
        budget.bytes_left = rest.left;
        self.apply(layer);
        Ok(())
    }

    fn apply(&mut self, layer: LayerChanges) {
        for gone in &layer.whiteouts {
            self.found.retain(|path, _| !path.starts_with(gone));
        }
        for emptied in &layer.opaques {
            self.found.retain(|path, _| path == emptied || !path.starts_with(emptied));
        }
        for (path, kind) in layer.added {
            if kind != BaseKind::Dir {
                self.found.retain(|below, _| below == &path || !below.starts_with(&path));
            }
            // A tar may leave out a path's parents: extracting it makes them directories.
            for parent in path.ancestors().skip(1).filter(|p| self.wanted.contains(*p)) {
                self.found.entry(parent.to_path_buf()).or_insert(BaseKind::Dir);
            }
            if self.wanted.contains(&path) {
                self.found.insert(path, kind);
            }
        }
    }

    #[cfg(test)]
    pub fn with(entries: &[(&str, BaseKind)]) -> BaseFiles {
        let found: BTreeMap<PathBuf, BaseKind> = entries.iter().map(|(p, k)| (PathBuf::from(p), *k)).collect();
        BaseFiles { wanted: found.keys().cloned().collect(), found }
    }
}

/// One layer's entries, applied once it is read whole: its whiteouts concern the layers below it only.
#[derive(Default)]
struct LayerChanges {
    whiteouts: Vec<PathBuf>,
    opaques: Vec<PathBuf>,
    added: Vec<(PathBuf, BaseKind)>,
}

impl LayerChanges {
    fn add(&mut self, path: PathBuf, kind: BaseKind) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let parent = path.parent().unwrap_or(Path::new(""));
        if name == OPAQUE {
            self.opaques.push(parent.to_path_buf());
        } else if let Some(gone) = name.strip_prefix(WHITEOUT) {
            // Other `.wh..wh.` names are aufs' bookkeeping, not files.
            if !gone.starts_with(WHITEOUT) {
                self.whiteouts.push(parent.join(gone));
            }
        } else if !path.as_os_str().is_empty() {
            self.added.push((path, kind));
        }
    }
}

/// A tar path as a path below `/` without `.`, `..` or a trailing `/` (`./usr/bin/` -> `usr/bin`).
fn normal_path(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => normal.push(name),
            Component::ParentDir => {
                normal.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    normal
}

/// Counts down the bytes a layer unpacks to; past the budget, fails (and says so in `over`).
struct Counted<R> {
    inner: R,
    left: u64,
    over: Rc<Cell<bool>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        match self.left.checked_sub(read as u64) {
            Some(left) => {
                self.left = left;
                Ok(read)
            }
            None => {
                self.over.set(true);
                Err(io::Error::other("past the budget"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;

    use super::*;

    /// A tar of `(path, type)`: `d` directory, `l` symlink, `f` file.
    fn tar(entries: &[(&str, char)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_mode(0o755);
            header.set_entry_type(match kind {
                'd' => EntryType::Directory,
                'l' => EntryType::Symlink,
                _ => EntryType::Regular,
            });
            if *kind == 'l' {
                builder.append_link(&mut header, path, "target").unwrap();
            } else {
                builder.append_data(&mut header, path, io::empty()).unwrap();
            }
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn knowing(paths: &[&str]) -> BaseFiles {
        BaseFiles::knowing(paths.iter().map(PathBuf::from).collect())
    }

    fn kinds(files: &BaseFiles, paths: &[&str]) -> Vec<Option<BaseKind>> {
        paths.iter().map(|p| files.get(Path::new(p))).collect()
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts() {
        use BaseKind::{Dir, Other, Symlink};
        let wanted = ["tmp", "srv", "srv/www", "etc", "etc/app", "etc/app/conf", "home", "var/run", "opt"];
        let mut files = knowing(&wanted);
        let mut budget = Budget::default();
        let first = tar(&[
            ("./tmp/", 'd'),
            ("srv/", 'd'),
            ("srv/www/", 'd'),
            ("etc/app/conf", 'f'),
            ("home", 'd'),
            ("var/run", 'l'),
            ("usr/bin/sh", 'f'),
        ]);
        files.apply_layer(&gzip(&first)[..], &mut budget).unwrap();
        // `etc` and `etc/app` are implied by `etc/app/conf`; `opt` is nowhere.
        let expected =
            [Some(Dir), Some(Dir), Some(Dir), Some(Dir), Some(Dir), Some(Other), Some(Dir), Some(Symlink), None];
        assert_eq!(kinds(&files, &wanted), expected);
        // Plain tar: `srv` emptied (what this layer adds below it stays), `home` deleted, `etc/app`
        // replaced by a file (its contents go with it).
        let second = tar(&[
            ("srv/.wh..wh..opq", 'f'),
            ("srv/www", 'f'),
            ("home/.wh.x", 'f'),
            (".wh.home", 'f'),
            ("etc/app", 'f'),
        ]);
        files.apply_layer(&second[..], &mut budget).unwrap();
        let expected = [Some(Dir), Some(Dir), Some(Other), Some(Dir), Some(Other), None, None, Some(Symlink), None];
        assert_eq!(kinds(&files, &wanted), expected);
    }

    #[test]
    fn reading_is_bounded() {
        let layer = tar(&[("a", 'f'), ("b", 'f'), ("c", 'f')]);
        let mut budget = Budget::new(2, 1 << 20);
        let error = knowing(&["a"]).apply_layer(&layer[..], &mut budget).unwrap_err();
        assert_eq!(error.to_string(), "the base image's layers hold more than 2 entries, more than assemble reads");
        // Over two layers: the budget is the image's.
        let mut budget = Budget::new(100, layer.len() as u64 + 10);
        let mut files = knowing(&["a"]);
        files.apply_layer(&gzip(&layer)[..], &mut budget).unwrap();
        assert!(matches!(files.apply_layer(&layer[..], &mut budget), Err(BaseFilesError::TooLarge(_))));
        let zstd = [0x28, 0xb5, 0x2f, 0xfd, 0, 0];
        assert!(matches!(files.apply_layer(&zstd[..], &mut budget), Err(BaseFilesError::Compression("zstd"))));
        assert!(matches!(files.apply_layer(&b"not a tar"[..], &mut Budget::default()), Err(BaseFilesError::Tar(_))));
    }
}
