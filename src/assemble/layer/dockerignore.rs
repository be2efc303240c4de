//! `.dockerignore` as Docker and BuildKit read it (moby's `patternmatcher` and its `ignorefile`), and the
//! wildcards of `COPY` sources (Go's `filepath.Match`), which share one pattern syntax.
//!
//! The `ignore` crate is not used on purpose: gitignore rules differ (an unanchored pattern matches at
//! any depth there, a trailing `/` means "directories only", a re-included file under an excluded
//! directory stays excluded). Here a pattern is anchored at the context root, `*` and `?` never cross
//! a `/`, `**` crosses any number of them, and the last pattern that matches a path (or one of its
//! parent directories) decides.

/// One element of a compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Any,
    /// `[...]`: like Go's class, it may match a `/` (only `*` and `?` stop there).
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `**` (with its `/`) inside a pattern: nothing, or anything that ends with a `/`.
    Deep,
    /// `**` at the end of a pattern: anything.
    Rest,
}

/// A pattern whose syntax Go's `filepath.Match` would refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(".dockerignore line {line}: {message}")]
pub struct DockerignoreError {
    pub line: usize,
    pub message: String,
}

/// Whether a `COPY` source holds a wildcard (an unescaped `*`, `?` or `[`), as BuildKit decides.
pub fn has_wildcards(text: &str) -> bool {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// A compiled `filepath.Match` pattern for one path segment (a `COPY` source's wildcard segment).
#[derive(Clone, Debug)]
pub struct SegmentPattern(Vec<Token>);

impl SegmentPattern {
    pub fn new(pattern: &str) -> Result<SegmentPattern, PatternError> {
        tokenize(pattern, false).map(|(tokens, _)| SegmentPattern(tokens))
    }

    pub fn matches(&self, name: &str) -> bool {
        matches(&self.0, name)
    }
}

/// How moby's matcher runs a pattern: plain comparisons when the pattern allows them, else the
/// compiled tokens. They differ in corner cases (an escape is literal in an exact pattern, `**x`
/// is a plain suffix): kept, so that a context is cut exactly as Docker cuts it.
#[derive(Clone, Debug)]
enum Kind {
    Exact,
    /// The pattern less its trailing `**`.
    Prefix(String),
    /// The pattern less its leading `**`.
    Suffix(String),
    Tokens(Vec<Token>),
}

#[derive(Clone, Debug)]
struct Pattern {
    /// A `!` pattern: re-includes what it matches.
    exception: bool,
    text: String,
    kind: Kind,
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str()) || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Kind::Tokens(tokens) => matches(tokens, path),
        }
    }

    /// The text before the first wildcard or escape: what every path the pattern matches starts with.
    fn literal_prefix(&self) -> &str {
        let end = self.text.find(['*', '?', '[', '\\']).unwrap_or(self.text.len());
        &self.text[..end]
    }
}

/// The patterns of a `.dockerignore`, in file order.
#[derive(Clone, Debug, Default)]
pub struct Dockerignore {
    patterns: Vec<Pattern>,
}

