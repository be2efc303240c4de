//! What a resolve Job reports (see `resolve.sh`): the refs that match the revision, then the
//! Dockerfile at the commit it chose, compactly (gzip, base64), to fit a termination message.

use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::read::GzDecoder;

use crate::api::{GitSource, SourceDockerfile, SourceStatus};

/// Starts the line that tells how the Dockerfile was read (a ref line starts with a commit id).
const MARKER: &str = "archway-dockerfile ";
/// The most a Dockerfile may have once decompressed: 4 KiB of gzip could otherwise expand to megabytes.
const MAX_DOCKERFILE: u64 = 256 * 1024;

/// A resolve Job's report, split.
#[derive(Debug, PartialEq)]
pub struct Report<'a> {
    /// `git ls-remote` lines: what the operator picks the commit from.
    pub refs: &'a str,
    /// How the Dockerfile was read, and at which commit; `None` when the revision matched no ref.
    pub dockerfile: Option<DockerfileRead<'a>>,
}

/// The Dockerfile line of a report, and what follows it.
#[derive(Debug, PartialEq)]
pub struct DockerfileRead<'a> {
    pub commit: &'a str,
    pub state: State<'a>,
}

#[derive(Debug, PartialEq)]
pub enum State<'a> {
    /// Its content, gzip and base64.
    Gzip(&'a str),
    Missing,
    /// More than the termination message has room for: its compact size.
    TooLarge(&'a str),
    /// The commit could not be fetched: git's last word.
    Unread(&'a str),
    /// A state this operator does not know.
    Other(&'a str),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DockerfileError {
    #[error("its report is not base64: {0}")]
    Base64(String),
    #[error("its report does not decompress: {0}")]
    Gzip(String),
    #[error("it is larger than {MAX_DOCKERFILE} bytes")]
    TooLarge,
    #[error("it is not UTF-8")]
    NotText,
}

pub fn parse(message: &str) -> Report<'_> {
    let Some(at) = message.find(MARKER).filter(|&at| at == 0 || message[..at].ends_with('\n')) else {
        return Report { refs: message, dockerfile: None };
    };
    let (refs, rest) = message.split_at(at);
    let rest = &rest[MARKER.len()..];
    let (line, body) = rest.split_once('\n').unwrap_or((rest, ""));
    let (commit, state) = line.split_once(' ').unwrap_or((line, ""));
    let (word, detail) = state.split_once(' ').unwrap_or((state, ""));
    let state = match word {
        "gzip" => State::Gzip(body.trim()),
        "missing" => State::Missing,
        "too-large" => State::TooLarge(detail.trim()),
        "unread" => State::Unread(detail.trim()),
        _ => State::Other(state),
    };
    Report { refs, dockerfile: Some(DockerfileRead { commit: commit.trim(), state }) }
}

/// The Dockerfile's path in the repository, as git names it: `contextDir/dockerfile` without `.` segments.
pub fn dockerfile_path(git: &GitSource, dockerfile: &str) -> String {
    let segments = git.context_dir.split('/').chain(dockerfile.split('/'));
    segments.filter(|s| !s.is_empty() && *s != ".").collect::<Vec<_>>().join("/")
}

/// What the status records of the Dockerfile at `commit`, from what the Job said (`read`).
pub fn recorded(read: Option<&DockerfileRead>, commit: &str, path: &str) -> SourceDockerfile {
    let entry = SourceDockerfile { path: path.to_string(), commit: commit.to_string(), ..Default::default() };
    let not_read = |message: String| SourceDockerfile { message: Some(message), ..entry.clone() };
    let Some(read) = read else { return not_read("the resolve Job did not read it".into()) };
    if read.commit != commit {
        return not_read(format!("the resolve Job read it at {}, not at {commit}", read.commit));
    }
    match read.state {
        State::Gzip(content) => SourceDockerfile { gzip: Some(content.to_string()), ..entry },
        State::Missing => SourceDockerfile { missing: true, ..entry },
        State::TooLarge(size) => not_read(format!(
            "it is too large to be reported ({size} bytes gzipped and in base64, and a resolve Job's termination \
             message holds 4096 bytes): its base images are not pinned"
        )),
        State::Unread(why) => not_read(format!("cannot read it: {why}")),
        State::Other(state) => not_read(format!("the resolve Job said {state:?}")),
    }
}

/// The commit built has no Dockerfile: what to say (the builder would fail on it).
pub fn missing(status: &SourceStatus, git: &GitSource) -> Option<String> {
    let dockerfile = status.dockerfile.as_ref().filter(|d| d.missing && status.commit.as_ref() == Some(&d.commit))?;
    Some(format!(
        "spec.source.git: no file {} at commit {} of {} (revision {:?}); check spec.source.git.contextDir and \
         spec.dockerfile, or push the file",
        dockerfile.path, dockerfile.commit, git.url, git.revision
    ))
}

/// The Dockerfile of the commit built, to read its base images from: its text, or why it was not read
/// (`Err`, for `status.baseImages`); `None` while no commit is known, where its Dockerfile was not
/// read (resolved by an older operator), or where it is missing (the plan stops on that).
pub fn text(status: &SourceStatus) -> Option<Result<String, String>> {
    let dockerfile = status.dockerfile.as_ref().filter(|d| status.commit.as_ref() == Some(&d.commit))?;
    let at = |why: String| format!("{} at {}: {why}", dockerfile.path, dockerfile.commit);
    match (&dockerfile.gzip, &dockerfile.message) {
        (Some(gzip), _) => Some(decode(gzip).map_err(|e| at(e.to_string()))),
        (None, Some(message)) => Some(Err(at(message.clone()))),
        (None, None) => None,
    }
}

/// The text of a Dockerfile in its compact form.
pub fn decode(gzip: &str) -> Result<String, DockerfileError> {
    let compressed = STANDARD.decode(gzip.trim()).map_err(|e| DockerfileError::Base64(e.to_string()))?;
    let mut text = Vec::new();
    GzDecoder::new(compressed.as_slice())
        .take(MAX_DOCKERFILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| DockerfileError::Gzip(e.to_string()))?;
    if text.len() as u64 > MAX_DOCKERFILE {
        return Err(DockerfileError::TooLarge);
    }
    String::from_utf8(text).map_err(|_| DockerfileError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &str = "e96170b9f24304f431209b9305930710d7736b5e";
    /// `FROM x\n`, as `gzip -9 -n | base64` writes it.
    const FROM_X: &str = "H4sIAAAAAAACA3ML8vdVqOACALklUncHAAAA";

    #[test]
    fn a_report_is_the_refs_then_the_dockerfile_at_the_commit() {
        let message = format!("{MAIN}\trefs/heads/main\narchway-dockerfile {MAIN} gzip\n{FROM_X}\n");
        let report = parse(&message);
        assert_eq!(report.refs, format!("{MAIN}\trefs/heads/main\n"));
        let read = report.dockerfile.unwrap();
        assert_eq!((read.commit, &read.state), (MAIN, &State::Gzip(FROM_X)));
        let entry = recorded(Some(&read), MAIN, "site/Dockerfile");
        assert_eq!(decode(entry.gzip.as_deref().unwrap()).as_deref(), Ok("FROM x\n"));
        // A full commit: no refs.
        let alone = format!("archway-dockerfile {MAIN} missing\n");
        let report = parse(&alone);
        assert_eq!((report.refs, report.dockerfile.unwrap().state), ("", State::Missing));
        // Refs alone (the revision matched none of the operator's refs).
        assert_eq!(parse(&format!("{MAIN}\trefs/heads/x/main\n")).dockerfile, None);
    }

    #[test]
    fn a_dockerfile_too_large_or_unread_is_recorded_with_why() {
        let message = format!("archway-dockerfile {MAIN} too-large 9120\n");
        let large = parse(&message).dockerfile.unwrap();
        let entry = recorded(Some(&large), MAIN, "Dockerfile");
        assert_eq!((entry.gzip.as_ref(), entry.missing), (None, false));
        let message = entry.message.unwrap();
        assert!(message.starts_with("it is too large to be reported (9120 bytes"), "{message}");
        assert!(message.ends_with("its base images are not pinned"), "{message}");
        let message = format!("archway-dockerfile {MAIN} unread fatal: not our ref {MAIN}\n");
        let unread = parse(&message).dockerfile.unwrap();
        let entry = recorded(Some(&unread), MAIN, "Dockerfile");
        assert_eq!(entry.message, Some(format!("cannot read it: fatal: not our ref {MAIN}")));
        // Read at another commit than the operator chose: not this commit's.
        let other = "1111111111111111111111111111111111111111";
        let entry = recorded(Some(&unread), other, "Dockerfile");
        assert!(entry.message.unwrap().contains("not at 1111"));
        assert!(recorded(None, MAIN, "Dockerfile").message.is_some());
    }

    #[test]
    fn a_missing_dockerfile_is_recorded_as_missing() {
        let message = format!("archway-dockerfile {MAIN} missing\n");
        let missing = parse(&message).dockerfile.unwrap();
        let entry = recorded(Some(&missing), MAIN, "site/Dockerfile");
        assert_eq!((entry.missing, entry.gzip, entry.message), (true, None, None));
    }

    #[test]
    fn a_bad_or_bombing_report_does_not_decode() {
        assert!(matches!(decode("not base64!"), Err(DockerfileError::Base64(_))));
        assert!(matches!(decode("aGVsbG8="), Err(DockerfileError::Gzip(_))));
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut bomb, &vec![b'#'; 1024 * 1024]).unwrap();
        let bomb = STANDARD.encode(bomb.finish().unwrap());
        assert!(bomb.len() < 4096, "fits a report: {}", bomb.len());
        assert_eq!(decode(&bomb), Err(DockerfileError::TooLarge));
    }

    #[test]
    fn the_path_is_the_context_dir_and_the_dockerfile() {
        let git = |dir: &str| GitSource { context_dir: dir.into(), ..Default::default() };
        assert_eq!(dockerfile_path(&git("."), "Dockerfile"), "Dockerfile");
        assert_eq!(dockerfile_path(&git("./site/"), "./docker/Dockerfile.prod"), "site/docker/Dockerfile.prod");
    }
}
