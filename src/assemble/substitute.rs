//! Docker's variable substitution and word splitting, as BuildKit's `shell.Lex` and Dockerfile parser do
//! them: `$VAR`, `${VAR}`, `${VAR:-word}` and the other `${VAR<op>word}` forms, quotes and escapes; and
//! the quote-aware splitting of `ENV`, `LABEL` and `ARG` arguments into `name=value` words.

use std::mem;

/// How deep `${...}` may nest: each level is a few stack frames.
const MAX_DEPTH: usize = 64;
/// The steps a `${VAR#pattern}` or `${VAR/pattern/replacement}` may take.
const MAX_PATTERN_WORK: usize = 1 << 26;

/// A variable as an instruction sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Value {
    Set(String),
    Unset,
    /// Only the base image's config could tell (its `Env`).
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum SubstError {
    /// A builder rejects it too: "syntax error: missing '}'".
    Syntax(String),
    /// The word uses a variable whose value is [`Value::Unknown`].
    Unknown(String),
    /// Past a limit that keeps hostile input from exhausting the stack, memory or time; real Dockerfiles
    /// are far below them.
    TooLarge,
}

/// How a word is expanded: the escape character, the variables, and the longest result allowed.
pub(super) struct Scope<'a> {
    pub escape: char,
    pub lookup: &'a dyn Fn(&str) -> Value,
    pub max_len: usize,
}

/// The word with its variables substituted and its quotes and escapes removed (BuildKit's `ProcessWord`).
pub(super) fn process_word(word: &str, scope: &Scope<'_>) -> Result<String, SubstError> {
    Lexer::new(word, scope).run().map(|(word, _)| word)
}

/// As [`process_word`], then split on whitespace outside quotes (BuildKit's `ProcessWords`, for `EXPOSE`).
pub(super) fn process_words(word: &str, scope: &Scope<'_>) -> Result<Vec<String>, SubstError> {
    Lexer::new(word, scope).run().map(|(_, words)| words)
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    scope: &'a Scope<'a>,
    depth: usize,
    /// The first unknown variable. Expansion goes on past it so that a syntax error later in the word
    /// still wins: a builder would reject the word whatever the variable holds.
    unknown: Option<String>,
}