impl Dockerignore {
    /// Reads a `.dockerignore`: one pattern a line, `#` comments and blank lines skipped, surrounding
    /// white space trimmed, each pattern cleaned (`./a/` -> `a`) and made relative (`/a` -> `a`).
    pub fn parse(text: &str) -> Result<Dockerignore, DockerignoreError> {
        let mut patterns = Vec::new();
        for (index, line) in text.strip_prefix('\u{feff}').unwrap_or(text).lines().enumerate() {
            let error = |message: String| DockerignoreError { line: index + 1, message };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, rest) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if rest.is_empty() {
                return Err(error(format!("{line:?} excludes nothing")));
            }
            let cleaned = clean(rest);
            let text = match cleaned.strip_prefix('/') {
                Some(relative) if !relative.is_empty() => relative.to_string(),
                _ => cleaned,
            };
            let (tokens, kind) = tokenize(&text, true).map_err(|e| error(e.to_string()))?;
            let kind = match kind {
                Simple::Exact => Kind::Exact,
                Simple::Prefix => Kind::Prefix(text[..text.len() - 2].to_string()),
                Simple::Suffix => Kind::Suffix(text[2..].to_string()),
                Simple::No => Kind::Tokens(tokens),
            };
            patterns.push(Pattern { exception, text, kind });
        }
        Ok(Dockerignore { patterns })
    }

    /// Whether the context path (relative, `/`-separated) is left out of the context: the last
    /// pattern that matches it or one of its parent directories decides.
    pub fn excluded(&self, path: &str) -> bool {
        let parents: Vec<&str> = path.match_indices('/').map(|(at, _)| &path[..at]).collect();
        let mut excluded = false;
        for pattern in &self.patterns {
            // A pattern that cannot change the answer is skipped, as moby does.
            if pattern.exception != excluded {
                continue;
            }
            if pattern.matches(path) || parents.iter().any(|parent| pattern.matches(parent)) {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// Whether an exception could re-include something below the excluded directory `dir`: else the
    /// walk skips it whole. Only an optimisation, so it may say yes too often (any `!` pattern that
    /// starts with a wildcard), never too rarely: below an excluded directory, only an exception that
    /// matches a path under it can change the answer, and such a path starts with its literal prefix.
    pub fn may_include_below(&self, dir: &str) -> bool {
        let below = format!("{dir}/");
        self.patterns.iter().filter(|p| p.exception).any(|p| {
            let prefix = p.literal_prefix();
            below.starts_with(prefix) || prefix.starts_with(below.as_str())
        })
    }
}

/// Which plain comparison moby would use for a pattern, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Simple {
    Exact,
    Prefix,
    Suffix,
    No,
}

/// Compiles a pattern. `deep`: `**` is moby's "any number of directories" (a `.dockerignore`), else two
/// `*` (Go's `filepath.Match`, a `COPY` source segment).
fn tokenize(pattern: &str, deep: bool) -> Result<(Vec<Token>, Simple), PatternError> {
    let bad = |reason| PatternError { pattern: pattern.to_string(), reason };
    let mut tokens = Vec::new();
    let mut simple = Simple::Exact;
    let mut chars = pattern.chars().peekable();
    let mut first = true;
    while let Some(c) = chars.next() {
        match c {
            '*' if deep && chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    tokens.push(Token::Rest);
                    simple = if simple == Simple::Exact { Simple::Prefix } else { Simple::No };
                } else {
                    tokens.push(Token::Deep);
                    simple = Simple::No;
                }
                if first {
                    simple = Simple::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::Any);
                simple = Simple::No;
            }
            '?' => {
                tokens.push(Token::One);
                simple = Simple::No;
            }
            '[' => {
                tokens.push(class(&mut chars).ok_or_else(|| bad("unterminated or empty character class"))?);
                simple = Simple::No;
            }
            '\\' => tokens.push(Token::Char(chars.next().ok_or_else(|| bad("a trailing `\\` escapes nothing"))?)),
            c => tokens.push(Token::Char(c)),
        }
        first = false;
    }
    Ok((tokens, simple))
}

/// The rest of a `[...]` class after its `[`, by Go's rules: `^` negates, `a-z` ranges, `\` escapes,
/// at least one range, an unescaped `-` or `]` cannot start a range.
fn class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<Token> {
    let negated = chars.next_if_eq(&'^').is_some();
    let mut ranges = Vec::new();
    let escaped = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| match chars.next()? {
        '\\' => chars.next(),
        '-' | ']' => None,
        c => Some(c),
    };
    loop {
        if !ranges.is_empty() && chars.next_if_eq(&']').is_some() {
            return Some(Token::Class { negated, ranges });
        }
        let low = escaped(chars)?;
        let high = if chars.next_if_eq(&'-').is_some() { escaped(chars)? } else { low };
        ranges.push((low, high));
    }
}

/// Whether the whole of `text` matches: a breadth-first run of the pattern's automaton, linear in the
/// text whatever the pattern (no backtracking blow-up on `*a*a*a*b`).
fn matches(tokens: &[Token], text: &str) -> bool {
    let n = tokens.len();
    // State s < n: before token s; s == n: matched. States n+1+s: inside a `**/` started at token s.
    let mut current = vec![false; 2 * n + 1];
    current[0] = true;
    close(tokens, &mut current);
    for c in text.chars() {
        let mut next = vec![false; 2 * n + 1];
        for (s, token) in tokens.iter().enumerate() {
            let inside = current[n + 1 + s];
            if !current[s] && !inside {
                continue;
            }
            match token {
                Token::Deep => {
                    next[n + 1 + s] = true;
                    next[s + 1] |= c == '/';
                }
                _ if !current[s] => {}
                Token::Char(x) => next[s + 1] |= *x == c,
                Token::One => next[s + 1] |= c != '/',
                Token::Class { negated, ranges } => {
                    next[s + 1] |= ranges.iter().any(|(low, high)| (*low..=*high).contains(&c)) != *negated;
                }
                Token::Any => next[s] |= c != '/',
                Token::Rest => next[s] = true,
            }
        }
        close(tokens, &mut next);
        if !next.contains(&true) {
            return false;
        }
        current = next;
    }
    current[n]
}

/// Adds the states reached without reading a character: past a `*`, a trailing `**` or a `**/`.
fn close(tokens: &[Token], states: &mut [bool]) {
    for (s, token) in tokens.iter().enumerate() {
        if states[s] && matches!(token, Token::Any | Token::Rest | Token::Deep) {
            states[s + 1] = true;
        }
    }
}

