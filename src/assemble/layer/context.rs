//! The build context as a builder would be sent it: its root, its `.dockerignore`, and what a `COPY`
//! source names in it (wildcards expanded, symlinks on the source's own path followed, never out of
//! the root).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use super::dockerignore::{Dockerignore, SegmentPattern, clean, has_wildcards};
use super::{At, LayerError, is_archive, read_error};

/// Linux's limit on the symlinks one path lookup follows.
const MAX_SYMLINKS: usize = 40;

/// A source of a step, found in the context: the name it was matched by (for messages and the
/// destination's basename) and where it really is (relative to the root, no symlink in it).
pub(super) struct Source {
    pub name: String,
    pub real: PathBuf,
    pub metadata: Metadata,
}

pub(super) struct Context {
    pub root: PathBuf,
    /// The root with every symlink resolved: an absolute symlink target is inside the context when it
    /// starts with this (or with `root`).
    real_root: PathBuf,
    pub ignore: Dockerignore,
}

impl Context {
    pub(super) fn open(root: &Path) -> Result<Context, LayerError> {
        let context = |path: &Path, error| LayerError::Context { path: path.display().to_string(), error };
        let real_root = fs::canonicalize(root).map_err(|error| context(root, error))?;
        let ignore_file = root.join(".dockerignore");
        let ignore = match fs::read_to_string(&ignore_file) {
            Ok(text) => Dockerignore::parse(&text)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Dockerignore::default(),
            Err(error) => return Err(context(&ignore_file, error)),
        };
        Ok(Context { root: root.to_path_buf(), real_root, ignore })
    }

    /// The sources one written source names: itself, or what its wildcards match (sorted by name).
    pub(super) fn expand(&self, at: At, name: &str) -> Result<Vec<Source>, LayerError> {
        let relative = clean(name.trim_start_matches('/'));
        if relative == ".." || relative.starts_with("../") {
            return Err(LayerError::OutsideContext { at, name: name.to_string() });
        }
        let relative = if relative == "." { String::new() } else { relative };
        if !has_wildcards(&relative) {
            let found = self.resolve(at, &relative, name)?;
            return match found {
                Some(source) if self.visible(&source) => Ok(vec![source]),
                found => Err(LayerError::NotFound { at, name: name.to_string(), ignored: found.is_some() }),
            };
        }
        let mut candidates = vec![String::new()];
        for segment in relative.split('/') {
            if !has_wildcards(segment) {
                candidates.iter_mut().for_each(|c| *c = join(c, segment));
                continue;
            }
            let pattern = SegmentPattern::new(segment).map_err(|error| LayerError::Pattern { at, error })?;
            let mut matched = Vec::new();
            for candidate in &candidates {
                let Some(dir) = self.resolve(at, candidate, name)?.filter(|s| s.metadata.is_dir()) else { continue };
                for child in self.read_dir(at, &dir.real)? {
                    match child.to_str() {
                        Some(child) if pattern.matches(child) => matched.push(join(candidate, child)),
                        _ => {}
                    }
                }
            }
            candidates = matched;
        }
        let mut sources = Vec::new();
        for candidate in candidates {
            sources.extend(self.resolve(at, &candidate, name)?.filter(|s| self.visible(s)));
        }
        if sources.is_empty() {
            return Err(LayerError::NoMatch { at, name: name.to_string() });
        }
        Ok(sources)
    }

    /// Whether the context a builder would be sent holds this source: neither its name nor the file it
    /// resolves to excluded, or a directory with something re-included below it.
    fn visible(&self, source: &Source) -> bool {
        let real = source.real.to_string_lossy();
        [source.name.as_str(), &real].iter().all(|path| {
            path.is_empty()
                || !self.ignore.excluded(path)
                || (source.metadata.is_dir() && self.ignore.may_include_below(path))
        })
    }