impl<'a> Lexer<'a> {
    fn new(word: &str, scope: &'a Scope<'a>) -> Self {
        Lexer { chars: word.chars().collect(), pos: 0, scope, depth: 0, unknown: None }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    fn run(mut self) -> Result<(String, Vec<String>), SubstError> {
        let result = self.stop_on(None, false)?;
        match self.unknown {
            Some(name) => Err(SubstError::Unknown(name)),
            None => Ok(result),
        }
    }

    /// `Some(None)` when unset, `None` when unknown.
    fn get(&mut self, name: &str) -> Option<Option<String>> {
        match (self.scope.lookup)(name) {
            Value::Set(value) => Some(Some(value)),
            Value::Unset => Some(None),
            Value::Unknown => {
                self.unknown.get_or_insert_with(|| name.to_string());
                None
            }
        }
    }

    /// Up to `stop` (consumed), or the end when `stop` is `None`. `raw_escapes` keeps the escape
    /// characters, for the patterns of `${VAR#pattern}` and the like.
    fn stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<(String, Vec<String>), SubstError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if result.len() > self.scope.max_len {
                return Err(SubstError::TooLarge);
            }
            if Some(c) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match c {
                '$' => {
                    let value = self.dollar()?;
                    words.add_str(&value);
                    result.push_str(&value);
                }
                '\'' | '"' => {
                    let quoted = if c == '"' { self.double_quote(raw_escapes)? } else { self.single_quote()? };
                    words.add_raw_str(&quoted);
                    result.push_str(&quoted);
                }
                _ => {
                    self.pos += 1;
                    if c != self.scope.escape {
                        words.add_char(c);
                        result.push(c);
                        continue;
                    }
                    if raw_escapes {
                        words.add_raw_char(c);
                        result.push(c);
                    }
                    // An escape at the very end is dropped.
                    let Some(escaped) = self.next() else { break };
                    words.add_raw_char(escaped);
                    result.push(escaped);
                }
            }
        }
        match stop {
            Some(stop) => Err(syntax(format!("unexpected end of statement while looking for matching {stop}"))),
            None if result.len() > self.scope.max_len => Err(SubstError::TooLarge),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quote(&mut self) -> Result<String, SubstError> {
        self.pos += 1;
        let mut result = String::new();
        loop {
            match self.next() {
                None => return Err(syntax("unexpected end of statement while looking for matching single-quote")),
                Some('\'') => return Ok(result),
                Some(c) => result.push(c),
            }
        }
    }

    fn double_quote(&mut self, raw_escapes: bool) -> Result<String, SubstError> {
        self.pos += 1;
        let mut result = String::new();
        loop {
            match self.peek() {
                None => return Err(syntax("unexpected end of statement while looking for matching double-quote")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(result);
                }
                Some('$') => result.push_str(&self.dollar()?),
                Some(mut c) => {
                    self.pos += 1;
                    if c == self.scope.escape {
                        if raw_escapes {
                            result.push(c);
                        }
                        // Only these are escaped in double quotes, as in sh; other escapes stay.
                        match self.peek() {
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.scope.escape => {
                                self.pos += 1;
                                c = next;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(c);
                }
            }
        }
    }

    /// At a `$`.
    fn dollar(&mut self) -> Result<String, SubstError> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.get(&name).flatten().unwrap_or_default());
        }
        self.pos += 1;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SubstError::TooLarge);
        }
        let value = self.braced();
        self.depth -= 1;
        value
    }

    /// After `${`.
    fn braced(&mut self) -> Result<String, SubstError> {
        match self.peek() {
            None => return Err(missing_brace()),
            Some('{' | '}' | ':') => return Err(syntax("syntax error: bad substitution")),
            Some(_) => {}
        }
        let name = self.name();
        let Some(op) = self.next() else { return Err(missing_brace()) };
        match op {
            '}' => Ok(self.get(&name).flatten().unwrap_or_default()),
            ':' | '+' | '-' | '?' | '#' | '%' => self.modifier(&name, op),
            '/' => self.replace(&name),
            _ => Err(syntax(format!("unsupported modifier ({op}) in substitution"))),
        }
    }

    /// `${name<op>word}` after `<op>`'s first character.
    fn modifier(&mut self, name: &str, first: char) -> Result<String, SubstError> {
        let null_is_unset = first == ':';
        let op = if null_is_unset { self.next() } else { Some(first) };
        let shown = if null_is_unset { format!(":{}", op.map(String::from).unwrap_or_default()) } else { first.into() };
        let pattern = matches!(op, Some('#' | '%'));
        if null_is_unset && pattern {
            return Err(syntax(format!("unsupported modifier ({shown}) in substitution")));
        }
        let word = self.word_until('}', pattern, missing_brace)?;
        let Some(value) = self.get(name) else { return Ok(String::new()) };
        let empty = value.as_deref().is_none_or(|v| null_is_unset && v.is_empty());
        match op {
            Some('-') => Ok(if empty { word } else { value.unwrap_or_default() }),
            Some('+') => Ok(if empty { String::new() } else { word }),
            Some('?') if empty => {
                let default = if value.is_none() { "is not allowed to be unset" } else { "is not allowed to be empty" };
                Err(syntax(format!("{name}: {}", if word.is_empty() { default } else { &word })))
            }
            Some('?') => Ok(value.unwrap_or_default()),
            Some(op @ ('#' | '%')) => {
                let value = value.unwrap_or_default();
                let (greedy, word) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let pattern = glob(word)?;
                if value.len().saturating_mul(pattern.len() + 1) > MAX_PATTERN_WORK {
                    return Err(SubstError::TooLarge);
                }
                Ok(if op == '#' {
                    trim_prefix(&value, &pattern, greedy)
                } else {
                    trim_suffix(&value, &pattern, greedy)
                })
            }
            _ => Err(syntax(format!("unsupported modifier ({shown}) in substitution"))),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`, after the first `/`.
    fn replace(&mut self, name: &str) -> Result<String, SubstError> {
        let all = self.peek() == Some('/');
        self.pos += usize::from(all);
        let pattern = self.word_until('/', true, || syntax("syntax error: missing '/' in ${}"))?;
        let replacement = self.word_until('}', true, missing_brace)?;
        let Some(value) = self.get(name) else { return Ok(String::new()) };
        let (value, pattern) = (value.unwrap_or_default(), glob(&pattern)?);
        // Each start position may scan the rest of the value.
        if value.len().saturating_mul(value.len()).saturating_mul(pattern.len() + 1) > MAX_PATTERN_WORK {
            return Err(SubstError::TooLarge);
        }
        Ok(replace(&value, &pattern, &replacement, all))
    }

    fn word_until(&mut self, stop: char, raw: bool, at_end: fn() -> SubstError) -> Result<String, SubstError> {
        match self.stop_on(Some(stop), raw) {
            Ok((word, _)) => Ok(word),
            Err(SubstError::Syntax(_)) if self.peek().is_none() => Err(at_end()),
            Err(error) => Err(error),
        }
    }

    /// A variable name: letters, digits and `_`; or digits alone (`$1`); or one special character (`$$`).
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_numeric() {
                while let Some(digit) = self.peek().filter(|d| d.is_numeric()) {
                    name.push(digit);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.into();
            }
            if !c.is_alphanumeric() && c != '_' {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }
}

fn syntax(message: impl Into<String>) -> SubstError {
    SubstError::Syntax(message.into())
}

fn missing_brace() -> SubstError {
    syntax("syntax error: missing '}'")
}

/// The words of a [`process_words`], built as BuildKit does: whitespace from a variable's value splits
/// words, whitespace in quotes or escaped does not.
#[derive(Default)]
struct Words {
    words: Vec<String>,
    buf: String,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if !c.is_whitespace() {
            self.add_raw_char(c);
        } else if self.in_word && !self.buf.is_empty() {
            self.words.push(mem::take(&mut self.buf));
            self.in_word = false;
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.buf.push(c);
        self.in_word = true;
    }

    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_str(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Glob {
    Char(char),
    Any,
    Star,
}

/// A `${VAR#pattern}` pattern: `*`, `?`, and `\` before `*`, `?`, `\`, `}` or `/`; no `[...]` classes
/// (BuildKit has none either).
fn glob(pattern: &str) -> Result<Vec<Glob>, SubstError> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' => Glob::Star,
            '?' => Glob::Any,
            '\\' => match chars.next() {
                Some(escaped @ ('*' | '?' | '\\' | '}' | '/')) => Glob::Char(escaped),
                other => {
                    let shown = other.map(String::from).unwrap_or_default();
                    return Err(syntax(format!(
                        "invalid pattern ({pattern}) in substitution: invalid escape '\\{shown}'"
                    )));
                }
            },
            c => Glob::Char(c),
        });
    }
    Ok(tokens)
}