/// Go's `path.Clean`: no `.` segments, no `x/..` pairs, no repeated or trailing `/`; `..` that would
/// climb above a rooted path dropped; `.` for nothing.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|last| *last != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            part => parts.push(part),
        }
    }
    match (rooted, parts.is_empty()) {
        (true, _) => format!("/{}", parts.join("/")),
        (false, true) => ".".to_string(),
        (false, false) => parts.join("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> Dockerignore {
        Dockerignore::parse(text).unwrap()
    }

    #[test]
    fn segment_wildcards_follow_filepath_match() {
        let cases = [
            ("*.txt", "a.txt", true),
            ("*.txt", ".txt", true),
            ("*.txt", "a.txt.bak", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[^a-c]x", "dx", true),
            ("[^a-c]x", "ax", false),
            ("[\\]]", "]", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("**", "abc", true),
            ("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(SegmentPattern::new(pattern).unwrap().matches(name), expected, "{pattern} ~ {name}");
        }
        for bad in ["[", "[]", "[a", "a\\", "[-a]"] {
            assert!(SegmentPattern::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn has_wildcards_skips_escapes() {
        assert!(has_wildcards("src/*.js"));
        assert!(has_wildcards("a[bc]"));
        assert!(has_wildcards("a?"));
        assert!(!has_wildcards("src/app.js"));
        assert!(!has_wildcards("a\\*b"));
    }

    #[test]
    fn clean_matches_go() {
        let cases = [
            ("", "."),
            (".", "."),
            ("./a/", "a"),
            ("a//b/./c/..", "a/b"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a/../..", ".."),
            ("/", "/"),
            ("/a/b/", "/a/b"),
        ];
        for (path, expected) in cases {
            assert_eq!(clean(path), expected, "{path:?}");
        }
    }

    #[test]
    fn patterns_are_cleaned_and_anchored() {
        let rules = ignore("# comment\n\n  /build/  \n./tmp\nlogs/*.log\r\n");
        assert!(rules.excluded("build"));
        assert!(rules.excluded("build/out/a.o"));
        assert!(rules.excluded("tmp"));
        assert!(rules.excluded("logs/a.log"));
        assert!(!rules.excluded("logs/a/b.log"), "* does not cross /");
        assert!(!rules.excluded("src/build"), "anchored at the root, unlike gitignore");
        assert!(!rules.excluded("# comment"));
    }

    #[test]
    fn double_star_matches_any_number_of_directories() {
        let rules = ignore("**/*.pyc\ndocs/**/draft.md\nvendor/**\n");
        assert!(rules.excluded("a.pyc"));
        assert!(rules.excluded("a/b/c.pyc"));
        assert!(rules.excluded("docs/draft.md"));
        assert!(rules.excluded("docs/x/y/draft.md"));
        assert!(!rules.excluded("docs/x/final.md"));
        assert!(rules.excluded("vendor/x"));
        assert!(!rules.excluded("vendor"), "vendor/** matches what is under vendor, not vendor");
        assert!(!rules.excluded("src/main.py"));
    }

    #[test]
    fn exceptions_and_last_match_wins() {
        let rules = ignore("*.md\n!README.md\nREADME.md\n!docs\ndocs/secret\n");
        assert!(rules.excluded("CHANGES.md"));
        assert!(rules.excluded("README.md"), "the later README.md excludes it again");
        let rules = ignore("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(!rules.excluded("README.md"));
        assert!(rules.excluded("README-secret.md"));
        let rules = ignore("build\n!build/keep\n");
        assert!(rules.excluded("build"));
        assert!(rules.excluded("build/drop"));
        assert!(!rules.excluded("build/keep"));
        assert!(!rules.excluded("build/keep/deep"), "a parent matched by the exception counts");
    }

    #[test]
    fn everything_but() {
        let rules = ignore("*\n!src\n!package.json\n");
        assert!(rules.excluded("node_modules"));
        assert!(rules.excluded("Dockerfile"));
        assert!(!rules.excluded("src/index.js"));
        assert!(!rules.excluded("package.json"));
    }

    #[test]
    fn moby_plain_comparisons() {
        // `**x` is a plain suffix in moby (not "x at any depth").
        let rules = ignore("**.log\n");
        assert!(rules.excluded("a.log"));
        assert!(rules.excluded("a/b.log"));
        let rules = ignore("**/keep\n");
        assert!(rules.excluded("keep"));
        assert!(rules.excluded("a/keep"));
        assert!(!rules.excluded("akeep"));
        let rules = ignore("**\n");
        assert!(rules.excluded("anything/at/all"));
    }

    #[test]
    fn may_include_below_looks_at_exceptions_only() {
        let rules = ignore("node_modules\nbuild\n!build/keep\n");
        assert!(!rules.may_include_below("node_modules"));
        assert!(rules.may_include_below("build"));
        assert!(!rules.may_include_below("build-old"));
        assert!(ignore("x\n!**/README.md\n").may_include_below("x"));
        assert!(!ignore("x\n").may_include_below("x"));
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        let error = Dockerignore::parse("a\n!\n").unwrap_err();
        assert_eq!(error.line, 2);
        let error = Dockerignore::parse("# x\nsrc/[a\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.to_string().starts_with(".dockerignore line 2: bad pattern \"src/[a\""), "{error}");
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        assert!(ignore("\u{feff}secret\n").excluded("secret"));
    }
}
