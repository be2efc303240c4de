//! The reproducible layer of a recipe's `COPY`/`ADD`s: the files they take from the build context, as
//! Docker's `COPY` lays them out, in one gzipped tar whose bytes depend on nothing but the context's
//! contents, names and permission bits (no times, no owners of the context, no directory order).
//!
//! Two passes: plan the entries (one per path, the last step to write a path wins; only metadata is
//! kept), then stream them into the tar, each file read as it is written, the tar and the gzip hashed
//! on the way: neither a file nor the layer is ever held in memory.

mod context;
pub(crate) mod dockerignore;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::ops::Bound;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use self::context::Context;
use super::base_files::{BaseFiles, BaseKind};
use super::resolve::{TooManyLinks, resolve};
use super::{CopyStep, Owner};
use dockerignore::{DockerignoreError, PatternError, clean};

/// The digests of a layer, as an image config (`diff_id`) and a manifest (`digest`, `size`) name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDigests {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:<hex>` of the gzip.
    pub digest: String,
    /// Bytes of the gzip.
    pub size: u64,
}

/// The instruction and line an error is about: `COPY at line 4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    pub instruction: &'static str,
    pub line: usize,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at line {}", self.instruction, self.line)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Dockerignore(#[from] DockerignoreError),
    #[error("cannot read {path}: {error}")]
    Context { path: String, error: io::Error },
    #[error("{at}: {name:?} is not in the build context{}", if *.ignored { " (.dockerignore excludes it)" } else { "" })]
    NotFound { at: At, name: String, ignored: bool },
    #[error("{at}: {name:?} matches no file of the build context")]
    NoMatch { at: At, name: String },
    #[error("{at}: {name:?} is outside the build context")]
    OutsideContext { at: At, name: String },
    #[error("{at}: {name:?}: too many levels of symbolic links")]
    SymlinkLoop { at: At, name: String },
    #[error("{at}: {error}")]
    Pattern { at: At, error: PatternError },
    #[error("{at}: {error} in the image")]
    ImageSymlinks { at: At, error: TooManyLinks },
    #[error("{at}: {count} sources need a destination that ends with `/`, not {dest:?}")]
    DestNotDirectory { at: At, count: usize, dest: String },
    #[error("{at}: {path} is a {kind}: only files, directories and symlinks can be copied")]
    Unsupported { at: At, path: String, kind: &'static str },
    #[error("ADD at line {line}: {path} is an archive, which ADD extracts: that needs a builder")]
    AddArchive { line: usize, path: String },
    #[error("{at}: /{path} {problem}")]
    Conflict { at: At, path: String, problem: &'static str },
    #[error("{at}: cannot read {path}: {error}")]
    Read { at: At, path: String, error: io::Error },
    #[error("cannot write the layer: {0}")]
    Write(#[source] io::Error),
}

/// Whether the first bytes of a file are those of an archive `ADD` would extract: a tar (`ustar` at
/// offset 257), or a gzip, bzip2, xz or zstd stream (Docker's `DetectCompression`, which may hold a
/// tar; a compressed file that is not one is refused too: telling needs decompressing it).
pub fn is_archive(bytes_prefix: &[u8]) -> bool {
    const MAGICS: [&[u8]; 4] =
        [&[0x1f, 0x8b], b"BZh", &[0xfd, b'7', b'z', b'X', b'Z', 0x00], &[0x28, 0xb5, 0x2f, 0xfd]];
    MAGICS.iter().any(|magic| bytes_prefix.starts_with(magic)) || bytes_prefix.get(257..262) == Some(b"ustar")
}

/// Writes the layer of `copies` (and the directories of each `WORKDIR` in `workdirs`, with the owner
/// it is made for) taken from `context` to `out`, gzipped, on top of a base image that has `base` (read
/// at [`paths_to_know`]). Sources and destinations are as in [`CopyStep`]; destinations must be
/// absolute (a relative one is taken from `/`).
pub fn write_layer<W: Write>(
    context: &Path,
    copies: &[CopyStep],
    workdirs: &[(String, Owner)],
    base: &BaseFiles,
    out: W,
) -> Result<LayerDigests, LayerError> {
    let mut layer = Layer::new(context, base)?;
    for (workdir, owner) in workdirs {
        let at = At { instruction: "WORKDIR", line: 0 };
        // Made where its symlinks lead, the last one too (buildah's `mkdir` follows them; a dangling
        // one makes its target).
        let path = layer.resolve(at, &image_path(workdir), true)?;
        // As BuildKit's `mkdir -p` of a WORKDIR: what is missing 0755, owned by the USER then in
        // effect; what exists (in the base, or made by this layer) as it is.
        if let Some(parent) = path.parent() {
            layer.make_parents(at, parent, *owner)?;
        }
        if !path.as_os_str().is_empty() && !layer.exists(&path) {
            layer.insert(at, path, Entry { kind: Kind::Dir, mode: 0o755, owner: *owner })?;
        }
    }
    for copy in copies {
        layer.copy(copy)?;
    }
    layer.write(out)
}

/// The paths the layer of `copies` and `workdirs` writes at, before their symlinks are followed: each
/// destination and `WORKDIR`, and their parents. Of the base's files that are neither directories nor
/// symlinks, [`BaseFiles`] keeps those under these names only. The layer reads nothing of the base but
/// what it has at these paths and where their symlinks lead, so platforms whose bases agree there get
/// the same layer.
pub fn paths_to_know(copies: &[CopyStep], workdirs: &[(String, Owner)]) -> BTreeSet<PathBuf> {
    let paths = copies.iter().map(|copy| &copy.dest).chain(workdirs.iter().map(|(dir, _)| dir));
    let mut known = BTreeSet::new();
    for path in paths {
        let path = image_path(path);
        known.extend(path.ancestors().filter(|a| !a.as_os_str().is_empty()).map(Path::to_path_buf));
    }
    known
}

const ROOT: Owner = Owner { uid: 0, gid: 0 };
/// Symlinks of tars Docker writes carry 0777 (what Linux reports for every symlink).
const SYMLINK_MODE: u32 = 0o777;

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    /// A regular file: where it is (read when the tar is written) and the step that copied it.
    File {
        source: PathBuf,
        at: At,
    },
    Symlink(PathBuf),
}

#[derive(Clone, Debug)]
struct Entry {
    kind: Kind,
    mode: u32,
    owner: Owner,
}

impl Entry {
    fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }
}