/// The lengths of the prefixes of `value` that `pattern` matches, shortest first: a simulation of the
/// pattern's automaton, linear in `value`.
fn matching_prefixes(pattern: &[Glob], value: &[char]) -> Vec<usize> {
    let close = |states: &mut Vec<bool>| {
        for (at, token) in pattern.iter().enumerate() {
            if *token == Glob::Star && states.get(at) == Some(&true) {
                states[at + 1] = true;
            }
        }
    };
    let mut states = vec![false; pattern.len() + 1];
    states[0] = true;
    close(&mut states);
    let mut lengths = Vec::new();
    for at in 0..=value.len() {
        if states.last() == Some(&true) {
            lengths.push(at);
        }
        let Some(&c) = value.get(at) else { break };
        let mut next = vec![false; states.len()];
        for (state, token) in pattern.iter().enumerate().filter(|(state, _)| states[*state]) {
            match token {
                Glob::Char(expected) if *expected == c => next[state + 1] = true,
                Glob::Char(_) => {}
                Glob::Any => next[state + 1] = true,
                Glob::Star => next[state] = true,
            }
        }
        close(&mut next);
        if !next.contains(&true) {
            break;
        }
        states = next;
    }
    lengths
}

fn pick(lengths: &[usize], greedy: bool) -> Option<usize> {
    if greedy { lengths.last().copied() } else { lengths.first().copied() }
}

