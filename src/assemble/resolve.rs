//! Where a path of the image leads once its symlinks are followed, inside the image's root: what
//! buildah's copier does before it writes (github.com/cyphar/filepath-securejoin's `SecureJoin`).
//! Each component that is a symlink is replaced by its target (an absolute one starts again from the
//! root), `..` never climbs above the root, a component that does not exist is taken as it is. The
//! last component is followed only when asked: a file copied onto a symlink replaces the link.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Links followed for one path before it counts as a loop: securejoin's `maxSymlinkLimit`.
pub const MAX_LINKS: usize = 255;

/// The path never resolves: a loop, or a chain longer than [`MAX_LINKS`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("/{}: too many levels of symbolic links (a loop, or more than {MAX_LINKS})", .0.display())]
pub struct TooManyLinks(pub PathBuf);

/// `path` (relative to the root, as [`crate::assemble::layer`] names paths) with its symlinks
/// followed; `link` says what a path (relative, without symlinks above it) is a symlink to, if it is
/// one. The result is relative, without `.`, `..` or symlinks above its last component.
pub fn resolve(
    path: &Path,
    follow_last: bool,
    link: impl Fn(&Path) -> Option<PathBuf>,
) -> Result<PathBuf, TooManyLinks> {
    let mut current = PathBuf::new();
    // Each part with whether it is the last of the path asked about (not of a link's target: that one
    // is followed, as the link that named it was).
    let mut remaining: VecDeque<(OsString, bool)> = parts(path).map(|part| (part, false)).collect();
    if let Some(last) = remaining.back_mut() {
        last.1 = true;
    }
    let mut followed = 0;
    while let Some((part, last)) = remaining.pop_front() {
        if part == ".." {
            current.pop();
            continue;
        }
        let next = current.join(&part);
        if last && !follow_last {
            current = next;
            continue;
        }
        let Some(target) = link(&next) else {
            current = next;
            continue;
        };
        followed += 1;
        if followed > MAX_LINKS {
            return Err(TooManyLinks(path.to_path_buf()));
        }
        if target.has_root() {
            current = PathBuf::new();
        }
        for part in parts(&target).collect::<Vec<_>>().into_iter().rev() {
            remaining.push_front((part, false));
        }
    }
    Ok(current)
}

/// The names and `..`s of a path; the root and `.` say nothing here.
fn parts(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|component| match component {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn resolver(links: &[(&str, &str)]) -> impl Fn(&str, bool) -> Result<String, TooManyLinks> {
        let links: BTreeMap<PathBuf, PathBuf> = links.iter().map(|(l, t)| (l.into(), t.into())).collect();
        move |path, follow_last| {
            let resolved = resolve(Path::new(path), follow_last, |p| links.get(p).cloned())?;
            Ok(resolved.display().to_string())
        }
    }

    #[test]
    fn follows_relative_absolute_and_chained_links_inside_the_root() {
        let resolve = resolver(&[
            ("bin", "usr/bin"),
            ("var/run", "../run"),
            ("lib", "/usr/lib"),
            ("c1", "c2"),
            ("c2", "./usr/share/"),
            ("out", "../../../../opt"),
            ("abs-out", "/../../etc"),
            ("usr/lib/cur", "."),
        ]);
        assert_eq!(resolve("bin/tool", false).unwrap(), "usr/bin/tool");
        assert_eq!(resolve("var/run/app/x", false).unwrap(), "run/app/x");
        assert_eq!(resolve("lib/x", false).unwrap(), "usr/lib/x");
        assert_eq!(resolve("c1/doc", false).unwrap(), "usr/share/doc");
        assert_eq!(resolve("out/x", false).unwrap(), "opt/x");
        assert_eq!(resolve("abs-out/x", false).unwrap(), "etc/x");
        assert_eq!(resolve("lib/cur/cur/x", false).unwrap(), "usr/lib/x");
        // A path without links, or under a path that does not exist, stays as it is.
        assert_eq!(resolve("srv/www/index.html", true).unwrap(), "srv/www/index.html");
        assert_eq!(resolve("", true).unwrap(), "");
    }

    #[test]
    fn the_last_component_is_followed_only_when_asked() {
        let resolve = resolver(&[("bin", "usr/bin"), ("c1", "c2"), ("c2", "usr/share")]);
        assert_eq!(resolve("bin", false).unwrap(), "bin");
        assert_eq!(resolve("bin", true).unwrap(), "usr/bin");
        // Once a link above it was followed, the whole chain is.
        assert_eq!(resolve("c1", true).unwrap(), "usr/share");
        assert_eq!(resolve("c1", false).unwrap(), "c1");
    }

    #[test]
    fn loops_and_long_chains_are_errors() {
        let resolve = resolver(&[("loop1", "loop2"), ("loop2", "/loop1"), ("self", "self/x")]);
        let error = resolve("loop1/x", false).unwrap_err();
        assert_eq!(error.to_string(), "/loop1/x: too many levels of symbolic links (a loop, or more than 255)");
        assert!(resolve("self", true).is_err());
        // A chain of 255 resolves, 256 do not.
        let chain = |length: usize| -> Vec<(String, String)> {
            (0..length)
                .map(|i| (format!("l{i}"), if i + 1 == length { "end".into() } else { format!("l{}", i + 1) }))
                .collect()
        };
        for (length, ok) in [(255, true), (256, false)] {
            let links = chain(length);
            let links: Vec<(&str, &str)> = links.iter().map(|(l, t)| (l.as_str(), t.as_str())).collect();
            assert_eq!(resolver(&links)("l0/x", false).is_ok(), ok, "{length}");
        }
    }
}