struct Layer<'b> {
    context: Context,
    base: &'b BaseFiles,
    /// Path in the image (relative, no trailing `/`) -> its entry. `PathBuf` orders by component, so
    /// a directory comes right before what it holds.
    entries: BTreeMap<PathBuf, Entry>,
}

impl<'b> Layer<'b> {
    fn new(root: &Path, base: &'b BaseFiles) -> Result<Layer<'b>, LayerError> {
        Ok(Layer { context: Context::open(root)?, base, entries: BTreeMap::new() })
    }

    /// Whether the image has `path` once the layer is applied so far: the base's, an entry of this
    /// layer, or a parent its entries imply.
    fn exists(&self, path: &Path) -> bool {
        let mut from = self.entries.range::<Path, _>((Bound::Included(path), Bound::Unbounded));
        from.next().is_some_and(|(entry, _)| entry.starts_with(path)) || self.base.get(path).is_some()
    }

    fn is_dir(&self, path: &Path) -> bool {
        match self.entries.get(path) {
            Some(entry) => entry.is_dir(),
            None => self.base.get(path) == Some(BaseKind::Dir),
        }
    }

    /// The target of the symlink at `path`: this layer's, else the base's unless this layer replaced
    /// it.
    fn link(&self, path: &Path) -> Option<PathBuf> {
        match self.entries.get(path) {
            Some(Entry { kind: Kind::Symlink(target), .. }) => Some(target.clone()),
            Some(_) => None,
            None => self.base.link(path).map(Path::to_path_buf),
        }
    }

    /// Where `path` leads once the symlinks above it (and the last one, when `follow_last`) are
    /// followed, as buildah resolves a destination (see [`resolve`]).
    fn resolve(&self, at: At, path: &Path, follow_last: bool) -> Result<PathBuf, LayerError> {
        resolve(path, follow_last, |p| self.link(p)).map_err(|error| LayerError::ImageSymlinks { at, error })
    }

    /// Makes `dir` and its missing parents as `mkdir -p` would, for `owner`. Root's (0755, as an
    /// extracted layer makes a missing parent) stay implicit: the layer then does not depend on what the
    /// base lacks.
    fn make_parents(&mut self, at: At, dir: &Path, owner: Owner) -> Result<(), LayerError> {
        if owner == ROOT {
            return Ok(());
        }
        let missing: Vec<PathBuf> =
            dir.ancestors().filter(|a| !a.as_os_str().is_empty() && !self.exists(a)).map(Path::to_path_buf).collect();
        for path in missing.into_iter().rev() {
            self.insert(at, path, Entry { kind: Kind::Dir, mode: 0o755, owner })?;
        }
        Ok(())
    }

    /// Plans one `COPY`/`ADD`: finds its sources, then lays each out under the destination.
    fn copy(&mut self, step: &CopyStep) -> Result<(), LayerError> {
        let at = At { instruction: if step.add { "ADD" } else { "COPY" }, line: step.line };
        let mut sources = Vec::new();
        for name in &step.sources {
            sources.extend(self.context.expand(at, name)?);
        }
        // BuildKit reads a destination `.` (or ending `/.`) as the directory too.
        let into_dir = step.dest.ends_with('/') || step.dest.ends_with("/.") || step.dest == ".";
        if sources.len() > 1 && !into_dir {
            return Err(LayerError::DestNotDirectory { at, count: sources.len(), dest: step.dest.clone() });
        }
        // The destination where its symlinks lead (`/bin/tool` -> `usr/bin/tool` on a merged-usr base),
        // as buildah writes it: `dest` for a directory (or into one), the link itself for a file whose
        // destination is a link (see below).
        let written = image_path(&step.dest);
        let dest = self.resolve(at, &written, true)?;
        let dest_file = self.resolve(at, &written, false)?;
        let owner = step.chown.unwrap_or(ROOT);
        let mode = |metadata: &Metadata| step.chmod.unwrap_or(metadata.mode()) & 0o7777;
        for source in sources {
            if source.metadata.is_dir() {
                // Its contents, then the destination directory (never the image's root: an entry for
                // it would override the base's). BuildKit makes a missing destination before it copies
                // into it, as `mkdir -p` with --chmod's mode or 0755, and never gives it the source
                // directory's own mode; one that exists (in the base, or made by this layer) it leaves
                // as it is. What the directory holds is laid out as it is, not through the base's
                // symlinks: a directory of it replaces a symlink of the base at its path, as buildah's
                // copier does (`COPY rootfs/ /` with a `bin/` makes a merged-usr `/bin` a directory).
                let existed = dest.as_os_str().is_empty() || self.exists(&dest);
                if let Some(parent) = dest.parent() {
                    self.make_parents(at, parent, owner)?;
                }
                self.walk(at, &source.real, &dest, owner, step.chmod)?;
                if !existed {
                    let mode = step.chmod.unwrap_or(0o755) & 0o7777;
                    self.insert(at, dest.clone(), Entry { kind: Kind::Dir, mode, owner })?;
                }
                continue;
            }
            if !source.metadata.is_file() {
                return Err(unsupported(at, &source.real, &source.metadata));
            }
            if step.add && self.context.is_archive_file(at, &source)? {
                return Err(LayerError::AddArchive { line: step.line, path: source.name });
            }
            // Into the destination when it is a directory, of the base or made by this layer (BuildKit
            // looks at what exists), a symlink to one too. A file replaces a symlink to anything else
            // (`/etc/localtime`). buildah copies into a dangling one as into a directory it makes; that
            // needs knowing the link leads to nothing rather than to a file of the base it did not keep
            // (see `BaseFiles::get`), so the link is replaced then.
            let basename = source.name.rsplit('/').next().unwrap_or(&source.name);
            let target = if into_dir || self.is_dir(&dest) || dest.as_os_str().is_empty() {
                dest.join(basename)
            } else {
                dest_file.clone()
            };
            if let Some(parent) = target.parent() {
                self.make_parents(at, parent, owner)?;
            }
            let kind = Kind::File { source: self.context.root.join(&source.real), at };
            self.insert(at, target, Entry { kind, mode: mode(&source.metadata), owner })?;
        }
        Ok(())
    }

    /// Lays out what directory `real` holds under `dest`, recursively, skipping what `.dockerignore`
    /// excludes. An excluded directory is kept only for something re-included below it. Whether
    /// anything was laid out.
    fn walk(&mut self, at: At, real: &Path, dest: &Path, owner: Owner, chmod: Option<u32>) -> Result<bool, LayerError> {
        let mut any = false;
        for name in self.context.read_dir(at, real)? {
            let (real, dest) = (real.join(&name), dest.join(&name));
            let path = self.context.root.join(&real);
            let metadata = fs::symlink_metadata(&path).map_err(|error| read_error(at, &path, error))?;
            let context_path = real.to_string_lossy();
            let excluded = self.context.ignore.excluded(&context_path);
            let mode = chmod.unwrap_or(metadata.mode()) & 0o7777;
            let kind = metadata.file_type();
            let entry = if kind.is_dir() {
                if excluded && !self.context.ignore.may_include_below(&context_path) {
                    continue;
                }
                // The children first: an excluded directory is laid out only if one of them is.
                if !self.walk(at, &real, &dest, owner, chmod)? && excluded {
                    continue;
                }
                Entry { kind: Kind::Dir, mode, owner }
            } else if excluded {
                continue;
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).map_err(|error| read_error(at, &path, error))?;
                Entry { kind: Kind::Symlink(target), mode: SYMLINK_MODE, owner }
            } else if kind.is_file() {
                Entry { kind: Kind::File { source: path, at }, mode, owner }
            } else {
                return Err(unsupported(at, &real, &metadata));
            };
            self.insert(at, dest, entry)?;
            any = true;
        }
        Ok(any)
    }