fn trim_prefix(value: &str, pattern: &[Glob], greedy: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let cut = pick(&matching_prefixes(pattern, &chars), greedy).unwrap_or(0);
    chars.iter().skip(cut).collect()
}

/// BuildKit's way: a prefix of the reversed value, with the pattern reversed.
fn trim_suffix(value: &str, pattern: &[Glob], greedy: bool) -> String {
    let reversed: Vec<char> = value.chars().rev().collect();
    let pattern: Vec<Glob> = pattern.iter().rev().copied().collect();
    let cut = pick(&matching_prefixes(&pattern, &reversed), greedy).unwrap_or(0);
    let kept = reversed.len().saturating_sub(cut);
    value.chars().take(kept).collect()
}

/// The leftmost match (longest there: the pattern's `*` is greedy) replaced; every match with `all`.
fn replace(value: &str, pattern: &[Glob], replacement: &str, all: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::new();
    let mut from = 0;
    while from <= chars.len() {
        let found = (from..=chars.len()).find_map(|start| {
            pick(&matching_prefixes(pattern, chars.get(start..).unwrap_or_default()), true).map(|len| (start, len))
        });
        let Some((start, len)) = found else { break };
        out.extend(chars.get(from..start).unwrap_or_default());
        out.push_str(replacement);
        from = start + len;
        if len == 0 {
            // An empty match: step over one character so that the next search moves on.
            out.extend(chars.get(start));
            from += 1;
        }
        if !all {
            break;
        }
    }
    out.extend(chars.get(from..).unwrap_or_default());
    out
}

