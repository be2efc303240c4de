//! What the base image has at the paths the new layer touches: a directory, a symlink (and where to),
//! something else, or nothing. A builder looks at the base's files before it writes (a `WORKDIR` that
//! exists is left as it is, a file copied onto a directory goes into it, a destination below a symlink
//! lands where the link leads); `assemble` reads the base's layers' tar headers for the same answers.
//!
//! Every directory and symlink is kept (a destination may lead anywhere through a link: `/bin` ->
//! `usr/bin`), other files only under the names of the paths asked about, so that memory grows with the
//! base's directories and links, not with its files; the reading is bounded by a [`Budget`]. Layers are
//! applied in order with the OCI whiteouts (`.wh.<name>` deletes a lower path, `.wh..wh..opq` empties a
//! lower directory).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read};
use std::ops::Bound;
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

/// One path of the base's final file system.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    Symlink(PathBuf),
    Other,
}

impl Node {
    fn kind(&self) -> BaseKind {
        match self {
            Node::Dir => BaseKind::Dir,
            Node::Symlink(_) => BaseKind::Symlink,
            Node::Other => BaseKind::Other,
        }
    }
}

/// The base image's directories and symlinks, and its other files under the names wanted (paths
/// relative to `/`, as [`crate::assemble::layer`] names them); `FROM scratch` has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BaseFiles {
    /// The last components of the paths asked about. A file of the base matters only where the layer
    /// writes: at a path asked about, or below a link on one, where it keeps its name (`/bin/tool`
    /// -> `usr/bin/tool`); only a link's own target may be named otherwise (see [`BaseFiles::get`]).
    names: BTreeSet<OsString>,
    nodes: BTreeMap<PathBuf, Node>,
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
    #[error("a layer of the base image is not a readable tar: {0}")]
    Tar(#[source] io::Error),
}

impl BaseFiles {
    /// An empty view that will keep what the layers say about `wanted` (and every directory and
    /// symlink).
    pub fn knowing(wanted: BTreeSet<PathBuf>) -> BaseFiles {
        let names = wanted.iter().filter_map(|path| path.file_name()).map(OsString::from).collect();
        BaseFiles { names, nodes: BTreeMap::new() }
    }

    /// What the base has at `path`, the path itself (a symlink is not followed). A file that is not
    /// a directory or symlink reads as nothing unless its name is that of a path asked about: a file
    /// reached only through a link to another name (`COPY dir /conf`, `/conf -> etc/app.conf`) is not
    /// known, and the layer then writes a directory where buildah would refuse.
    pub fn get(&self, path: &Path) -> Option<BaseKind> {
        self.nodes.get(path).map(Node::kind)
    }

    /// The target of the symlink at `path`, as written in the base, if `path` is one.
    pub fn link(&self, path: &Path) -> Option<&Path> {
        match self.nodes.get(path) {
            Some(Node::Symlink(target)) => Some(target),
            _ => None,
        }
    }

    /// Applies one layer blob (a tar: gzipped, zstd-compressed or plain) on top of the layers before it,
    /// reading it to its end, and takes what it reads from `budget`.
    pub fn apply_layer<R: Read>(&mut self, blob: R, budget: &mut Budget) -> Result<(), BaseFilesError> {
        let mut blob = BufReader::new(blob);
        let magic = blob.fill_buf().map_err(BaseFilesError::Tar)?;
        let tar: Box<dyn Read + '_> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(MultiGzDecoder::new(blob))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || is_skippable_frame(magic) {
            Box::new(zstd::stream::read::Decoder::with_buffer(blob).map_err(BaseFilesError::Tar)?)
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
            let node = match entry.header().entry_type() {
                EntryType::Directory => Node::Dir,
                EntryType::Symlink => {
                    Node::Symlink(entry.link_name().map_err(too_large)?.map(|t| t.into_owned()).unwrap_or_default())
                }
                _ => Node::Other,
            };
            layer.add(path, node);
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
            self.nodes.remove(gone);
            self.remove_below(gone);
        }
        for emptied in &layer.opaques {
            self.remove_below(emptied);
        }
        for (path, node) in layer.added {
            if node != Node::Dir {
                self.remove_below(&path);
            }
            // A tar may leave out a path's parents: extracting it makes them directories. Those of a
            // known path are known.
            for parent in path.ancestors().skip(1).filter(|p| !p.as_os_str().is_empty()) {
                if self.nodes.contains_key(parent) {
                    break;
                }
                self.nodes.insert(parent.to_path_buf(), Node::Dir);
            }
            let named = path.file_name().is_some_and(|name| self.names.contains(name));
            if node == Node::Other && !named {
                self.nodes.remove(&path);
            } else if !(node == Node::Dir && self.nodes.get(&path) == Some(&Node::Dir)) {
                self.nodes.insert(path, node);
            }
        }
    }

    /// Forgets what is below `path` (not `path` itself): `PathBuf`s order by component, so that is the
    /// run of keys right after it that start with it.
    fn remove_below(&mut self, path: &Path) {
        let below: Vec<PathBuf> = self
            .nodes
            .range::<Path, _>((Bound::Excluded(path), Bound::Unbounded))
            .take_while(|(below, _)| below.starts_with(path))
            .map(|(below, _)| below.clone())
            .collect();
        for below in below {
            self.nodes.remove(&below);
        }
    }

    /// A view of `entries`: a kind, or `->target` for a symlink.
    #[cfg(test)]
    pub fn with(entries: &[(&str, &str)]) -> BaseFiles {
        let node = |kind: &str| match kind {
            "d" => Node::Dir,
            "f" => Node::Other,
            target => Node::Symlink(PathBuf::from(target.trim_start_matches("->"))),
        };
        let mut nodes: BTreeMap<PathBuf, Node> = entries.iter().map(|(p, k)| (PathBuf::from(p), node(k))).collect();
        let names = nodes.keys().filter_map(|p| p.file_name()).map(OsString::from).collect();
        // As a layer's tar makes them: the parents of what it holds are directories.
        let parents: Vec<PathBuf> = nodes
            .keys()
            .flat_map(|p| p.ancestors().skip(1))
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .collect();
        for parent in parents {
            nodes.entry(parent).or_insert(Node::Dir);
        }
        BaseFiles { names, nodes }
    }
}