    /// Records an entry; a later one for the same path replaces it. A directory and a non-directory
    /// cannot replace each other, and nothing goes below a non-directory (Docker fails there too).
    fn insert(&mut self, at: At, path: PathBuf, entry: Entry) -> Result<(), LayerError> {
        let conflict = |path: &Path, problem| LayerError::Conflict { at, path: path.display().to_string(), problem };
        for ancestor in path.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()) {
            match self.entries.get(ancestor) {
                Some(entry) if !entry.is_dir() => {
                    return Err(conflict(ancestor, "is not a directory (an earlier step copied a file there)"));
                }
                // A symlink of the base is followed when the layer is extracted.
                None if self.base.get(ancestor) == Some(BaseKind::Other) => {
                    return Err(conflict(ancestor, "is not a directory (a file of the base image)"));
                }
                _ => {}
            }
        }
        match self.entries.get(&path) {
            Some(old) if old.is_dir() && !entry.is_dir() => {
                return Err(conflict(&path, "is a directory: a file cannot replace it"));
            }
            Some(old) if !old.is_dir() && entry.is_dir() => {
                return Err(conflict(&path, "is a file: a directory cannot replace it"));
            }
            _ => {}
        }
        self.entries.insert(path, entry);
        Ok(())
    }

    /// Streams the entries into a gzipped tar, hashing both as they pass.
    fn write<W: Write>(self, out: W) -> Result<LayerDigests, LayerError> {
        // No file name, mtime 0, OS "unknown" as Go writes it: the header depends on nothing.
        let gzip = GzBuilder::new().mtime(0).operating_system(255).write(Hashing::new(out), Compression::default());
        let mut tar = tar::Builder::new(Hashing::new(gzip));
        for (path, entry) in &self.entries {
            let mut header = Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(entry.owner.uid.into());
            header.set_gid(entry.owner.gid.into());
            header.set_mode(entry.mode);
            header.set_size(0);
            match &entry.kind {
                Kind::Dir => {
                    header.set_entry_type(EntryType::Directory);
                    let mut name = path.clone().into_os_string();
                    name.push("/");
                    tar.append_data(&mut header, &name, io::empty()).map_err(LayerError::Write)?;
                }
                Kind::Symlink(target) => {
                    header.set_entry_type(EntryType::Symlink);
                    tar.append_link(&mut header, path, target).map_err(LayerError::Write)?;
                }
                Kind::File { source, at } => {
                    let read = |error| read_error(*at, source, error);
                    let file = File::open(source).map_err(read)?;
                    let size = file.metadata().map_err(read)?.len();
                    header.set_entry_type(EntryType::Regular);
                    header.set_size(size);
                    let mut reader = Exact { file, remaining: size, failed: None };
                    if let Err(error) = tar.append_data(&mut header, path, &mut reader) {
                        return Err(match reader.failed {
                            Some(failed) => read(failed),
                            None => LayerError::Write(error),
                        });
                    }
                }
            }
        }
        let (gzip, diff_id, _) = tar.into_inner().map_err(LayerError::Write)?.finish();
        let (mut out, digest, size) = gzip.finish().map_err(LayerError::Write)?.finish();
        out.flush().map_err(LayerError::Write)?;
        Ok(LayerDigests { diff_id, digest, size })
    }
}

/// A destination in the image as a relative path without `.`/`..` (`/srv/./a/` -> `srv/a`; `/` -> empty).
fn image_path(dest: &str) -> PathBuf {
    PathBuf::from(clean(&format!("/{dest}")).trim_start_matches('/'))
}

pub(super) fn read_error(at: At, path: &Path, error: io::Error) -> LayerError {
    LayerError::Read { at, path: path.display().to_string(), error }
}

fn unsupported(at: At, real: &Path, metadata: &Metadata) -> LayerError {
    let kind = metadata.file_type();
    let kind = if kind.is_fifo() {
        "named pipe"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "device"
    } else {
        "special file"
    };
    LayerError::Unsupported { at, path: real.display().to_string(), kind }
}