    /// Follows `relative` (clean, `/`-separated) from the root, resolving every symlink on the way
    /// inside the context (Docker follows a source's own path). `None` when nothing is there.
    pub(super) fn resolve(&self, at: At, relative: &str, name: &str) -> Result<Option<Source>, LayerError> {
        let outside = || LayerError::OutsideContext { at, name: name.to_string() };
        let mut pending: VecDeque<OsString> =
            relative.split('/').filter(|p| !p.is_empty()).map(OsString::from).collect();
        let mut real = PathBuf::new();
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            if part == ".." {
                if !real.pop() {
                    return Err(outside());
                }
                continue;
            }
            let path = self.root.join(&real).join(&part);
            let metadata = match fs::symlink_metadata(&path) {
                Ok(metadata) => metadata,
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                    return Ok(None);
                }
                Err(error) => return Err(LayerError::Read { at, path: path.display().to_string(), error }),
            };
            if !metadata.file_type().is_symlink() {
                real.push(part);
                continue;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(LayerError::SymlinkLoop { at, name: name.to_string() });
            }
            let target = fs::read_link(&path).map_err(|error| read_error(at, &path, error))?;
            let target = if target.is_absolute() {
                real = PathBuf::new();
                let inside = target.strip_prefix(&self.real_root).or_else(|_| target.strip_prefix(&self.root));
                inside.map_err(|_| outside())?.to_path_buf()
            } else {
                target
            };
            for component in target.components().rev() {
                match component {
                    Component::Normal(part) => pending.push_front(part.to_os_string()),
                    Component::ParentDir => pending.push_front(OsString::from("..")),
                    _ => {}
                }
            }
        }
        let path = self.root.join(&real);
        let metadata = fs::metadata(&path).map_err(|error| read_error(at, &path, error))?;
        Ok(Some(Source { name: relative.to_string(), real, metadata }))
    }

    /// The names in a context directory, sorted (the file system's order is no order).
    pub(super) fn read_dir(&self, at: At, real: &Path) -> Result<Vec<OsString>, LayerError> {
        let path = self.root.join(real);
        let read = |error| read_error(at, &path, error);
        let mut names = Vec::new();
        for child in fs::read_dir(&path).map_err(read)? {
            names.push(child.map_err(read)?.file_name());
        }
        names.sort();
        Ok(names)
    }

    pub(super) fn is_archive_file(&self, at: At, source: &Source) -> Result<bool, LayerError> {
        let path = self.root.join(&source.real);
        let mut prefix = Vec::with_capacity(512);
        let file = File::open(&path).map_err(|error| read_error(at, &path, error))?;
        file.take(512).read_to_end(&mut prefix).map_err(|error| read_error(at, &path, error))?;
        Ok(is_archive(&prefix))
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    const AT: At = At { instruction: "COPY", line: 3 };

    /// A context `ctx/` inside a temporary directory that also holds a file outside it.
    fn context() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctx");
        fs::create_dir_all(root.join("src/lib")).unwrap();
        fs::write(dir.path().join("outside.txt"), "secret").unwrap();
        for file in ["src/main.rs", "src/lib/a.rs", "src/lib/b.rs", "README.md"] {
            fs::write(root.join(file), file).unwrap();
        }
        (dir, root)
    }

    fn names(context: &Context, source: &str) -> Vec<(String, String)> {
        let sources = context.expand(AT, source).unwrap();
        sources.into_iter().map(|s| (s.name, s.real.display().to_string())).collect()
    }

    fn pair(name: &str, real: &str) -> (String, String) {
        (name.to_string(), real.to_string())
    }

    #[test]
    fn sources_are_relative_to_the_root() {
        let (_dir, root) = context();
        let context = Context::open(&root).unwrap();
        for written in ["README.md", "/README.md", "./README.md", "src/../README.md"] {
            assert_eq!(names(&context, written), [pair("README.md", "README.md")], "{written}");
        }
        assert_eq!(names(&context, "."), [pair("", "")]);
        assert_eq!(names(&context, "/"), [pair("", "")]);
    }

    #[test]
    fn wildcards_match_per_segment_sorted() {
        let (_dir, root) = context();
        symlink("src/lib", root.join("lib-link")).unwrap();
        let context = Context::open(&root).unwrap();
        assert_eq!(
            names(&context, "src/lib/*.rs"),
            [pair("src/lib/a.rs", "src/lib/a.rs"), pair("src/lib/b.rs", "src/lib/b.rs")]
        );
        assert_eq!(names(&context, "*/main.rs"), [pair("src/main.rs", "src/main.rs")]);
        assert_eq!(names(&context, "s*/l?b/[b]*"), [pair("src/lib/b.rs", "src/lib/b.rs")]);
        // Through a symlinked directory: named as matched, read where it is.
        assert_eq!(names(&context, "lib-link/a*"), [pair("lib-link/a.rs", "src/lib/a.rs")]);
        // `*` does not cross a `/`.
        assert!(matches!(context.expand(AT, "*.rs"), Err(LayerError::NoMatch { .. })));
        let error = context.expand(AT, "src/[").err().unwrap();
        assert_eq!(error.to_string(), "COPY at line 3: bad pattern \"[\": unterminated or empty character class");
    }

    #[test]
    fn nothing_outside_the_root() {
        let (dir, root) = context();
        symlink("../outside.txt", root.join("up")).unwrap();
        symlink(dir.path().join("outside.txt"), root.join("absolute")).unwrap();
        symlink("src/../../outside.txt", root.join("sneaky")).unwrap();
        let context = Context::open(&root).unwrap();
        for source in ["../outside.txt", "src/../../outside.txt", "up", "absolute", "sneaky", "u*"] {
            let error = context.expand(AT, source).err().unwrap();
            assert!(matches!(&error, LayerError::OutsideContext { name, .. } if name == source), "{source}: {error:?}");
            assert_eq!(error.to_string(), format!("COPY at line 3: {source:?} is outside the build context"));
        }
    }

    #[test]
    fn symlink_chains_and_loops() {
        let (_dir, root) = context();
        symlink("two", root.join("one")).unwrap();
        symlink("src/main.rs", root.join("two")).unwrap();
        symlink("loop-b", root.join("loop-a")).unwrap();
        symlink("loop-a", root.join("loop-b")).unwrap();
        symlink("nowhere", root.join("dangling")).unwrap();
        let context = Context::open(&root).unwrap();
        assert_eq!(names(&context, "one"), [pair("one", "src/main.rs")]);
        assert!(matches!(context.expand(AT, "loop-a"), Err(LayerError::SymlinkLoop { .. })));
        assert!(matches!(context.expand(AT, "dangling"), Err(LayerError::NotFound { ignored: false, .. })));
        assert!(matches!(context.expand(AT, "README.md/x"), Err(LayerError::NotFound { .. })));
    }

    #[test]
    fn excluded_sources_are_not_there() {
        let (_dir, root) = context();
        fs::write(root.join(".dockerignore"), "src\n!src/lib/a.rs\n").unwrap();
        symlink("src/main.rs", root.join("main-link")).unwrap();
        let context = Context::open(&root).unwrap();
        assert!(matches!(context.expand(AT, "src/main.rs"), Err(LayerError::NotFound { ignored: true, .. })));
        // Followed to an excluded file: a builder would not have it either.
        assert!(matches!(context.expand(AT, "main-link"), Err(LayerError::NotFound { ignored: true, .. })));
        assert_eq!(names(&context, "src/lib/*.rs"), [pair("src/lib/a.rs", "src/lib/a.rs")]);
        // An excluded directory with something re-included below it is still a source.
        assert_eq!(names(&context, "src"), [pair("src", "src")]);
    }

    #[test]
    fn a_bad_dockerignore_is_an_error() {
        let (_dir, root) = context();
        fs::write(root.join(".dockerignore"), "ok\n[\n").unwrap();
        let error = Context::open(&root).err().unwrap();
        assert_eq!(error.to_string(), ".dockerignore line 2: bad pattern \"[\": unterminated or empty character class");
    }
}