/// One layer's entries, applied once it is read whole: its whiteouts concern the layers below it only.
#[derive(Default)]
struct LayerChanges {
    whiteouts: Vec<PathBuf>,
    opaques: Vec<PathBuf>,
    added: Vec<(PathBuf, Node)>,
}

impl LayerChanges {
    fn add(&mut self, path: PathBuf, node: Node) {
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
            self.added.push((path, node));
        }
    }
}

/// A zstd skippable frame's magic number (0x184D2A50 to 0x184D2A5F, little-endian): zstd:chunked
/// layers may begin with one.
fn is_skippable_frame(magic: &[u8]) -> bool {
    matches!(magic, [first, 0x2a, 0x4d, 0x18, ..] if first & 0xf0 == 0x50)
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

    /// A tar of `(path, type)`: `d` directory, `l` symlink (`path->target`, else to `target`), `f`
    /// file.
    fn tar(entries: &[(&str, char)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind) in entries {
            let (path, target) = path.split_once("->").unwrap_or((path, "target"));
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_mode(0o755);
            header.set_entry_type(match kind {
                'd' => EntryType::Directory,
                'l' => EntryType::Symlink,
                _ => EntryType::Regular,
            });
            if *kind == 'l' {
                builder.append_link(&mut header, path, target).unwrap();
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
    fn symlinks_are_kept_with_their_targets_until_a_later_layer_replaces_them() {
        let mut files = knowing(&["bin/tool"]);
        let mut budget = Budget::default();
        let first = tar(&[
            ("bin->usr/bin", 'l'),
            ("usr/bin/sh", 'f'),
            ("var/run->../run", 'l'),
            ("lib->/usr/lib", 'l'),
            ("sbin->usr/sbin", 'l'),
            ("opt/old->x", 'l'),
            ("etc/tool", 'f'),
        ]);
        files.apply_layer(&first[..], &mut budget).unwrap();
        assert_eq!(files.link(Path::new("bin")), Some(Path::new("usr/bin")));
        assert_eq!(files.link(Path::new("var/run")), Some(Path::new("../run")));
        assert_eq!(files.link(Path::new("lib")), Some(Path::new("/usr/lib")));
        // Every directory is known; a file only under a name asked about.
        assert_eq!(
            kinds(&files, &["usr/bin", "var", "usr/bin/sh", "etc/tool"]),
            [Some(BaseKind::Dir), Some(BaseKind::Dir), None, Some(BaseKind::Other)]
        );
        // A whiteout deletes a link, a directory replaces one, an opaque directory forgets those below
        // it, a file replaces one.
        let second = tar(&[(".wh.bin", 'f'), ("lib/", 'd'), ("opt/.wh..wh..opq", 'f'), ("sbin", 'f')]);
        files.apply_layer(&second[..], &mut budget).unwrap();
        assert_eq!(
            kinds(&files, &["bin", "lib", "opt", "opt/old", "sbin"]),
            [None, Some(BaseKind::Dir), Some(BaseKind::Dir), None, None]
        );
        assert_eq!(files.link(Path::new("lib")), None);
        // A later layer's link replaces a directory and what it held.
        let third = tar(&[("usr->/opt", 'l')]);
        files.apply_layer(&third[..], &mut budget).unwrap();
        assert_eq!(files.link(Path::new("usr")), Some(Path::new("/opt")));
        assert_eq!(files.get(Path::new("usr/bin")), None);
        assert_eq!(files.link(Path::new("var/run")), Some(Path::new("../run")));
    }

    /// zstd as buildah and containerd write it (one frame) and as zstd:chunked does (a frame per part,
    /// skippable frames of metadata).
    #[test]
    fn zstd_layers_are_read() {
        let layer = tar(&[("etc", 'd'), ("etc/app.conf", 'f'), ("srv->/var/srv", 'l')]);
        let one_frame = zstd::encode_all(&layer[..], 3).unwrap();
        let (head, tail) = layer.split_at(700);
        let skippable = [&[0x5e, 0x2a, 0x4d, 0x18, 3, 0, 0, 0][..], b"abc"].concat();
        let chunked =
            [skippable.clone(), zstd::encode_all(head, 3).unwrap(), zstd::encode_all(tail, 3).unwrap(), skippable]
                .concat();
        for blob in [one_frame, chunked] {
            let mut files = knowing(&["etc", "app.conf", "srv"]);
            files.apply_layer(&blob[..], &mut Budget::default()).unwrap();
            assert_eq!(kinds(&files, &["etc", "etc/app.conf"]), [Some(BaseKind::Dir), Some(BaseKind::Other)]);
            assert_eq!(files.link(Path::new("srv")), Some(Path::new("/var/srv")));
        }
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
        assert!(matches!(files.apply_layer(&b"not a tar"[..], &mut Budget::default()), Err(BaseFilesError::Tar(_))));
    }
}