/// The words of an `ENV`, `LABEL` or `ARG` (BuildKit's `parseWords`): split on whitespace outside
/// quotes, with the quotes and escapes kept for [`process_word`].
pub(super) fn split_words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote = None;
    // An empty quoted string is still a word (`A=""`).
    let mut blank_ok = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if let Some(open) = quote {
            if c == open {
                quote = None;
            } else if c == escape && open != '\'' {
                let Some(escaped) = chars.next() else {
                    quote = None;
                    continue;
                };
                word.push(c);
                word.push(escaped);
                continue;
            }
            word.push(c);
            continue;
        }
        if c.is_whitespace() {
            if in_word && (blank_ok || !word.is_empty()) {
                words.push(mem::take(&mut word));
            }
            in_word = false;
            blank_ok = false;
            continue;
        }
        in_word = true;
        if c == '\'' || c == '"' {
            quote = Some(c);
            blank_ok = true;
        }
        if c == escape {
            // An escape at the end of the text is dropped.
            let Some(escaped) = chars.next() else { continue };
            word.push(c);
            word.push(escaped);
            continue;
        }
        word.push(c);
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// The `(name, value)` pairs of an `ENV` or `LABEL`, unexpanded: `k=v ...`, or the legacy `k v` whose
/// value is the rest of the line.
pub(super) fn name_values(text: &str, escape: char, instruction: &str) -> Result<Vec<(String, String)>, String> {
    let words = split_words(text, escape);
    let Some(first) = words.first() else { return Err(format!("{instruction} requires at least one argument")) };
    let blank = || format!("{instruction} names can not be blank");
    if !first.contains('=') {
        let legacy_space = |c| matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r');
        let (name, value) =
            text.split_once(legacy_space).ok_or_else(|| format!("{instruction} must have two arguments"))?;
        if name.is_empty() {
            return Err(blank());
        }
        return Ok(vec![(name.to_string(), value.trim_start_matches(legacy_space).to_string())]);
    }
    words
        .iter()
        .map(|word| match word.split_once('=') {
            Some(("", _)) => Err(blank()),
            Some((name, value)) => Ok((name.to_string(), value.to_string())),
            None => Err(format!("Syntax error - can't find = in {word:?}. Must be of the form: name=value")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Value {
        match name {
            "A" => Value::Set("a".into()),
            "EMPTY" => Value::Set(String::new()),
            "SPACED" => Value::Set("x  y".into()),
            "PATH_" => Value::Set("/usr/local/bin".into()),
            "FILE" => Value::Set("archive.tar.gz".into()),
            "BASE" => Value::Unknown,
            _ => Value::Unset,
        }
    }

    fn scope(escape: char) -> Scope<'static> {
        Scope { escape, lookup: &env, max_len: 1 << 20 }
    }

    fn word(text: &str) -> Result<String, SubstError> {
        process_word(text, &scope('\\'))
    }

    #[test]
    fn substitution_forms() {
        let cases = [
            ("$A", "a"),
            ("${A}", "a"),
            ("x${A}y$A", "xaya"),
            ("$UNSET", ""),
            ("${UNSET}", ""),
            ("${UNSET:-d}", "d"),
            ("${EMPTY:-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${UNSET-d}", "d"),
            ("${A:-d}", "a"),
            ("${A:+w}", "w"),
            ("${EMPTY:+w}", ""),
            ("${EMPTY+w}", "w"),
            ("${UNSET:+w}", ""),
            ("${UNSET:-${A}-$A}", "a-a"),
            ("${UNSET:-\"q $A\"}", "q a"),
            ("${A?}", "a"),
            ("\\$A", "$A"),
            ("'$A'", "$A"),
            ("\"$A\"", "a"),
            ("\"\\$A \\\" \\x\"", "$A \" \\x"),
            ("a\\ b", "a b"),
            ("$", "$"),
            ("$-", ""),
            ("$1", ""),
            ("a$", "a$"),
            ("end\\", "end"),
            ("${FILE%.gz}", "archive.tar"),
            ("${FILE%.*}", "archive.tar"),
            ("${FILE%%.*}", "archive"),
            ("${FILE#*.}", "tar.gz"),
            ("${FILE##*.}", "gz"),
            ("${FILE#x}", "archive.tar.gz"),
            ("${PATH_/\\/local/}", "/usr/bin"),
            ("${FILE/a/A}", "Archive.tar.gz"),
            ("${FILE//a/A}", "Archive.tAr.gz"),
            ("${FILE/?r/_}", "_chive.tar.gz"),
        ];
        for (input, expected) in cases {
            assert_eq!(word(input), Ok(expected.to_string()), "{input}");
        }
    }

    #[test]
    fn a_backtick_escape_directive_changes_the_escape() {
        assert_eq!(process_word("`$A\\", &scope('`')), Ok("$A\\".into()));
        assert_eq!(process_word("C:\\dir", &scope('`')), Ok("C:\\dir".into()));
    }

    #[test]
    fn syntax_errors() {
        let cases = [
            ("${", "syntax error: missing '}'"),
            ("${A", "syntax error: missing '}'"),
            ("${A:-x", "syntax error: missing '}'"),
            ("${}", "syntax error: bad substitution"),
            ("${:a}", "syntax error: bad substitution"),
            ("${A!}", "unsupported modifier (!) in substitution"),
            ("${A:x}", "unsupported modifier (:x) in substitution"),
            ("${A:#x}", "unsupported modifier (:#) in substitution"),
            ("${UNSET?}", "UNSET: is not allowed to be unset"),
            ("${EMPTY:?must be set}", "EMPTY: must be set"),
            ("'open", "unexpected end of statement while looking for matching single-quote"),
            ("\"open", "unexpected end of statement while looking for matching double-quote"),
            ("${A/x", "syntax error: missing '/' in ${}"),
            ("${A#\\x}", "invalid pattern (\\x) in substitution: invalid escape '\\x'"),
        ];
        for (input, message) in cases {
            assert_eq!(word(input), Err(SubstError::Syntax(message.into())), "{input}");
        }
    }

    #[test]
    fn a_variable_only_the_base_image_knows_is_unknown_unless_the_word_is_wrong_anyway() {
        assert_eq!(word("$BASE/x"), Err(SubstError::Unknown("BASE".into())));
        assert_eq!(word("${BASE:-d}"), Err(SubstError::Unknown("BASE".into())));
        assert_eq!(word("${BASE?}"), Err(SubstError::Unknown("BASE".into())));
        assert_eq!(word("$BASE ${"), Err(SubstError::Syntax("syntax error: missing '}'".into())));
    }

    #[test]
    fn limits_against_hostile_input() {
        let deep = format!("{}x{}", "${A:-".repeat(MAX_DEPTH + 1), "}".repeat(MAX_DEPTH + 1));
        assert_eq!(word(&deep), Err(SubstError::TooLarge));
        let fine = format!("{}x{}", "${UNSET:-".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert_eq!(word(&fine), Ok("x".into()));
        let small = Scope { escape: '\\', lookup: &env, max_len: 10 };
        assert_eq!(process_word("$FILE$FILE", &small), Err(SubstError::TooLarge));
        assert_eq!(process_word("${FILE}", &small), Err(SubstError::TooLarge));
        assert_eq!(process_word("$A$A", &small), Ok("aa".into()));
        let long = |name: &str| if name == "L" { Value::Set("x".repeat(100_000)) } else { Value::Unset };
        let scope = Scope { escape: '\\', lookup: &long, max_len: 1 << 20 };
        assert_eq!(process_word("${L//x*y/z}", &scope), Err(SubstError::TooLarge));
        assert_eq!(process_word("${L%%y}", &scope).map(|v| v.len()), Ok(100_000));
    }

    #[test]
    fn words_split_after_substitution_but_not_in_quotes() {
        assert_eq!(process_words("80 $SPACED", &scope('\\')), Ok(vec!["80".into(), "x".into(), "y".into()]));
        assert_eq!(process_words("\"a b\" c\\ d", &scope('\\')), Ok(vec!["a b".into(), "c d".into()]));
        assert_eq!(process_words("\"\" $EMPTY", &scope('\\')), Ok(vec![]));
    }

    #[test]
    fn split_words_keeps_quotes_for_later() {
        let cases: [(&str, &[&str]); 7] = [
            ("a=1 b=2", &["a=1", "b=2"]),
            ("  a=\"x y\"   b='p q' ", &["a=\"x y\"", "b='p q'"]),
            ("a=\"\"", &["a=\"\""]),
            ("a=x\\ y", &["a=x\\ y"]),
            ("a=\"q\\\"q\" b", &["a=\"q\\\"q\"", "b"]),
            ("a='unterminated b=c", &["a='unterminated b=c"]),
            ("a=b\\", &["a=b"]),
        ];
        for (text, expected) in cases {
            assert_eq!(split_words(text, '\\'), expected, "{text}");
        }
        assert_eq!(split_words("a=x`  y", '`'), ["a=x` ", "y"]);
    }

    #[test]
    fn name_values_new_and_legacy_forms() {
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        assert_eq!(name_values("A=1 B=\"x y\"", '\\', "ENV"), Ok(vec![pair("A", "1"), pair("B", "\"x y\"")]));
        assert_eq!(name_values("A   hello  world", '\\', "ENV"), Ok(vec![pair("A", "hello  world")]));
        assert_eq!(name_values("A", '\\', "ENV"), Err("ENV must have two arguments".into()));
        assert_eq!(
            name_values("A=1 B", '\\', "LABEL"),
            Err("Syntax error - can't find = in \"B\". Must be of the form: name=value".into())
        );
        assert_eq!(name_values("=1", '\\', "LABEL"), Err("LABEL names can not be blank".into()));
    }

    #[test]
    fn glob_prefixes_and_suffixes() {
        let pattern = glob("*.").unwrap();
        assert_eq!(trim_prefix("a.b.c", &pattern, false), "b.c");
        assert_eq!(trim_prefix("a.b.c", &pattern, true), "c");
        assert_eq!(trim_suffix("a.b.c", &glob(".*").unwrap(), false), "a.b");
        assert_eq!(trim_suffix("a.b.c", &glob(".*").unwrap(), true), "a");
        assert_eq!(trim_prefix("a*b", &glob("a\\*").unwrap(), false), "b");
        assert_eq!(replace("aaa", &glob("").unwrap(), "-", true), "-a-a-a-");
    }
}