/// Reads exactly `remaining` bytes of a file (the size its header announced): a file that shrank while
/// being read is an error rather than a corrupt tar. Keeps its own error, to tell it from the writer's.
struct Exact {
    file: File,
    remaining: u64,
    failed: Option<io::Error>,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let wanted = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if wanted == 0 {
            return Ok(0);
        }
        match self.file.read(&mut buf[..wanted]) {
            Ok(0) => {
                let kind = io::ErrorKind::UnexpectedEof;
                self.failed = Some(io::Error::new(kind, "the file shrank while the layer was written"));
                Err(kind.into())
            }
            Ok(read) => {
                self.remaining -= read as u64;
                Ok(read)
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => Err(error),
            Err(error) => {
                self.failed = Some(io::Error::new(error.kind(), error.to_string()));
                Err(error)
            }
        }
    }
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Hashing<W> {
        Hashing { inner, hasher: Sha256::new(), count: 0 }
    }

    /// The inner writer, `sha256:<hex>` of what went through, and its size.
    fn finish(self) -> (W, String, u64) {
        let hex: String = self.hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        (self.inner, format!("sha256:{hex}"), self.count)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.count += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::os::unix::net::UnixListener;

    use flate2::read::GzDecoder;

    use super::*;

    /// A build context in a temporary directory.
    struct TempContext(tempfile::TempDir);

    impl TempContext {
        fn new() -> TempContext {
            TempContext(tempfile::tempdir().unwrap())
        }

        fn path(&self, relative: &str) -> PathBuf {
            self.0.path().join(relative)
        }

        fn file(&self, relative: &str, contents: &str) -> &TempContext {
            let path = self.path(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, contents).unwrap();
            self.chmod(relative, 0o644)
        }

        fn dir(&self, relative: &str, mode: u32) -> &TempContext {
            fs::create_dir_all(self.path(relative)).unwrap();
            self.chmod(relative, mode)
        }

        fn chmod(&self, relative: &str, mode: u32) -> &TempContext {
            fs::set_permissions(self.path(relative), fs::Permissions::from_mode(mode)).unwrap();
            self
        }

        fn link(&self, relative: &str, target: &str) -> &TempContext {
            symlink(target, self.path(relative)).unwrap();
            self
        }

        fn layer(&self, copies: &[CopyStep], workdirs: &[&str]) -> Result<ReadBack, LayerError> {
            let workdirs: Vec<(String, Owner)> = workdirs.iter().map(|w| (w.to_string(), ROOT)).collect();
            self.layer_with(copies, &workdirs)
        }

        fn layer_with(&self, copies: &[CopyStep], workdirs: &[(String, Owner)]) -> Result<ReadBack, LayerError> {
            self.layer_on(copies, workdirs, &BaseFiles::default())
        }

        fn layer_on(
            &self,
            copies: &[CopyStep],
            workdirs: &[(String, Owner)],
            base: &BaseFiles,
        ) -> Result<ReadBack, LayerError> {
            let mut gzip = Vec::new();
            let digests = write_layer(self.0.path(), copies, workdirs, base, &mut gzip)?;
            Ok(ReadBack::read(digests, gzip))
        }
    }

    /// What a tar entry holds.
    #[derive(Debug, PartialEq, Eq)]
    struct Seen {
        kind: char,
        mode: u32,
        uid: u64,
        gid: u64,
        /// A file's contents, a symlink's target.
        data: String,
    }

    fn file(mode: u32, data: &str) -> Seen {
        Seen { kind: 'f', mode, uid: 0, gid: 0, data: data.into() }
    }

    fn dir(mode: u32) -> Seen {
        Seen { kind: 'd', mode, uid: 0, gid: 0, data: String::new() }
    }

    fn link(target: &str) -> Seen {
        Seen { kind: 'l', mode: 0o777, uid: 0, gid: 0, data: target.into() }
    }

    /// A layer read back, its digests checked against its bytes.
    struct ReadBack {
        digests: LayerDigests,
        entries: Vec<(String, Seen)>,
    }

    impl ReadBack {
        fn read(digests: LayerDigests, gzip: Vec<u8>) -> ReadBack {
            let mut tar = Vec::new();
            GzDecoder::new(&gzip[..]).read_to_end(&mut tar).unwrap();
            assert_eq!(digests.size, gzip.len() as u64);
            assert_eq!(digests.digest, sha256(&gzip));
            assert_eq!(digests.diff_id, sha256(&tar));
            // The fixed gzip header: no name flag, mtime 0, OS 255.
            assert_eq!(&gzip[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
            let mut entries = Vec::new();
            let mut archive = tar::Archive::new(&tar[..]);
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                let header = entry.header();
                assert_eq!(header.mtime().unwrap(), 0);
                assert_eq!(header.username_bytes(), Some(&b""[..]));
                assert_eq!(header.groupname_bytes(), Some(&b""[..]));
                let kind = match header.entry_type() {
                    EntryType::Regular => 'f',
                    EntryType::Directory => 'd',
                    EntryType::Symlink => 'l',
                    other => panic!("unexpected entry type {other:?}"),
                };
                let (mode, uid, gid) = (header.mode().unwrap(), header.uid().unwrap(), header.gid().unwrap());
                let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
                let mut data = String::new();
                if kind == 'l' {
                    data = entry.link_name().unwrap().unwrap().display().to_string();
                } else {
                    entry.read_to_string(&mut data).unwrap();
                }
                entries.push((path, Seen { kind, mode, uid, gid, data }));
            }
            ReadBack { digests, entries }
        }

        fn paths(&self) -> Vec<&str> {
            self.entries.iter().map(|(path, _)| path.as_str()).collect()
        }

        fn get(&self, path: &str) -> &Seen {
            let found = self.entries.iter().find(|(p, _)| p == path);
            &found.unwrap_or_else(|| panic!("no {path} in {:?}", self.paths())).1
        }
    }

    fn sha256(bytes: &[u8]) -> String {
        let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    fn copy(line: usize, sources: &[&str], dest: &str) -> CopyStep {
        let sources = sources.iter().map(|s| s.to_string()).collect();
        CopyStep { line, sources, dest: dest.into(), chown: None, chmod: None, add: false }
    }

    #[test]
    fn a_file_to_a_file_and_into_a_directory() {
        let context = TempContext::new();
        context.file("index.html", "<h1>hi</h1>\n");
        let layer = context.layer(&[copy(2, &["index.html"], "/srv/")], &[]).unwrap();
        // No entry for /srv: the unpacker makes it if the base has none, and keeps the base's if it has.
        assert_eq!(layer.entries, [("srv/index.html".into(), file(0o644, "<h1>hi</h1>\n"))]);
        let layer = context.layer(&[copy(2, &["./index.html"], "/srv/home.html")], &[]).unwrap();
        assert_eq!(layer.entries, [("srv/home.html".into(), file(0o644, "<h1>hi</h1>\n"))]);
        let layer = context.layer(&[copy(2, &["/index.html"], "/")], &[]).unwrap();
        assert_eq!(layer.paths(), ["index.html"]);
    }

    #[test]
    fn a_directory_copies_its_contents() {
        let context = TempContext::new();
        context.dir("site", 0o750).file("site/index.html", "i").file("site/css/a.css", "a").chmod("site/css", 0o700);
        let layer = context.layer(&[copy(3, &["site"], "/usr/share/nginx/html")], &[]).unwrap();
        assert_eq!(
            layer.entries,
            [
                // Made for the copy as BuildKit makes it: 0755, whatever the source's own mode.
                ("usr/share/nginx/html/".into(), dir(0o755)),
                ("usr/share/nginx/html/css/".into(), dir(0o700)),
                ("usr/share/nginx/html/css/a.css".into(), file(0o644, "a")),
                ("usr/share/nginx/html/index.html".into(), file(0o644, "i")),
            ]
        );
        // The context root's contents, into the image's root: no entry for `/` itself.
        let layer = context.layer(&[copy(3, &["."], "/")], &[]).unwrap();
        assert_eq!(layer.paths(), ["site/", "site/css/", "site/css/a.css", "site/index.html"]);
        let layer = context.layer(&[copy(3, &["."], "/app/")], &[]).unwrap();
        assert_eq!(layer.get("app/"), &dir(0o755));
        // A destination this layer made already (a WORKDIR, an earlier copy) stays as it was made.
        let app = Owner { uid: 1000, gid: 1000 };
        let chmod = CopyStep { chmod: Some(0o700), ..copy(3, &["site"], "/app/") };
        let layer = context.layer_with(&[chmod], &[("/app".into(), app)]).unwrap();
        assert_eq!(layer.get("app/"), &Seen { uid: 1000, gid: 1000, ..dir(0o755) });
        assert_eq!(layer.get("app/css/"), &dir(0o700));
    }

    #[test]
    fn wildcards_and_several_sources() {
        let context = TempContext::new();
        context.file("a.txt", "a").file("b.txt", "b").file("c.md", "c").file("sub/d.txt", "d");
        let layer = context.layer(&[copy(4, &["*.txt"], "/d/")], &[]).unwrap();
        assert_eq!(layer.paths(), ["d/a.txt", "d/b.txt"]);
        let layer = context.layer(&[copy(4, &["s?b/*.txt", "c.md"], "/d/")], &[]).unwrap();
        assert_eq!(layer.paths(), ["d/c.md", "d/d.txt"]);
        // One match and a destination without `/`: that file.
        let layer = context.layer(&[copy(4, &["[a]*.txt"], "/d")], &[]).unwrap();
        assert_eq!(layer.entries, [("d".into(), file(0o644, "a"))]);
        let error = context.layer(&[copy(4, &["*.txt"], "/d")], &[]).err().unwrap();
        assert!(matches!(error, LayerError::DestNotDirectory { count: 2, .. }), "{error:?}");
        assert_eq!(error.to_string(), "COPY at line 4: 2 sources need a destination that ends with `/`, not \"/d\"");
        let error = context.layer(&[copy(4, &["a.txt", "b.txt"], "/d")], &[]).err().unwrap();
        assert!(matches!(error, LayerError::DestNotDirectory { .. }), "{error:?}");
        let error = context.layer(&[copy(9, &["*.rs"], "/d/")], &[]).err().unwrap();
        assert_eq!(error.to_string(), "COPY at line 9: \"*.rs\" matches no file of the build context");
        let error = context.layer(&[copy(9, &["missing.txt"], "/d/")], &[]).err().unwrap();
        assert_eq!(error.to_string(), "COPY at line 9: \"missing.txt\" is not in the build context");
    }

    #[test]
    fn dockerignore_cuts_the_context() {
        let context = TempContext::new();
        context
            .file(".dockerignore", "# not shipped\n**/*.log\nsecret\nbuild\n!build/keep.txt\n")
            .file("app.js", "js")
            .file("debug.log", "x")
            .file("lib/deep/trace.log", "x")
            .file("lib/deep/util.js", "u")
            .file("secret", "s")
            .file("build/keep.txt", "k")
            .file("build/drop.txt", "d")
            .file("build/sub/drop.txt", "d");
        let layer = context.layer(&[copy(2, &["."], "/app/")], &[]).unwrap();
        assert_eq!(
            layer.paths(),
            [
                "app/",
                "app/.dockerignore",
                "app/app.js",
                "app/build/",
                "app/build/keep.txt",
                "app/lib/",
                "app/lib/deep/",
                "app/lib/deep/util.js",
            ]
        );
        let error = context.layer(&[copy(5, &["secret"], "/")], &[]).err().unwrap();
        assert!(matches!(&error, LayerError::NotFound { ignored: true, at: At { line: 5, .. }, .. }), "{error:?}");
        assert!(error.to_string().ends_with("(.dockerignore excludes it)"), "{error}");
        // A wildcard does not see what is excluded.
        let layer = context.layer(&[copy(2, &["*"], "/x/")], &[]).unwrap();
        assert!(!layer.paths().iter().any(|p| p.contains("secret") || p.ends_with(".log")), "{:?}", layer.paths());
    }

    #[test]
    fn symlinks_inside_a_directory_are_kept_as_symlinks() {
        let context = TempContext::new();
        context.file("site/index.html", "i").link("site/home.html", "index.html").link("site/passwd", "/etc/passwd");
        let layer = context.layer(&[copy(2, &["site/"], "/srv/")], &[]).unwrap();
        assert_eq!(layer.get("srv/home.html"), &link("index.html"));
        assert_eq!(layer.get("srv/passwd"), &link("/etc/passwd"));
        assert_eq!(layer.get("srv/index.html"), &file(0o644, "i"));
    }

    #[test]
    fn a_top_level_symlink_is_followed() {
        // A ConfigMap volume: each key a symlink through `..data` to a timestamped directory.
        let context = TempContext::new();
        context
            .file("..2026_01_01/index.html", "i")
            .link("..data", "..2026_01_01")
            .link("index.html", "..data/index.html");
        let layer = context.layer(&[copy(2, &["index.html"], "/srv/")], &[]).unwrap();
        assert_eq!(layer.entries, [("srv/index.html".into(), file(0o644, "i"))]);
        // A symlink to a directory: that directory's contents.
        context.dir("real", 0o755).file("real/a", "a").link("alias", "real");
        let layer = context.layer(&[copy(2, &["alias"], "/d/")], &[]).unwrap();
        assert_eq!(layer.paths(), ["d/", "d/a"]);
        // An absolute symlink into the context itself.
        let inside = context.path("real/a").canonicalize().unwrap();
        context.link("absolute", inside.to_str().unwrap());
        let layer = context.layer(&[copy(2, &["absolute"], "/d/")], &[]).unwrap();
        assert_eq!(layer.entries, [("d/absolute".into(), file(0o644, "a"))]);
    }

    #[test]
    fn empty_files_and_unusual_modes() {
        let context = TempContext::new();
        context.file("empty", "").file("suid", "#!/bin/sh\n").chmod("suid", 0o4755).file("private", "p");
        context.chmod("private", 0o600).dir("tree/sticky", 0o1777).file("tree/sticky/x", "x");
        let copies = [copy(2, &["empty", "suid", "private"], "/bin/"), copy(3, &["tree"], "/srv/")];
        let layer = context.layer(&copies, &[]).unwrap();
        assert_eq!(layer.get("bin/empty"), &file(0o644, ""));
        assert_eq!(layer.get("bin/suid"), &file(0o4755, "#!/bin/sh\n"));
        assert_eq!(layer.get("bin/private"), &file(0o600, "p"));
        assert_eq!(layer.get("srv/sticky/"), &dir(0o1777));
    }

    #[test]
    fn chown_and_chmod_apply_to_what_the_step_copies() {
        let context = TempContext::new();
        context.file("site/a", "a").file("site/sub/b", "b").link("site/l", "a").file("one", "1");
        let owner = Owner { uid: 1000, gid: 1001 };
        let step = CopyStep { chown: Some(owner), chmod: Some(0o640), ..copy(2, &["site"], "/srv/") };
        let plain = copy(3, &["one"], "/srv/one");
        let layer = context.layer(&[step, plain], &[]).unwrap();
        let owned = |seen: Seen| Seen { uid: 1000, gid: 1001, ..seen };
        assert_eq!(layer.get("srv/"), &owned(dir(0o640)));
        assert_eq!(layer.get("srv/sub/"), &owned(dir(0o640)));
        assert_eq!(layer.get("srv/sub/b"), &owned(file(0o640, "b")));
        assert_eq!(layer.get("srv/l"), &owned(link("a")), "a symlink keeps 0777, takes the owner");
        assert_eq!(layer.get("srv/one"), &file(0o644, "1"));
    }

    #[test]
    fn the_last_step_to_write_a_path_wins() {
        let context = TempContext::new();
        context.file("v1/config", "one").file("v2/config", "two").file("v1/only", "o");
        let copies = [copy(2, &["v1/config"], "/etc/app.conf"), copy(3, &["v2/config"], "/etc/app.conf")];
        let layer = context.layer(&copies, &[]).unwrap();
        assert_eq!(layer.entries, [("etc/app.conf".into(), file(0o644, "two"))]);
        let copies = [copy(2, &["v1"], "/etc/app/"), copy(3, &["v2"], "/etc/app/")];
        let layer = context.layer(&copies, &[]).unwrap();
        assert_eq!(layer.paths(), ["etc/app/", "etc/app/config", "etc/app/only"]);
        assert_eq!(layer.get("etc/app/config").data, "two");
        // A file where a directory was copied: Docker fails too.
        let copies = [copy(2, &["v1/config"], "/etc/x"), copy(3, &["v1"], "/etc/x/")];
        let error = context.layer(&copies, &[]).err().unwrap();
        assert!(
            matches!(&error, LayerError::Conflict { at: At { line: 3, .. }, path, .. } if path == "etc/x"),
            "{error:?}"
        );
    }

    #[test]
    fn workdirs_get_directory_entries() {
        let context = TempContext::new();
        context.file("a.txt", "a");
        let layer = context.layer(&[copy(3, &["a.txt"], "/app")], &["/app", "/", "/var/lib/data/"]).unwrap();
        // `/app` is a directory of this layer: a file copied to it goes into it, as Docker does.
        assert_eq!(
            layer.entries,
            [("app/".into(), dir(0o755)), ("app/a.txt".into(), file(0o644, "a")), ("var/lib/data/".into(), dir(0o755))]
        );
        let layer = context.layer(&[], &["/"]).unwrap();
        assert!(layer.entries.is_empty());
    }

    #[test]
    fn a_workdir_belongs_to_the_user_it_was_made_for() {
        let context = TempContext::new();
        let app = Owner { uid: 1000, gid: 1000 };
        let workdirs = [("/srv/app".to_string(), app), ("/first".into(), ROOT), ("/srv/app".into(), ROOT)];
        let base = BaseFiles::with(&[("srv", "d")]);
        let layer = context.layer_on(&[], &workdirs, &base).unwrap();
        // The second WORKDIR /srv/app finds it made: it stays the first one's, as `mkdir -p` leaves it.
        let owned = |mode| Seen { uid: 1000, gid: 1000, ..dir(mode) };
        assert_eq!(layer.entries, [("first/".into(), dir(0o755)), ("srv/app/".into(), owned(0o755))]);
        // Where the base has no /srv, WORKDIR makes it too, for the same user.
        let layer = context.layer_with(&[], &workdirs[..1]).unwrap();
        assert_eq!(layer.entries, [("srv/".into(), owned(0o755)), ("srv/app/".into(), owned(0o755))]);
    }

    #[test]
    fn what_the_base_has_is_left_as_it_is_and_copied_into() {
        let context = TempContext::new();
        context.file("site/index.html", "i").dir("site", 0o750).file("file.txt", "f");
        let base = BaseFiles::with(&[("tmp", "d"), ("srv", "d"), ("bin", "d"), ("bin/sh", "f")]);
        let copies = [copy(3, &["site"], "/tmp/"), copy(4, &["file.txt"], "/srv"), copy(5, &["file.txt"], "/tmp")];
        let layer = context.layer_on(&copies, &[("/tmp".into(), ROOT)], &base).unwrap();
        // No entry for /tmp (a WORKDIR and a COPY's destination) nor /srv: their modes stay the base's.
        assert_eq!(
            layer.entries,
            [
                ("srv/file.txt".into(), file(0o644, "f")),
                ("tmp/file.txt".into(), file(0o644, "f")),
                ("tmp/index.html".into(), file(0o644, "i")),
            ]
        );
        // Without the base's files, the same steps make /tmp and replace /srv.
        let layer = context.layer_on(&copies, &[("/tmp".into(), ROOT)], &BaseFiles::default()).unwrap();
        assert_eq!(layer.paths(), ["srv", "tmp/", "tmp/file.txt", "tmp/index.html"]);
        let error = context.layer_on(&[copy(6, &["file.txt"], "/bin/sh/x")], &[], &base).err().unwrap();
        assert_eq!(error.to_string(), "COPY at line 6: /bin/sh is not a directory (a file of the base image)");
    }

    /// Each case as buildah 1.28 built it on this base (`buildah build`, the new layer listed).
    #[test]
    fn destinations_follow_the_symlinks_of_the_base_as_buildah_does() {
        let context = TempContext::new();
        context.file("tool", "t").file("dir/a", "a").file("dir/sub/b", "b").file("tree/bin/x", "x");
        let base = BaseFiles::with(&[
            ("bin", "->usr/bin"),
            ("usr/bin", "d"),
            ("usr/lib", "d"),
            ("usr/share", "d"),
            ("var/run", "->../run"),
            ("run", "d"),
            ("abs", "->/usr/lib"),
            ("c1", "->c2"),
            ("c2", "->usr/share"),
            ("out", "->../../../../opt"),
            ("opt", "d"),
            ("loop1", "->loop2"),
            ("loop2", "->loop1"),
            ("dang", "->nonexist/dir"),
            ("linkfile", "->etc/file"),
            ("etc/file", "f"),
        ]);
        let paths = |copies: &[CopyStep], workdirs: &[(String, Owner)]| {
            let layer = context.layer_on(copies, workdirs, &base).unwrap();
            layer.entries.iter().map(|(path, seen)| format!("{path} {}:{}", seen.uid, seen.gid)).collect::<Vec<_>>()
        };
        let root = |workdir: &str| (workdir.to_string(), ROOT);
        // Parents, a destination that is a link to a directory (with or without `/`), relative,
        // absolute, chained and escaping links.
        for dest in ["/bin/tool", "/bin/", "/bin"] {
            assert_eq!(paths(&[copy(2, &["tool"], dest)], &[]), ["usr/bin/tool 0:0"], "{dest}");
        }
        assert_eq!(paths(&[copy(2, &["tool"], "/abs/x")], &[]), ["usr/lib/x 0:0"]);
        assert_eq!(paths(&[copy(2, &["tool"], "/c1/")], &[]), ["usr/share/tool 0:0"]);
        assert_eq!(paths(&[copy(2, &["tool"], "/out/")], &[]), ["opt/tool 0:0"]);
        assert_eq!(
            paths(&[copy(2, &["dir/"], "/var/run/app/")], &[]),
            ["run/app/ 0:0", "run/app/a 0:0", "run/app/sub/ 0:0", "run/app/sub/b 0:0"]
        );
        assert_eq!(paths(&[copy(2, &["dir"], "/var/run")], &[]), ["run/a 0:0", "run/sub/ 0:0", "run/sub/b 0:0"]);
        // New parents below a link, for the owner they are made for.
        let chowned = CopyStep { chown: Some(Owner { uid: 1000, gid: 1000 }), ..copy(2, &["tool"], "/bin/sub/new/") };
        assert_eq!(
            paths(&[chowned], &[]),
            ["usr/bin/sub/ 1000:1000", "usr/bin/sub/new/ 1000:1000", "usr/bin/sub/new/tool 1000:1000"]
        );
        // WORKDIRs: where the link leads, made for the USER; one that is a link to a directory is left
        // as it is; a dangling one makes its target.
        let user = ("/var/run/w/x".to_string(), Owner { uid: 1000, gid: 1000 });
        assert_eq!(
            paths(&[], &[root("/var/run/work"), user]),
            ["run/w/ 1000:1000", "run/w/x/ 1000:1000", "run/work/ 0:0"]
        );
        assert_eq!(paths(&[], &[root("/bin")]), Vec::<String>::new());
        assert_eq!(paths(&[], &[root("/dang")]), ["nonexist/dir/ 0:0"]);
        assert_eq!(paths(&[copy(2, &["tool"], "/dang/x")], &[]), ["nonexist/dir/x 0:0"]);
        // A file replaces a link to a file. What a directory holds is laid out as it is: its `bin/`
        // replaces the link.
        assert_eq!(paths(&[copy(2, &["tool"], "/linkfile")], &[]), ["linkfile 0:0"]);
        assert_eq!(paths(&[copy(2, &["tree/"], "/")], &[]), ["bin/ 0:0", "bin/x 0:0"]);
        // ... and a later step finds the directory there.
        let copies = [copy(2, &["tree/"], "/"), copy(3, &["tool"], "/bin/")];
        assert_eq!(paths(&copies, &[]), ["bin/ 0:0", "bin/tool 0:0", "bin/x 0:0"]);
        // A loop.
        let error = context.layer_on(&[copy(7, &["tool"], "/loop1/x")], &[], &base).err().unwrap();
        assert_eq!(
            error.to_string(),
            "COPY at line 7: /loop1/x: too many levels of symbolic links (a loop, or more than 255) in the image"
        );
    }

    #[test]
    fn new_parents_belong_to_the_owner_they_are_made_for() {
        let context = TempContext::new();
        context.file("nested.txt", "n");
        let owner = Owner { uid: 1003, gid: 1004 };
        let owned = Seen { uid: 1003, gid: 1004, ..dir(0o755) };
        let chowned = |dest: &str| CopyStep { chown: Some(owner), ..copy(2, &["nested.txt"], dest) };
        let layer = context.layer(&[chowned("/home/app/deep/")], &[]).unwrap();
        assert_eq!(layer.paths(), ["home/", "home/app/", "home/app/deep/", "home/app/deep/nested.txt"]);
        assert!(layer.entries[..3].iter().all(|(_, seen)| *seen == owned));
        // A parent of the base, or one an earlier step implied (root's), is left as it is.
        let base = BaseFiles::with(&[("home", "d")]);
        let copies = [copy(2, &["nested.txt"], "/home/root/x"), chowned("/home/app/"), chowned("/home/root/y/")];
        let layer = context.layer_on(&copies, &[], &base).unwrap();
        let paths = ["home/app/", "home/app/nested.txt", "home/root/x", "home/root/y/", "home/root/y/nested.txt"];
        assert_eq!(layer.paths(), paths);
        // Root's new parents stay implicit, as before the base was read; a directory copied onto one
        // leaves it as it is.
        context.file("d/f", "f");
        let copies = [copy(2, &["nested.txt"], "/a/b/"), CopyStep { chown: Some(owner), ..copy(3, &["d"], "/a") }];
        let layer = context.layer(&copies, &[]).unwrap();
        assert_eq!(layer.paths(), ["a/b/nested.txt", "a/f"]);
    }

    #[test]
    fn the_paths_to_know_are_destinations_workdirs_and_their_parents() {
        let copies = [copy(2, &["a"], "/srv/www/"), copy(3, &["b"], "/")];
        let workdirs = [("/home/app".to_string(), ROOT)];
        let paths: Vec<PathBuf> = paths_to_know(&copies, &workdirs).into_iter().collect();
        let expected: Vec<PathBuf> = ["home", "home/app", "srv", "srv/www"].iter().map(PathBuf::from).collect();
        assert_eq!(paths, expected);
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let context = TempContext::new();
        context.file("site/b", "b").file("site/a", "a").dir("site/c", 0o755).link("site/d", "a");
        let copies = [copy(2, &["site"], "/srv/")];
        let first = context.layer(&copies, &["/srv"]).unwrap();
        // Times are not in the layer.
        let old = fs::File::options().write(true).open(context.path("site/a")).unwrap();
        old.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)).unwrap();
        let second = context.layer(&copies, &["/srv"]).unwrap();
        assert_eq!(first.digests, second.digests);
        context.chmod("site/a", 0o755);
        let changed = context.layer(&copies, &["/srv"]).unwrap();
        assert_ne!(first.digests.diff_id, changed.digests.diff_id);
        assert_ne!(first.digests.digest, changed.digests.digest);
    }

    #[test]
    fn long_names_and_link_targets() {
        let context = TempContext::new();
        let long = format!("{}/{}", "d".repeat(90), "f".repeat(60));
        context.file(&long, "deep").link("l", &"t".repeat(150));
        let layer = context.layer(&[copy(2, &["."], "/")], &[]).unwrap();
        assert_eq!(layer.get(&long), &file(0o644, "deep"));
        assert_eq!(layer.get("l"), &link(&"t".repeat(150)));
    }

    #[test]
    fn hard_links_are_separate_files() {
        let context = TempContext::new();
        context.file("a", "same");
        fs::hard_link(context.path("a"), context.path("b")).unwrap();
        let layer = context.layer(&[copy(2, &["."], "/x/")], &[]).unwrap();
        assert_eq!(layer.get("x/a"), &file(0o644, "same"));
        assert_eq!(layer.get("x/b"), &file(0o644, "same"));
    }

    #[test]
    fn special_files_are_refused() {
        let context = TempContext::new();
        context.dir("run", 0o755);
        let _socket = UnixListener::bind(context.path("run/app.sock")).unwrap();
        let error = context.layer(&[copy(6, &["run"], "/run/")], &[]).err().unwrap();
        assert_eq!(
            error.to_string(),
            "COPY at line 6: run/app.sock is a socket: only files, directories and symlinks can be copied"
        );
    }

    #[test]
    fn add_of_an_archive_is_refused() {
        let context = TempContext::new();
        let mut tarball = tar::Builder::new(Vec::new());
        let mut header = Header::new_ustar();
        header.set_size(1);
        tarball.append_data(&mut header, "x", &b"x"[..]).unwrap();
        fs::write(context.path("site.tar"), tarball.into_inner().unwrap()).unwrap();
        fs::write(context.path("site.tgz"), [0x1f, 0x8b, 8, 0]).unwrap();
        context.file("plain.txt", "not an archive");
        let add = |sources: &[&str]| CopyStep { add: true, ..copy(7, sources, "/srv/") };
        for archive in ["site.tar", "site.tgz"] {
            let error = context.layer(&[add(&[archive])], &[]).err().unwrap();
            assert_eq!(
                error.to_string(),
                format!("ADD at line 7: {archive} is an archive, which ADD extracts: that needs a builder")
            );
        }
        let layer = context.layer(&[add(&["plain.txt"])], &[]).unwrap();
        assert_eq!(layer.paths(), ["srv/plain.txt"]);
        // COPY never extracts.
        let layer = context.layer(&[copy(7, &["site.tar"], "/srv/")], &[]).unwrap();
        assert_eq!(layer.paths(), ["srv/site.tar"]);
    }

    #[test]
    fn archive_magic() {
        assert!(is_archive(&[0x1f, 0x8b, 0x08]));
        assert!(is_archive(b"BZh91AY&SY"));
        assert!(is_archive(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]));
        assert!(is_archive(&[0x28, 0xb5, 0x2f, 0xfd, 0]));
        let mut tar = vec![0; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        assert!(is_archive(&tar));
        assert!(!is_archive(b"<html></html>"));
        assert!(!is_archive(&[0x1f]));
        assert!(!is_archive(&tar[..260]));
    }
}
