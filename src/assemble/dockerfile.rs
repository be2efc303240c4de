//! Reads a Dockerfile into the [`Recipe`] of one platform, or says why it cannot be assembled: the first
//! instruction (or feature) only a builder carries out, or the error a builder would report too. The
//! grammar is parse-dockerfile's; the semantics (ARG scopes, substitution, what each instruction writes
//! into the image config and its history) follow BuildKit's Dockerfile frontend.
//!
//! The base image's config is not read here. A variable that only its `Env` could set needs a builder;
//! a `WORKDIR` or `COPY` destination relative to its `WorkingDir` stays relative, for the assembler.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use parse_dockerfile::{
    Command, Dockerfile, Flag, FromInstruction, HealthcheckArguments, Instruction, JsonOrStringArray, Keyword, Source,
    UnescapedString,
};
mod values;

pub(super) use values::parse_owner;
use values::{BadChmod, Healthcheck, Remote, go_quoted, interval, is_signal, parse_chmod, parse_port, remote, retries};

use super::layer::dockerignore::clean;
use super::{Base, ConfigEdits, CopyStep, HistoryStep, NeedsBuilder, Recipe, WorkdirStep};
use crate::platform::Platform;

use super::substitute::{Scope, SubstError, Value, name_values, process_word, process_words, split_words};

/// The bytes all substitutions and `EXPOSE` ranges of a Dockerfile may produce: `ENV A=$A$A` line after
/// line doubles a value each time. A real Dockerfile produces a few KiB.
const MAX_PRODUCED: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    /// Supported by a builder, not by `assemble`.
    #[error(transparent)]
    NeedsBuilder(#[from] NeedsBuilder),
    /// A builder would reject it too.
    #[error("Dockerfile line {line}: {message}")]
    Invalid { line: usize, message: String },
}

/// What the Dockerfile does for `target`, built on `build` (`BUILDPLATFORM`), with the build args `args`.
pub fn recipe(
    dockerfile: &str,
    args: &BTreeMap<String, String>,
    target: &Platform,
    build: &Platform,
) -> Result<Recipe, RecipeError> {
    let (source, empty_entrypoints) = readable(dockerfile)?;
    let parsed = parse(&source)?.map_err(|e| invalid(e.line().max(1), format!("{e:#}")))?;
    Reader::new(&source, args, &empty_entrypoints).read(&parsed, target, build)
}

/// A base image of a Dockerfile: a `FROM` that names an image (not `scratch`, not an earlier stage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FromImage {
    /// The `FROM` word as written (`${BASE_IMAGE}`): the name buildah's `--build-context` replaces.
    pub written: String,
    /// With the build args substituted: `busybox:1.36`.
    pub image: String,
    /// Whether its stage is built for the target platform: no `--platform`, or one naming the target.
    /// Else (`--platform=$BUILDPLATFORM`) the builder picks the image's platform itself.
    pub for_target: bool,
}

/// The base images of every stage of the Dockerfile for `target`, with the build args `args`, each once.
pub fn base_images(
    dockerfile: &str,
    args: &BTreeMap<String, String>,
    target: &Platform,
) -> Result<Vec<FromImage>, RecipeError> {
    let (source, empty_entrypoints) = readable(dockerfile)?;
    let parsed = parse(&source)?.map_err(|e| invalid(e.line().max(1), format!("{e:#}")))?;
    let mut reader = Reader::new(&source, args, &empty_entrypoints);
    // Where the build runs is not known here: a stage for `$BUILDPLATFORM` is never the target's.
    reader.global_scope(&parsed, target, &Platform::new("unknown", "unknown", None), "default")?;
    let (mut stages, mut images) = (BTreeSet::new(), Vec::<FromImage>::new());
    for stage in parsed.stages() {
        let from = stage.from;
        reader.line = reader.line_of(&from.from);
        let image = reader.expand_global(&from.image.value)?;
        if image != "scratch" && !stages.contains(&image.to_lowercase()) {
            let flags = parse_flags(reader.line, &from.options, &[("platform", FlagKind::String)])?;
            let platform = match flags.first() {
                Some((_, raw)) => Some(reader.expand_global(raw)?),
                None => None,
            };
            let for_target = platform.is_none_or(|p| p.parse::<Platform>().is_ok_and(|p| &p == target));
            let found = FromImage { written: from.image.value.to_string(), image, for_target };
            if !images.contains(&found) {
                images.push(found);
            }
        }
        if let Some((_, name)) = &from.as_ {
            stages.insert(name.value.to_lowercase());
        }
    }
    Ok(images)
}

/// The Dockerfile as parse-dockerfile reads it, and the lines of its empty `ENTRYPOINT []`s.
fn readable(dockerfile: &str) -> Result<(Cow<'_, str>, BTreeSet<usize>), RecipeError> {
    // The parser would strip a BOM itself, and its positions would then be 3 bytes off ours.
    let text = dockerfile.strip_prefix('\u{feff}').unwrap_or(dockerfile);
    let mut source = Cow::Borrowed(text);
    let mut empty_entrypoints = BTreeSet::new();
    loop {
        let line = match parse(&source)? {
            Ok(_) => None,
            Err(error) => Some(error.line()),
        };
        let Some(line) = line else { return Ok((source, empty_entrypoints)) };
        // parse-dockerfile 0.1 rejects `ENTRYPOINT []`, which BuildKit takes (it clears the base's
        // entrypoint): such lines are read as `ENTRYPOINT [""]`, and remembered as empty.
        if !empty_entrypoints.is_empty() || !is_empty_entrypoint(source.split('\n').nth(line.wrapping_sub(1))) {
            // The caller's parse reports it.
            return Ok((source, empty_entrypoints));
        }
        let mut patched = Vec::new();
        for (index, line) in source.split('\n').enumerate() {
            if is_empty_entrypoint(Some(line)) {
                empty_entrypoints.insert(index + 1);
                patched.push("ENTRYPOINT [\"\"]");
            } else {
                patched.push(line);
            }
        }
        source = Cow::Owned(patched.join("\n"));
    }
}

/// parse-dockerfile's `parse`, a panic of which (a bug of the parser) counts as a Dockerfile it cannot read.
fn parse(text: &str) -> Result<Result<Dockerfile<'_>, parse_dockerfile::Error>, RecipeError> {
    std::panic::catch_unwind(|| parse_dockerfile::parse(text)).map_err(|_| invalid(1, "the Dockerfile parser failed"))
}

fn is_empty_entrypoint(line: Option<&str>) -> bool {
    let Some((keyword, rest)) = line.map(str::trim).and_then(|l| l.split_once(char::is_whitespace)) else {
        return false;
    };
    let array = rest.trim().strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    keyword.eq_ignore_ascii_case("ENTRYPOINT") && array.is_some_and(|inside| inside.trim().is_empty())
}

fn invalid(line: usize, message: impl Into<String>) -> RecipeError {
    RecipeError::Invalid { line, message: message.into() }
}

fn needs(line: usize, what: impl Into<String>) -> RecipeError {
    RecipeError::NeedsBuilder(NeedsBuilder { line, what: what.into() })
}

/// The state of a read, as BuildKit's `dispatchState` keeps it.
struct Reader<'a> {
    escape: char,
    /// Byte offsets of the newlines, for line numbers.
    newlines: Vec<usize>,
    build_args: &'a BTreeMap<String, String>,
    empty_entrypoints: &'a BTreeSet<usize>,
    /// The line of the instruction being read, for messages.
    line: usize,
    /// What is left of [`MAX_PRODUCED`].
    budget: Cell<usize>,
    /// The global scope: the automatic platform args, and the ARGs before FROM that have a value.
    globals: BTreeMap<String, String>,
    scratch: bool,
    /// The stage's ENVs and its ARGs that have a value; an ENV hides the ARG of its name.
    env: BTreeMap<String, String>,
    args: BTreeMap<String, String>,
    workdir: Workdir,
    shell: Vec<String>,
    cmd_set: bool,
    copies: Vec<CopyStep>,
    config: ConfigEdits,
    workdirs: Vec<WorkdirStep>,
    history: Vec<HistoryStep>,
}

impl<'a> Reader<'a> {
    fn new(text: &str, build_args: &'a BTreeMap<String, String>, empty_entrypoints: &'a BTreeSet<usize>) -> Self {
        Reader {
            escape: '\\',
            newlines: text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(at, _)| at).collect(),
            build_args,
            empty_entrypoints,
            line: 1,
            budget: Cell::new(MAX_PRODUCED),
            globals: BTreeMap::new(),
            scratch: false,
            env: BTreeMap::new(),
            args: BTreeMap::new(),
            workdir: Workdir::Relative(".".into()),
            shell: vec!["/bin/sh".into(), "-c".into()],
            cmd_set: false,
            copies: Vec::new(),
            config: ConfigEdits::default(),
            workdirs: Vec::new(),
            history: Vec::new(),
        }
    }

    fn read(mut self, parsed: &Dockerfile<'_>, target: &Platform, build: &Platform) -> Result<Recipe, RecipeError> {
        let mut stages = parsed.stages();
        let stage = stages.next().ok_or_else(|| invalid(1, "expected at least one FROM instruction"))?;
        let stage_name = stage.from.as_.as_ref().map_or("default".into(), |(_, name)| name.value.to_lowercase());
        self.global_scope(parsed, target, build, &stage_name)?;
        let base = self.from(stage.from)?;
        for instruction in stage.instructions {
            self.instruction(instruction)?;
        }
        if let Some(next) = stages.next() {
            return Err(needs(self.line_of(&next.from.from), "a second FROM"));
        }
        Ok(Recipe { base, copies: self.copies, config: self.config, workdirs: self.workdirs, history: self.history })
    }

    /// The escape character and the global scope: the automatic platform args (a build arg of their
    /// name wins) and the ARGs before the first FROM.
    fn global_scope(
        &mut self,
        parsed: &Dockerfile<'_>,
        target: &Platform,
        build: &Platform,
        stage_name: &str,
    ) -> Result<(), RecipeError> {
        self.escape = parsed.parser_directives.escape.as_ref().map_or('\\', |e| e.value.value);
        for (name, value) in automatic_args(target, build, stage_name) {
            let value = self.build_args.get(name).cloned().unwrap_or(value);
            self.globals.insert(name.to_string(), value);
        }
        for arg in parsed.global_args() {
            self.line = self.line_of(&arg.arg);
            self.global_arg(leading_flags(&arg.arguments.value).1)?;
        }
        Ok(())
    }

    /// `text` of an instruction that takes no flag (BuildKit reads a leading `--word` of any as one).
    fn no_flags<'t>(&self, text: &'t str) -> Result<&'t str, RecipeError> {
        match leading_flags(text) {
            (Some(flag), _) => {
                let name = flag.split_once('=').map_or(flag, |(name, _)| name);
                Err(invalid(self.line, format!("unknown flag: {name}")))
            }
            (None, _) => Ok(text),
        }
    }

    fn line_of(&self, keyword: &Keyword) -> usize {
        self.newlines.partition_point(|at| *at < keyword.span.start) + 1
    }

    fn record(&mut self, created_by: String) {
        self.history.push(HistoryStep { created_by, empty_layer: true });
    }

    fn global_arg(&mut self, text: &str) -> Result<(), RecipeError> {
        for word in split_words(text, self.escape) {
            let (name, default) = name_default(self.line, word)?;
            let value = match (self.build_args.get(&name), default) {
                (Some(value), _) => Some(value.clone()),
                (None, Some(default)) => Some(self.expand_global(&default)?),
                (None, None) => None,
            };
            if let Some(value) = value {
                self.globals.insert(name, value);
            }
        }
        Ok(())
    }

    fn expand_global(&self, word: &str) -> Result<String, RecipeError> {
        let lookup = |name: &str| self.globals.get(name).map_or(Value::Unset, |value| Value::Set(value.clone()));
        let scope = Scope { escape: self.escape, lookup: &lookup, max_len: self.budget.get() };
        process_word(word, &scope).map_err(|e| self.subst_error(e)).and_then(|word| self.spend(word))
    }

    fn lookup(&self, name: &str) -> Value {
        match self.env.get(name).or_else(|| self.args.get(name)) {
            Some(value) => Value::Set(value.clone()),
            // A name no ENV or ARG here sets may be in the base image's Env (`$GOPATH` of golang).
            None if !self.scratch && name.starts_with(|c: char| c.is_alphabetic() || c == '_') => Value::Unknown,
            None => Value::Unset,
        }
    }

    fn expand(&self, word: &str) -> Result<String, RecipeError> {
        let scope = Scope { escape: self.escape, lookup: &|name| self.lookup(name), max_len: self.budget.get() };
        process_word(word, &scope).map_err(|e| self.subst_error(e)).and_then(|word| self.spend(word))
    }

    /// `produced`, charged to the budget.
    fn spend<T: AsRef<str>>(&self, produced: T) -> Result<T, RecipeError> {
        match self.budget.get().checked_sub(produced.as_ref().len()) {
            Some(left) => {
                self.budget.set(left);
                Ok(produced)
            }
            None => Err(self.subst_error(SubstError::TooLarge)),
        }
    }

    fn subst_error(&self, error: SubstError) -> RecipeError {
        match error {
            SubstError::Syntax(message) => invalid(self.line, message),
            SubstError::Unknown(name) => needs(self.line, format!("${name} of the base image")),
            SubstError::TooLarge => needs(self.line, "a Dockerfile past archway's size limits"),
        }
    }

    fn from(&mut self, from: &FromInstruction<'_>) -> Result<Base, RecipeError> {
        self.line = self.line_of(&from.from);
        let flags = parse_flags(self.line, &from.options, &[("platform", FlagKind::String)])?;
        if let Some((_, name)) = &from.as_ {
            let lower = name.value.to_lowercase();
            let mut chars = lower.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
            if !valid {
                let message = "name can't start with a number or contain symbols";
                return Err(invalid(self.line, format!("invalid name for build stage: {:?}, {message}", name.value)));
            }
        }
        let reference = self.expand_global(&from.image.value)?;
        if reference.is_empty() {
            return Err(invalid(self.line, format!("base name ({}) should not be blank", from.image.value)));
        }
        let platform = match flags.first() {
            Some((_, raw)) if !raw.is_empty() => match self.expand_global(raw)? {
                platform if platform.is_empty() => {
                    return Err(invalid(self.line, format!("empty platform value from expression {raw}")));
                }
                platform => Some(platform),
            },
            _ => None,
        };
        self.scratch = reference == "scratch";
        if self.scratch {
            self.workdir = Workdir::Absolute("/".into());
            return Ok(Base::Scratch);
        }
        Ok(Base::Image { reference, platform })
    }

    fn instruction(&mut self, instruction: &Instruction<'_>) -> Result<(), RecipeError> {
        if let Some(keyword) = keyword(instruction) {
            self.line = self.line_of(keyword);
        }
        match instruction {
            Instruction::Arg(arg) => self.stage_arg(leading_flags(&arg.arguments.value).1),
            Instruction::Env(env) => self.env(self.no_flags(&env.arguments.value)?),
            Instruction::Label(label) => {
                let pairs = self.name_values(self.no_flags(&label.arguments.value)?, "LABEL")?;
                self.record(format!("LABEL {}", shown_pairs(&pairs)));
                self.config.labels.extend(pairs);
                Ok(())
            }
            Instruction::Workdir(workdir) => {
                self.workdir = self.workdir.cd(&self.expand(self.no_flags(&workdir.arguments.value)?)?);
                let shown = self.workdir.shown().to_string();
                self.record(format!("WORKDIR {shown}"));
                self.workdirs.push(WorkdirStep { dir: shown.clone(), user: self.config.user.clone() });
                self.config.working_dir = Some(shown);
                Ok(())
            }
            Instruction::User(user) => {
                let user = self.expand(self.no_flags(&user.arguments.value)?)?;
                self.record(format!("USER {user}"));
                self.config.user = Some(user);
                Ok(())
            }
            Instruction::Expose(expose) => self.expose(&expose.arguments),
            Instruction::Volume(volume) => self.volume(&volume.arguments),
            Instruction::Stopsignal(signal) => {
                let signal = self.expand(leading_flags(&signal.arguments.value).1)?;
                if !is_signal(&signal) {
                    return Err(invalid(self.line, format!("Invalid signal: {signal}")));
                }
                self.record(format!("STOPSIGNAL {signal}"));
                self.config.stop_signal = Some(signal);
                Ok(())
            }
            Instruction::Healthcheck(healthcheck) => self.healthcheck(&healthcheck.options, &healthcheck.arguments),
            Instruction::Shell(shell) => {
                self.shell = shell.arguments.iter().map(|a| a.value.to_string()).collect();
                self.record(format!("SHELL [{}]", self.shell.join(" ")));
                self.config.shell = Some(self.shell.clone());
                Ok(())
            }
            Instruction::Cmd(cmd) => {
                let args = self.command(&cmd.arguments)?;
                self.record(format!("CMD {}", go_quoted(&args)));
                self.config.cmd = Some(Some(args));
                self.cmd_set = true;
                Ok(())
            }
            Instruction::Entrypoint(entrypoint) => {
                let empty = self.empty_entrypoints.contains(&self.line);
                let args = if empty { Vec::new() } else { self.command(&entrypoint.arguments)? };
                self.record(format!("ENTRYPOINT {}", go_quoted(&args)));
                self.config.entrypoint = Some(args);
                // As BuildKit: the base image's Cmd was written for its entrypoint, not this one.
                if !self.cmd_set {
                    self.config.cmd = Some(None);
                }
                Ok(())
            }
            Instruction::Copy(copy) => self.copy(false, &copy.options, &copy.src, &copy.dest),
            Instruction::Add(add) => self.copy(true, &add.options, &add.src, &add.dest),
            Instruction::Run(_) => Err(needs(self.line, "RUN")),
            Instruction::Onbuild(_) => Err(needs(self.line, "ONBUILD")),
            Instruction::Maintainer(_) => Err(needs(self.line, "MAINTAINER")),
            Instruction::From(_) => Err(needs(self.line, "a second FROM")),
            _ => Err(needs(self.line, "an instruction unknown to archway")),
        }
    }

    fn stage_arg(&mut self, text: &str) -> Result<(), RecipeError> {
        let mut shown = Vec::new();
        for word in split_words(text, self.escape) {
            let (name, default) = name_default(self.line, word)?;
            let value = match (self.build_args.get(&name), default) {
                (Some(value), _) => Some(value.clone()),
                (None, Some(default)) => Some(self.expand(&default)?),
                (None, None) => self.globals.get(&name).cloned(),
            };
            match value {
                Some(value) => {
                    shown.push(format!("{name}={value}"));
                    self.args.insert(name, value);
                }
                None => shown.push(name),
            }
        }
        self.record(format!("ARG {}", shown.join(" ")));
        Ok(())
    }

    fn name_values(&self, text: &str, instruction: &str) -> Result<Vec<(String, String)>, RecipeError> {
        let pairs = name_values(text, self.escape, instruction).map_err(|message| invalid(self.line, message))?;
        pairs.into_iter().map(|(name, value)| Ok((self.expand(&name)?, self.expand(&value)?))).collect()
    }

    fn env(&mut self, text: &str) -> Result<(), RecipeError> {
        // Every value is expanded before any is set: `ENV A=1 B=$A` takes the A from before.
        let pairs = self.name_values(text, "ENV")?;
        self.record(format!("ENV {}", shown_pairs(&pairs)));
        for (name, value) in pairs {
            match self.config.env.iter_mut().find(|(existing, _)| *existing == name) {
                Some(entry) => entry.1.clone_from(&value),
                None => self.config.env.push((name.clone(), value.clone())),
            }
            self.env.insert(name, value);
        }
        Ok(())
    }

    fn expose(&mut self, ports: &[UnescapedString<'_>]) -> Result<(), RecipeError> {
        // BuildKit sorts the ports as written, then expands them: the history shows that order.
        let mut written: Vec<&str> = ports.iter().map(|p| p.value.as_ref()).collect();
        self.no_flags(written.first().copied().unwrap_or_default())?;
        written.sort_unstable();
        let mut exposed = Vec::new();
        for word in written {
            let scope = Scope { escape: self.escape, lookup: &|name| self.lookup(name), max_len: self.budget.get() };
            for port in process_words(word, &scope).map_err(|e| self.subst_error(e))? {
                for exposed_port in parse_port(&port).map_err(|message| invalid(self.line, message))? {
                    exposed.push(self.spend(exposed_port)?);
                }
            }
        }
        self.record(format!("EXPOSE [{}]", exposed.join(" ")));
        self.config.exposed_ports.extend(exposed);
        Ok(())
    }

    fn volume(&mut self, arguments: &JsonOrStringArray<'_, 1>) -> Result<(), RecipeError> {
        let written = match arguments {
            JsonOrStringArray::Json(array) => array.value.as_slice(),
            JsonOrStringArray::String(words) => {
                self.no_flags(words.first().map_or("", |w| w.value.as_ref()))?;
                words.as_slice()
            }
        };
        if written.is_empty() {
            return Err(invalid(self.line, "VOLUME requires at least one argument"));
        }
        let mut volumes = Vec::new();
        for volume in written {
            let volume = self.expand(volume.value.trim())?;
            if volume.is_empty() {
                return Err(invalid(self.line, "VOLUME specified can not be an empty string"));
            }
            volumes.push(volume);
        }
        self.record(format!("VOLUME [{}]", volumes.join(" ")));
        self.config.volumes.extend(volumes);
        Ok(())
    }

    fn command(&self, command: &Command<'_>) -> Result<Vec<String>, RecipeError> {
        match command {
            Command::Exec(args) => Ok(args.value.iter().map(|a| a.value.to_string()).collect()),
            Command::Shell(text) => {
                let command = join_lines(self.no_flags(text.value)?, self.escape);
                Ok(self.shell.iter().cloned().chain(Some(command).filter(|c| !c.is_empty())).collect())
            }
            _ => Err(needs(self.line, "a command form unknown to archway")),
        }
    }

    fn healthcheck(&mut self, options: &[Flag<'_>], arguments: &HealthcheckArguments<'_>) -> Result<(), RecipeError> {
        let mut check = Healthcheck::default();
        match arguments {
            // BuildKit reads no option of HEALTHCHECK NONE.
            HealthcheckArguments::None { .. } => check.test = vec!["NONE".into()],
            HealthcheckArguments::Cmd { arguments, .. } => {
                for (name, value) in parse_flags(self.line, options, &HEALTHCHECK_FLAGS)? {
                    let duration = || interval(name, &value).map_err(|message| invalid(self.line, message));
                    match name {
                        "interval" => check.interval = duration()?,
                        "timeout" => check.timeout = duration()?,
                        "start-period" => check.start_period = duration()?,
                        "start-interval" => check.start_interval = duration()?,
                        _ => check.retries = retries(&value).map_err(|message| invalid(self.line, message))?,
                    }
                }
                check.test = match arguments {
                    Command::Exec(args) => Some("CMD".to_string())
                        .into_iter()
                        .chain(args.value.iter().map(|a| a.value.to_string()))
                        .collect(),
                    Command::Shell(text) => match join_lines(text.value, self.escape) {
                        command if command.is_empty() => {
                            return Err(invalid(self.line, "Missing command after HEALTHCHECK CMD"));
                        }
                        command => vec!["CMD-SHELL".into(), command],
                    },
                    _ => return Err(needs(self.line, "a HEALTHCHECK form unknown to archway")),
                };
            }
            _ => return Err(needs(self.line, "a HEALTHCHECK form unknown to archway")),
        }
        self.record(format!("HEALTHCHECK {}", check.go_format()));
        self.config.healthcheck = Some(check.json());
        Ok(())
    }

    fn copy(
        &mut self,
        add: bool,
        options: &[Flag<'_>],
        sources: &[Source<'_>],
        dest: &UnescapedString<'_>,
    ) -> Result<(), RecipeError> {
        let instruction = if add { "ADD" } else { "COPY" };
        let (mut chown, mut chmod) = (String::new(), String::new());
        for (name, value) in parse_flags(self.line, options, if add { &ADD_FLAGS } else { &COPY_FLAGS })? {
            match name {
                "chown" => chown = value,
                "chmod" => chmod = value,
                "link" => {}
                "parents" if value == "false" => {}
                _ => return Err(needs(self.line, format!("{instruction} --{name}"))),
            }
        }
        let mut paths = Vec::new();
        for source in sources {
            let Source::Path(path) = source else {
                return Err(needs(self.line, format!("{instruction} of a here-document")));
            };
            paths.push(self.expand(&path.value)?);
        }
        let (chown, chmod, dest) = (self.expand(&chown)?, self.expand(&chmod)?, self.expand(&dest.value)?);
        let mode = parse_chmod(&chmod);
        if mode == Err(BadChmod::Invalid) {
            let expected = "it should be octal string and between 0 and 07777";
            return Err(invalid(self.line, format!("invalid chmod parameter: '{chmod}'. {expected}")));
        }
        for path in &paths {
            match (remote(path), add) {
                (None, _) => {}
                (Some(Remote::Url), false) => return Err(invalid(self.line, "source can't be a URL for COPY")),
                (Some(Remote::Git), false) => return Err(invalid(self.line, "source can't be a git ref for COPY")),
                (Some(Remote::Url), true) => return Err(needs(self.line, "ADD of a URL")),
                (Some(Remote::Git), true) => return Err(needs(self.line, "ADD of a git repository")),
            }
        }
        let mode = mode.map_err(|_| needs(self.line, format!("{instruction} --chmod with a symbolic mode")))?;
        let owner = match chown.as_str() {
            "" => None,
            chown => Some(
                parse_owner(chown)
                    .ok_or_else(|| needs(self.line, format!("{instruction} --chown with a user name")))?,
            ),
        };
        let flags = [("--chown=", &chown), ("--chmod=", &chmod)].into_iter().filter(|(_, v)| !v.is_empty());
        let words: Vec<String> = std::iter::once(instruction.to_string())
            .chain(flags.map(|(flag, value)| format!("{flag}{value}")))
            .chain(paths.iter().cloned())
            .chain(Some(dest.clone()))
            .collect();
        self.history.push(HistoryStep { created_by: format!("{} # buildkit", words.join(" ")), empty_layer: false });
        let dest = self.workdir.resolve(&dest);
        self.copies.push(CopyStep { line: self.line, sources: paths, dest, chown: owner, chmod: mode, add });
        Ok(())
    }
}

fn keyword<'i>(instruction: &'i Instruction<'_>) -> Option<&'i Keyword> {
    Some(match instruction {
        Instruction::Add(i) => &i.add,
        Instruction::Arg(i) => &i.arg,
        Instruction::Cmd(i) => &i.cmd,
        Instruction::Copy(i) => &i.copy,
        Instruction::Entrypoint(i) => &i.entrypoint,
        Instruction::Env(i) => &i.env,
        Instruction::Expose(i) => &i.expose,
        Instruction::From(i) => &i.from,
        Instruction::Healthcheck(i) => &i.healthcheck,
        Instruction::Label(i) => &i.label,
        Instruction::Maintainer(i) => &i.maintainer,
        Instruction::Onbuild(i) => &i.onbuild,
        Instruction::Run(i) => &i.run,
        Instruction::Shell(i) => &i.shell,
        Instruction::Stopsignal(i) => &i.stopsignal,
        Instruction::User(i) => &i.user,
        Instruction::Volume(i) => &i.volume,
        Instruction::Workdir(i) => &i.workdir,
        _ => return None,
    })
}

/// BuildKit's automatic args, in the global scope without a declaration (a stage needs `ARG NAME`).
fn automatic_args(target: &Platform, build: &Platform, stage: &str) -> [(&'static str, String); 11] {
    let variant = |p: &Platform| p.variant.clone().unwrap_or_default();
    [
        ("BUILDPLATFORM", build.to_string()),
        ("BUILDOS", build.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", build.architecture.clone()),
        ("BUILDVARIANT", variant(build)),
        ("TARGETPLATFORM", target.to_string()),
        ("TARGETOS", target.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", target.architecture.clone()),
        ("TARGETVARIANT", variant(target)),
        ("TARGETSTAGE", stage.to_string()),
    ]
}

/// The first of the leading `--flag` words of an instruction's text, and the text after them (BuildKit's
/// `extractBuilderFlags`; `--` alone ends them).
fn leading_flags(text: &str) -> (Option<&str>, &str) {
    let mut first = None;
    let mut rest = text.trim_start();
    while rest.starts_with("--") {
        let (word, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        rest = after.trim_start();
        if word == "--" {
            break;
        }
        first.get_or_insert(word);
    }
    (first, rest)
}

fn shown_pairs(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join(" ")
}

/// An ARG's `name[=default]`.
fn name_default(line: usize, word: String) -> Result<(String, Option<String>), RecipeError> {
    let (name, default) = match word.split_once('=') {
        Some((name, default)) => (name.to_string(), Some(default.to_string())),
        None => (word, None),
    };
    if name.is_empty() {
        return Err(invalid(line, "ARG names can not be blank"));
    }
    Ok((name, default))
}

/// A `WORKDIR` as BuildKit resolves it (`NormalizeWorkdir`), as far as it is known without the base image.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Workdir {
    Absolute(String),
    /// Relative to the base image's `WorkingDir` (`/` when it has none); `.` is that directory.
    Relative(String),
}

impl Workdir {
    fn cd(&self, path: &str) -> Workdir {
        match self {
            _ if path.is_empty() => self.clone(),
            // BuildKit keeps an absolute path as written, uncleaned.
            _ if path.starts_with('/') => Workdir::Absolute(path.to_string()),
            Workdir::Absolute(dir) => Workdir::Absolute(clean(&format!("{dir}/{path}"))),
            Workdir::Relative(dir) => Workdir::Relative(clean(&format!("{dir}/{path}"))),
        }
    }

    fn shown(&self) -> &str {
        match self {
            Workdir::Absolute(dir) | Workdir::Relative(dir) => dir,
        }
    }

    /// A COPY destination (BuildKit's `pathRelativeToWorkingDir`): a trailing `/` (or `/.`) means a
    /// directory and is kept.
    fn resolve(&self, dest: &str) -> String {
        if dest.starts_with('/') {
            return dest.to_string();
        }
        let dest = if dest.is_empty() || dest == "." { "./" } else { dest };
        let mut joined = clean(&format!("{}/{dest}", self.shown()));
        if dest.ends_with('/') && !joined.ends_with('/') {
            joined.push('/');
        } else if dest.ends_with("/.") {
            if joined != "/" {
                joined.push('/');
            }
            joined.push('.');
        }
        joined
    }
}

/// A shell-form command as BuildKit reads it: continuation lines joined (the escape and newline dropped,
/// the next line's indentation kept), comment and blank lines among them skipped. The parser gives
/// the text as written.
fn join_lines(written: &str, escape: char) -> String {
    let mut joined = String::new();
    for (index, line) in written.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let content = line.trim_start();
        if index > 0 && (content.is_empty() || content.starts_with('#')) {
            continue;
        }
        match line.trim_end_matches([' ', '\t']).strip_suffix(escape) {
            Some(head) => joined.push_str(head),
            None => {
                joined.push_str(line);
                break;
            }
        }
    }
    joined.trim().to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlagKind {
    Bool,
    String,
    /// Repeatable.
    Strings,
}

/// BuildKit's flags of each instruction: a flag it does not know is an error, one it knows but
/// `assemble` does not support needs a builder.
const COPY_FLAGS: [(&str, FlagKind); 6] = [
    ("chown", FlagKind::String),
    ("chmod", FlagKind::String),
    ("link", FlagKind::Bool),
    ("from", FlagKind::String),
    ("parents", FlagKind::Bool),
    ("exclude", FlagKind::Strings),
];
const ADD_FLAGS: [(&str, FlagKind); 7] = [
    ("chown", FlagKind::String),
    ("chmod", FlagKind::String),
    ("link", FlagKind::Bool),
    ("keep-git-dir", FlagKind::Bool),
    ("checksum", FlagKind::String),
    ("unpack", FlagKind::Bool),
    ("exclude", FlagKind::Strings),
];
const HEALTHCHECK_FLAGS: [(&str, FlagKind); 5] = [
    ("interval", FlagKind::String),
    ("timeout", FlagKind::String),
    ("start-period", FlagKind::String),
    ("start-interval", FlagKind::String),
    ("retries", FlagKind::String),
];

/// The flags in order, checked as BuildKit's `BFlags.Parse` does; a boolean's value is `true` or `false`.
fn parse_flags<'f>(
    line: usize,
    flags: &'f [Flag<'_>],
    known: &[(&str, FlagKind)],
) -> Result<Vec<(&'f str, String)>, RecipeError> {
    let mut seen = BTreeSet::new();
    let mut parsed = Vec::new();
    for flag in flags {
        let name: &'f str = &flag.name.value;
        // `--` alone ends BuildKit's flags; parse-dockerfile reads on past it (a source named `--x` is rare).
        if name.is_empty() && flag.value.is_none() {
            continue;
        }
        let kind = known.iter().find(|(known, _)| *known == name).map(|(_, kind)| *kind);
        let kind = kind.ok_or_else(|| invalid(line, format!("unknown flag: --{name}")))?;
        if kind != FlagKind::Strings && !seen.insert(name) {
            return Err(invalid(line, format!("duplicate flag specified: --{name}")));
        }
        let value = match (kind, flag.value.as_ref().map(|v| v.value.as_ref())) {
            (FlagKind::Bool, None) => "true".to_string(),
            (FlagKind::Bool, Some(value)) if value.eq_ignore_ascii_case("true") => "true".into(),
            (FlagKind::Bool, Some(value)) if value.eq_ignore_ascii_case("false") => "false".into(),
            (FlagKind::Bool, Some(value)) if !value.is_empty() => {
                return Err(invalid(line, format!("expecting boolean value for flag --{name}, not: {value}")));
            }
            (_, Some(value)) if kind != FlagKind::Bool => value.to_string(),
            _ => return Err(invalid(line, format!("missing a value on flag: --{name}"))),
        };
        parsed.push((name, value));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::Owner;

    #[test]
    fn base_images_are_every_stages_image_substituted_once() {
        let dockerfile = "ARG BASE=busybox\nARG TAG\nFROM --platform=$BUILDPLATFORM golang:1.23 AS tools\n\
                          RUN go build\nFROM ${BASE}:${TAG:-1.36}-$TARGETARCH AS run\nFROM tools\nFROM scratch\n\
                          FROM --platform=$TARGETPLATFORM ${BASE}:${TAG:-1.36}-$TARGETARCH\n";
        let arm64 = Platform::linux("arm64", None);
        let args = BTreeMap::from([("TAG".to_string(), "1.37".to_string())]);
        let images = base_images(dockerfile, &args, &arm64).unwrap();
        let expected = [
            FromImage { written: "golang:1.23".into(), image: "golang:1.23".into(), for_target: false },
            FromImage {
                written: "${BASE}:${TAG:-1.36}-$TARGETARCH".into(),
                image: "busybox:1.37-arm64".into(),
                for_target: true,
            },
        ];
        assert_eq!(images, expected);
        let bad = base_images("FROM ${X\n", &BTreeMap::new(), &arm64);
        assert!(matches!(bad, Err(RecipeError::Invalid { line: 1, .. })), "{bad:?}");
    }

    fn platform(architecture: &str, variant: Option<&str>) -> Platform {
        Platform { os: "linux".into(), architecture: architecture.into(), variant: variant.map(str::to_string) }
    }

    /// Built for linux/arm/v7 on linux/amd64.
    fn read_with(text: &str, args: &[(&str, &str)]) -> Result<Recipe, RecipeError> {
        let args = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        recipe(text, &args, &platform("arm", Some("v7")), &platform("amd64", None))
    }

    fn read(text: &str) -> Result<Recipe, RecipeError> {
        read_with(text, &[])
    }

    fn ok(text: &str) -> Recipe {
        read(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn empty_layer(created_by: &str) -> HistoryStep {
        HistoryStep { created_by: created_by.into(), empty_layer: true }
    }

    fn layer(created_by: &str) -> HistoryStep {
        HistoryStep { created_by: created_by.into(), empty_layer: false }
    }

    fn copy_step(line: usize, sources: &[&str], dest: &str) -> CopyStep {
        CopyStep { line, sources: strings(sources), dest: dest.into(), chown: None, chmod: None, add: false }
    }

    fn env_of(recipe: &Recipe, name: &str) -> String {
        recipe.config.env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn a_copy_and_a_cmd_make_the_whole_recipe() {
        let recipe = ok("FROM busybox:1.36\nCOPY index.html /srv/\nCMD [\"httpd\", \"-f\"]\n");
        let expected = Recipe {
            base: Base::Image { reference: "busybox:1.36".into(), platform: None },
            copies: vec![copy_step(2, &["index.html"], "/srv/")],
            config: ConfigEdits { cmd: Some(Some(strings(&["httpd", "-f"]))), ..ConfigEdits::default() },
            workdirs: Vec::new(),
            history: vec![layer("COPY index.html /srv/ # buildkit"), empty_layer("CMD [\"httpd\" \"-f\"]")],
        };
        assert_eq!(recipe, expected);
    }

    #[test]
    fn the_blog_static_example() {
        let text = "# A static site.\nARG BASE_IMAGE=busybox:latest\nFROM ${BASE_IMAGE}\nCOPY index.html /srv/\n\
                    EXPOSE 80\nCMD [\"httpd\", \"-f\", \"-h\", \"/srv\"]\n";
        let recipe = read_with(text, &[("BASE_IMAGE", "arm32v7/busybox:1.36")]).unwrap();
        assert_eq!(recipe.base, Base::Image { reference: "arm32v7/busybox:1.36".into(), platform: None });
        assert_eq!(recipe.copies, vec![copy_step(4, &["index.html"], "/srv/")]);
        let created: Vec<&str> = recipe.history.iter().map(|h| h.created_by.as_str()).collect();
        assert_eq!(
            created,
            ["COPY index.html /srv/ # buildkit", "EXPOSE [80/tcp]", "CMD [\"httpd\" \"-f\" \"-h\" \"/srv\"]"]
        );
    }

    #[test]
    fn every_config_instruction_sets_its_field_and_its_history() {
        let recipe = ok(r#"FROM scratch
ENV PATH=/bin
ENV LANG C.UTF-8
LABEL org.opencontainers.image.title="My site" version=1
WORKDIR /srv
USER 1000:1000
EXPOSE 8080 53/udp
VOLUME /data /cache
VOLUME ["/logs"]
STOPSIGNAL SIGQUIT
SHELL ["/bin/ash", "-c"]
ENTRYPOINT ["/bin/httpd"]
CMD -f -h /srv
HEALTHCHECK --interval=5m --retries=2 CMD wget -q localhost
ADD site.tar.gz ./
"#);
        let expected = ConfigEdits {
            env: vec![("PATH".into(), "/bin".into()), ("LANG".into(), "C.UTF-8".into())],
            labels: [("org.opencontainers.image.title", "My site"), ("version", "1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            working_dir: Some("/srv".into()),
            user: Some("1000:1000".into()),
            exposed_ports: ["53/udp", "8080/tcp"].into_iter().map(String::from).collect(),
            volumes: ["/cache", "/data", "/logs"].into_iter().map(String::from).collect(),
            entrypoint: Some(strings(&["/bin/httpd"])),
            cmd: Some(Some(strings(&["/bin/ash", "-c", "-f -h /srv"]))),
            stop_signal: Some("SIGQUIT".into()),
            healthcheck: Some(serde_json::json!({
                "Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 300_000_000_000u64, "Retries": 2
            })),
            shell: Some(strings(&["/bin/ash", "-c"])),
        };
        assert_eq!(recipe.config, expected);
        let history: Vec<HistoryStep> = [
            "ENV PATH=/bin",
            "ENV LANG=C.UTF-8",
            "LABEL org.opencontainers.image.title=My site version=1",
            "WORKDIR /srv",
            "USER 1000:1000",
            "EXPOSE [53/udp 8080/tcp]",
            "VOLUME [/data /cache]",
            "VOLUME [/logs]",
            "STOPSIGNAL SIGQUIT",
            "SHELL [/bin/ash -c]",
            "ENTRYPOINT [\"/bin/httpd\"]",
            "CMD [\"/bin/ash\" \"-c\" \"-f -h /srv\"]",
            "HEALTHCHECK {Test:[CMD-SHELL wget -q localhost] Interval:5m0s Timeout:0s StartPeriod:0s \
             StartInterval:0s Retries:2}",
        ]
        .into_iter()
        .map(empty_layer)
        .chain([layer("ADD site.tar.gz ./ # buildkit")])
        .collect();
        assert_eq!(recipe.history, history);
        let add = CopyStep { add: true, ..copy_step(15, &["site.tar.gz"], "/srv/") };
        assert_eq!(recipe.copies, vec![add]);
        assert_eq!(recipe.base, Base::Scratch);
    }

    #[test]
    fn what_needs_a_builder_and_where() {
        let cases = [
            ("FROM alpine\nCOPY a /\nRUN apk add curl\n", 3, "RUN"),
            ("FROM alpine\nRUN <<EOF\necho hi\nEOF\n", 2, "RUN"),
            ("FROM alpine\nONBUILD COPY . /app\n", 2, "ONBUILD"),
            ("FROM alpine\nMAINTAINER me@example.com\n", 2, "MAINTAINER"),
            ("FROM golang AS build\nCOPY . /src\nFROM alpine\nCOPY --from=build /x /x\n", 3, "a second FROM"),
            ("FROM alpine\nCOPY --from=golang:1.22 /usr/local/go /go\n", 2, "COPY --from"),
            ("FROM alpine\nCOPY --parents a/./b /dst/\n", 2, "COPY --parents"),
            ("FROM alpine\nCOPY --exclude=*.md . /app/\n", 2, "COPY --exclude"),
            ("FROM alpine\nADD --exclude=*.md . /app/\n", 2, "ADD --exclude"),
            ("FROM alpine\nADD https://example.com/app.tar.gz /opt/\n", 2, "ADD of a URL"),
            ("FROM alpine\nADD https://github.com/o/r.git#v1 /src\n", 2, "ADD of a git repository"),
            ("FROM alpine\nADD git@github.com:o/r.git /src\n", 2, "ADD of a git repository"),
            ("FROM alpine\nADD --checksum=sha256:0 https://example.com/a /a\n", 2, "ADD --checksum"),
            ("FROM alpine\nADD --keep-git-dir=true https://github.com/o/r.git /src\n", 2, "ADD --keep-git-dir"),
            ("FROM alpine\nADD --unpack=false app.tar.gz /opt/\n", 2, "ADD --unpack"),
            ("FROM alpine\nCOPY <<EOF /etc/motd\nhello\nEOF\n", 2, "COPY of a here-document"),
            ("FROM alpine\nCOPY --chown=www-data a /srv/\n", 2, "COPY --chown with a user name"),
            ("FROM alpine\nADD --chown=1000:staff a /srv/\n", 2, "ADD --chown with a user name"),
            ("FROM alpine\nCOPY --chmod=u+x run.sh /bin/\n", 2, "COPY --chmod with a symbolic mode"),
            ("FROM golang:1.22\nWORKDIR $GOPATH/src/app\n", 2, "$GOPATH of the base image"),
            (
                "FROM node:22\nARG NODE_VERSION\nLABEL node=${NODE_VERSION:-none}\n",
                3,
                "$NODE_VERSION of the base image",
            ),
            // The first one found: line 2, not the FROM of line 4.
            ("FROM alpine\nRUN true\n\nFROM alpine\n", 2, "RUN"),
        ];
        for (text, line, what) in cases {
            let expected = RecipeError::NeedsBuilder(NeedsBuilder { line, what: what.into() });
            assert_eq!(read(text), Err(expected), "{text:?}");
        }
        let message = read("FROM alpine\nRUN true\n").unwrap_err().to_string();
        assert_eq!(message, "RUN at line 2 needs a builder");
    }

    #[test]
    fn what_a_builder_would_reject_too() {
        let cases = [
            ("", 1, "expected at least one FROM instruction"),
            ("# only a comment\n\n", 1, "expected at least one FROM instruction"),
            ("COPY a /\nFROM alpine\n", 1, "expected FROM"),
            ("ARG A\nENV B=1\nFROM alpine\n", 2, "expected FROM"),
            ("FROM alpine\nFETCH x\n", 2, "unknown instruction 'FETCH'"),
            (
                "FROM alpine\nCOPY --chmod=0899 a /\n",
                2,
                "invalid chmod parameter: '0899'. it should be octal string and between 0 and 07777",
            ),
            (
                "FROM alpine\nCOPY --chmod=17777 a /\n",
                2,
                "invalid chmod parameter: '17777'. it should be octal string and between 0 and 07777",
            ),
            (
                "FROM alpine\nCOPY --chmod=rwx a /\n",
                2,
                "invalid chmod parameter: 'rwx'. it should be octal string and between 0 and 07777",
            ),
            ("FROM alpine\nCOPY --foo=1 a /\n", 2, "unknown flag: --foo"),
            ("FROM alpine\nCOPY --checksum=sha256:0 a /\n", 2, "unknown flag: --checksum"),
            ("FROM alpine\nCOPY --chown a /\n", 2, "missing a value on flag: --chown"),
            ("FROM alpine\nCOPY --link=maybe a /\n", 2, "expecting boolean value for flag --link, not: maybe"),
            ("FROM alpine\nCOPY --chown=1 --chown=2 a /\n", 2, "duplicate flag specified: --chown"),
            ("FROM alpine\nCOPY https://example.com/a /\n", 2, "source can't be a URL for COPY"),
            ("FROM alpine\nCOPY git@github.com:o/r.git /\n", 2, "source can't be a git ref for COPY"),
            ("FROM alpine\nEXPOSE 80/xtp\n", 2, "invalid port: \"80/xtp\": invalid proto: xtp"),
            ("FROM alpine\nEXPOSE http\n", 2, "invalid containerPort: http"),
            ("FROM alpine\nEXPOSE 70000\n", 2, "invalid containerPort: 70000"),
            ("FROM alpine\nEXPOSE 90-80\n", 2, "invalid containerPort: 90-80"),
            ("FROM --platfrom=linux/arm64 alpine\n", 1, "unknown flag: --platfrom"),
            ("FROM alpine:${TAG\n", 1, "syntax error: missing '}'"),
            ("ARG A=\"${B:?B is required}\"\nFROM alpine\n", 1, "B: B is required"),
            ("ARG A=${B:?B is required}\nFROM alpine\n", 1, "syntax error: missing '}'"),
            ("ARG =x\nFROM alpine\n", 1, "ARG names can not be blank"),
            ("FROM $UNSET\n", 1, "base name ($UNSET) should not be blank"),
            ("FROM --platform=$UNSET alpine\n", 1, "empty platform value from expression $UNSET"),
            (
                "FROM alpine AS 1st\n",
                1,
                "invalid name for build stage: \"1st\", name can't start with a number or contain symbols",
            ),
            ("FROM scratch\nENV LONELY\n", 2, "ENV must have two arguments"),
            ("FROM scratch\nLABEL a=1 b\n", 2, "Syntax error - can't find = in \"b\". Must be of the form: name=value"),
            ("FROM scratch\nSTOPSIGNAL SIGFOO\n", 2, "Invalid signal: SIGFOO"),
            ("FROM scratch\nSTOPSIGNAL 0\n", 2, "Invalid signal: 0"),
            ("FROM scratch\nHEALTHCHECK --interval=5x CMD true\n", 2, "time: unknown unit \"x\" in duration \"5x\""),
            ("FROM scratch\nHEALTHCHECK --timeout=10 CMD true\n", 2, "time: missing unit in duration \"10\""),
            (
                "FROM scratch\nHEALTHCHECK --interval=10us CMD true\n",
                2,
                "Interval \"interval\" cannot be less than 1ms",
            ),
            ("FROM scratch\nHEALTHCHECK --retries=-1 CMD true\n", 2, "--retries cannot be negative (-1)"),
            ("FROM scratch\nHEALTHCHECK --period=1s CMD true\n", 2, "unknown flag: --period"),
            ("FROM scratch\nVOLUME []\n", 2, "VOLUME requires at least one argument"),
            ("FROM scratch\nVOLUME $UNSET\n", 2, "VOLUME specified can not be an empty string"),
            ("FROM scratch\nCOPY ${A:?needed} /\n", 2, "A: needed"),
            (
                "FROM scratch\nWORKDIR 'unterminated\n",
                2,
                "unexpected end of statement while looking for matching single-quote",
            ),
            ("FROM scratch\nCMD --version\n", 2, "unknown flag: --version"),
            ("FROM scratch\nENV --a=b C=d\n", 2, "unknown flag: --a"),
            ("FROM scratch\nWORKDIR --x /app\n", 2, "unknown flag: --x"),
            ("FROM scratch\nEXPOSE --udp 53\n", 2, "unknown flag: --udp"),
            ("FROM scratch\nVOLUME --x /data\n", 2, "unknown flag: --x"),
        ];
        for (text, line, message) in cases {
            assert_eq!(read(text), Err(RecipeError::Invalid { line, message: message.into() }), "{text:?}");
        }
        // The parser's own messages: the line is what matters.
        for (text, line) in [("FROM scratch\nSHELL /bin/bash -c\n", 2), ("FROM scratch\nCOPY a\n", 2)] {
            assert!(matches!(read(text), Err(RecipeError::Invalid { line: l, .. }) if l == line), "{text:?}");
        }
        let message = read("FROM alpine\nFETCH x\n").unwrap_err().to_string();
        assert_eq!(message, "Dockerfile line 2: unknown instruction 'FETCH'");
    }

    #[test]
    fn arg_scopes_defaults_and_build_args() {
        let text = "ARG IMAGE=scratch\nARG V=1\nFROM $IMAGE\nARG V\nARG W=$V-w\nARG TARGETARCH\n\
                    ENV OUT=$IMAGE|$V|$W|$TARGETARCH|$TARGETOS\n";
        let cases: [(&[(&str, &str)], &str); 4] = [
            (&[], "|1|1-w|arm|"),
            (&[("V", "2")], "|2|2-w|arm|"),
            (&[("W", "9"), ("UNUSED", "x")], "|1|9|arm|"),
            (&[("TARGETARCH", "riscv64")], "|1|1-w|riscv64|"),
        ];
        for (args, out) in cases {
            let recipe = read_with(text, args).unwrap();
            assert_eq!(recipe.base, Base::Scratch, "{args:?}");
            assert_eq!(env_of(&recipe, "OUT"), out, "{args:?}");
        }
        // Only the stage's ARGs are in the history, with their values.
        let history: Vec<String> = ok(text).history.into_iter().map(|h| h.created_by).collect();
        assert_eq!(history, ["ARG V=1", "ARG W=1-w", "ARG TARGETARCH=arm", "ENV OUT=|1|1-w|arm|"]);
        // An ARG declared without any value is unset: empty on scratch.
        assert_eq!(ok("FROM scratch\nARG NONE\nENV A=x$NONE\n").history[0], empty_layer("ARG NONE"));
        assert_eq!(env_of(&ok("FROM scratch\nARG NONE\nENV A=x$NONE\n"), "A"), "x");
    }

    #[test]
    fn automatic_platform_args_in_from_and_in_the_stage() {
        let recipe = ok("FROM --platform=$BUILDPLATFORM tools:$TARGETOS-$TARGETARCH$TARGETVARIANT-on-$BUILDARCH\n");
        let expected =
            Base::Image { reference: "tools:linux-armv7-on-amd64".into(), platform: Some("linux/amd64".into()) };
        assert_eq!(recipe.base, expected);
        let text = "FROM scratch AS site\nARG TARGETPLATFORM\nARG BUILDPLATFORM\nARG TARGETVARIANT\nARG BUILDVARIANT\n\
                    ARG TARGETSTAGE\n\
                    ENV T=$TARGETPLATFORM B=$BUILDPLATFORM V=$TARGETVARIANT BV=$BUILDVARIANT S=$TARGETSTAGE\n";
        let recipe = ok(text);
        let env: Vec<(&str, &str)> = recipe.config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(env, [("T", "linux/arm/v7"), ("B", "linux/amd64"), ("V", "v7"), ("BV", ""), ("S", "site")]);
        // Undeclared in the stage, an automatic arg is not there.
        assert_eq!(env_of(&ok("FROM scratch\nENV A=[$TARGETARCH]\n"), "A"), "[]");
    }

    #[test]
    fn substitution_in_instructions_that_expand_and_not_in_commands() {
        let recipe = ok(r#"FROM scratch
ARG NAME=site
ENV DIR=/srv/${NAME} EMPTY=
COPY ${NAME}.html \$literal ${UNSET:-fallback} ${NAME:+set}${EMPTY:+unset} '$NAME' $DIR/
LABEL "com.example.name"="$NAME" single='$NAME' double="a ${NAME}" legacy=$DIR\ x
USER ${NAME}:${GROUP:-users}
STOPSIGNAL ${SIG:-SIGTERM}
WORKDIR ${DIR}
VOLUME ${DIR}/data
EXPOSE ${PORT:-80}
CMD echo $NAME
ENTRYPOINT ["run", "$NAME"]
"#);
        assert_eq!(
            recipe.copies,
            vec![copy_step(4, &["site.html", "$literal", "fallback", "set", "$NAME"], "/srv/site/")]
        );
        let labels: Vec<(&str, &str)> = recipe.config.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let expected =
            [("com.example.name", "site"), ("double", "a site"), ("legacy", "/srv/site x"), ("single", "$NAME")];
        assert_eq!(labels, expected);
        assert_eq!(recipe.config.user.as_deref(), Some("site:users"));
        assert_eq!(recipe.config.stop_signal.as_deref(), Some("SIGTERM"));
        assert_eq!(recipe.config.working_dir.as_deref(), Some("/srv/site"));
        assert_eq!(recipe.config.volumes.iter().collect::<Vec<_>>(), ["/srv/site/data"]);
        assert_eq!(recipe.config.exposed_ports.iter().collect::<Vec<_>>(), ["80/tcp"]);
        assert_eq!(recipe.config.cmd, Some(Some(strings(&["/bin/sh", "-c", "echo $NAME"]))));
        assert_eq!(recipe.config.entrypoint, Some(strings(&["run", "$NAME"])));
        assert_eq!(recipe.history[2], layer("COPY site.html $literal fallback set $NAME /srv/site/ # buildkit"));
        // COPY splits on whitespace before it expands, as BuildKit: a quoted space is no help.
        let split = read("FROM scratch\nCOPY \"a b\" /\n");
        let message = "unexpected end of statement while looking for matching double-quote";
        assert_eq!(split, Err(RecipeError::Invalid { line: 2, message: message.into() }));
    }

    #[test]
    fn arg_and_stopsignal_ignore_flags_as_buildkit_does() {
        let recipe = ok("FROM scratch\nARG --x A=1\nSTOPSIGNAL --y SIGINT\nCMD [\"--version\"]\n");
        assert_eq!(recipe.history[0], empty_layer("ARG A=1"));
        assert_eq!(recipe.config.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(recipe.config.cmd, Some(Some(strings(&["--version"]))));
    }

    #[test]
    fn env_wins_over_arg_whatever_the_order() {
        let recipe =
            ok("FROM scratch\nENV V=env\nARG V=arg\nENV AFTER_ARG=$V\nARG W=arg\nENV W=env\nENV AFTER_ENV=$W\n");
        assert_eq!(env_of(&recipe, "AFTER_ARG"), "env");
        assert_eq!(env_of(&recipe, "AFTER_ENV"), "env");
        // A build arg sets the ARG, not the ENV.
        let recipe = read_with("FROM scratch\nENV V=env\nARG V\nENV OUT=$V\n", &[("V", "build")]).unwrap();
        assert_eq!(env_of(&recipe, "OUT"), "env");
    }

    #[test]
    fn env_values_are_expanded_before_any_is_set_and_replace_in_place() {
        let recipe = ok("FROM scratch\nENV A=0 B=x\nENV A=1 C=$A\nENV D=\"$A $C\"\n");
        let env: Vec<(&str, &str)> = recipe.config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(env, [("A", "1"), ("B", "x"), ("C", "0"), ("D", "1 0")]);
        assert_eq!(recipe.history[1], empty_layer("ENV A=1 C=0"));
    }

    #[test]
    fn workdir_chains_and_copy_destinations() {
        let recipe = ok("FROM scratch\nCOPY a .\nWORKDIR /app\nWORKDIR src\nWORKDIR ../lib/\nCOPY b .\nCOPY c sub/\n\
                         COPY d sub/.\nCOPY e f\nCOPY g /abs//h/\n");
        let dests: Vec<&str> = recipe.copies.iter().map(|c| c.dest.as_str()).collect();
        assert_eq!(dests, ["/", "/app/lib/", "/app/lib/sub/", "/app/lib/sub/.", "/app/lib/f", "/abs//h/"]);
        assert_eq!(recipe.config.working_dir.as_deref(), Some("/app/lib"));
        let workdirs: Vec<&str> =
            recipe.history.iter().map(|h| h.created_by.as_str()).filter(|c| c.starts_with("WORKDIR")).collect();
        assert_eq!(workdirs, ["WORKDIR /app", "WORKDIR /app/src", "WORKDIR /app/lib"]);
        // Each makes its directory, not only the last.
        let made: Vec<&str> = recipe.workdirs.iter().map(|w| w.dir.as_str()).collect();
        assert_eq!(made, ["/app", "/app/src", "/app/lib"]);
        // On an image, what is relative to its WorkingDir stays relative until an absolute WORKDIR.
        let recipe = ok("FROM nginx\nCOPY a rel\nCOPY b .\nWORKDIR html\nCOPY d ../conf/\nWORKDIR /abs/\nCOPY e f\n");
        let dests: Vec<&str> = recipe.copies.iter().map(|c| c.dest.as_str()).collect();
        assert_eq!(dests, ["rel", "./", "conf/", "/abs/f"]);
        assert_eq!(recipe.config.working_dir.as_deref(), Some("/abs/"));
        let relative = ok("FROM nginx\nWORKDIR a\nWORKDIR b/../c\n");
        assert_eq!(relative.config.working_dir.as_deref(), Some("a/c"));
        assert_eq!(relative.history[1], empty_layer("WORKDIR a/c"));
        assert_eq!(ok("FROM nginx\nWORKDIR ..\n").config.working_dir.as_deref(), Some(".."));
    }

    #[test]
    fn entrypoint_clears_the_base_cmd_unless_the_stage_sets_one() {
        type Cmd = Option<Option<Vec<String>>>;
        let cases: [(&str, Option<Vec<String>>, Cmd); 5] = [
            ("ENTRYPOINT [\"/run\"]", Some(strings(&["/run"])), Some(None)),
            ("ENTRYPOINT [\"/run\"]\nCMD [\"x\"]", Some(strings(&["/run"])), Some(Some(strings(&["x"])))),
            ("CMD [\"x\"]\nENTRYPOINT [\"/run\"]", Some(strings(&["/run"])), Some(Some(strings(&["x"])))),
            ("ENTRYPOINT []", Some(vec![]), Some(None)),
            ("CMD []", None, Some(Some(vec![]))),
        ];
        for (body, entrypoint, cmd) in cases {
            let recipe = ok(&format!("FROM alpine\n{body}\n"));
            assert_eq!((recipe.config.entrypoint, recipe.config.cmd), (entrypoint, cmd), "{body}");
        }
        // The empty exec form anywhere, in any case, and the lines after it still right.
        let recipe = ok("FROM alpine\n  entrypoint [ ]\nCOPY a /\nENTRYPOINT []\nCOPY [\"\", \"/x\"]\n");
        assert_eq!(recipe.config.entrypoint, Some(vec![]));
        assert_eq!(recipe.history[0], empty_layer("ENTRYPOINT []"));
        assert_eq!(recipe.copies, vec![copy_step(3, &["a"], "/"), copy_step(5, &[""], "/x")]);
    }

    #[test]
    fn shell_form_uses_the_shell_in_effect_and_joins_continuation_lines() {
        let recipe = ok(r#"FROM scratch
CMD echo "$HOME" \
    # a comment inside

    && ls
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENTRYPOINT exec run \$HOME "a\tb"
HEALTHCHECK CMD curl -f http://localhost/ || exit 1
"#);
        assert_eq!(recipe.config.cmd, Some(Some(strings(&["/bin/sh", "-c", "echo \"$HOME\"     && ls"]))));
        let entrypoint = strings(&["/bin/bash", "-o", "pipefail", "-c", "exec run \\$HOME \"a\\tb\""]);
        assert_eq!(recipe.config.entrypoint, Some(entrypoint));
        let test = serde_json::json!({"Test": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]});
        assert_eq!(recipe.config.healthcheck, Some(test));
        assert_eq!(recipe.history[0], empty_layer("CMD [\"/bin/sh\" \"-c\" \"echo \\\"$HOME\\\"     && ls\"]"));
        assert_eq!(recipe.history[1], empty_layer("SHELL [/bin/bash -o pipefail -c]"));
        // Not JSON after all: the shell form of the whole text.
        let recipe = ok("FROM scratch\nCMD [\"a\", 1]\n");
        assert_eq!(recipe.config.cmd, Some(Some(strings(&["/bin/sh", "-c", "[\"a\", 1]"]))));
    }

    #[test]
    fn healthcheck_as_docker_writes_it() {
        let text = "FROM scratch\nHEALTHCHECK --interval=30s --timeout=3s --start-period=1m30s --start-interval=500ms \
                    --retries=3 CMD [\"curl\", \"-f\", \"http://localhost/\"]\n";
        let recipe = ok(text);
        let expected = serde_json::json!({
            "Test": ["CMD", "curl", "-f", "http://localhost/"],
            "Interval": 30_000_000_000u64,
            "Timeout": 3_000_000_000u64,
            "StartPeriod": 90_000_000_000u64,
            "StartInterval": 500_000_000u64,
            "Retries": 3,
        });
        assert_eq!(recipe.config.healthcheck, Some(expected));
        let history = "HEALTHCHECK {Test:[CMD curl -f http://localhost/] Interval:30s Timeout:3s StartPeriod:1m30s \
                       StartInterval:500ms Retries:3}";
        assert_eq!(recipe.history, vec![empty_layer(history)]);
        let none = ok("FROM scratch\nHEALTHCHECK NONE\n");
        assert_eq!(none.config.healthcheck, Some(serde_json::json!({"Test": ["NONE"]})));
        let history = "HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}";
        assert_eq!(none.history, vec![empty_layer(history)]);
        let zero = ok("FROM scratch\nHEALTHCHECK --interval=0s --retries=0 CMD true\n");
        assert_eq!(zero.config.healthcheck, Some(serde_json::json!({"Test": ["CMD-SHELL", "true"]})));
    }

    #[test]
    fn chown_and_chmod() {
        let owner = |uid, gid| Some(Owner { uid, gid });
        let cases: [(&str, Option<Owner>, Option<u32>, &str); 9] = [
            ("--chown=1000", owner(1000, 1000), None, "--chown=1000"),
            ("--chown=1000:50", owner(1000, 50), None, "--chown=1000:50"),
            ("--chown=root:root", owner(0, 0), None, "--chown=root:root"),
            ("--chown=$UID:$GID", owner(10, 20), None, "--chown=10:20"),
            ("--chown=", None, None, ""),
            ("--chmod=644", None, Some(0o644), "--chmod=644"),
            ("--chmod=0755 --link", None, Some(0o755), "--chmod=0755"),
            ("--link=false --chmod=7777 --chown=0:0", owner(0, 0), Some(0o7777), "--chown=0:0 --chmod=7777"),
            ("--parents=false", None, None, ""),
        ];
        for (flags, chown, chmod, shown) in cases {
            let recipe = ok(&format!("FROM scratch\nARG UID=10 GID=20\nCOPY {flags} a /b\n"));
            let step = CopyStep { chown, chmod, ..copy_step(3, &["a"], "/b") };
            assert_eq!(recipe.copies, vec![step], "{flags}");
            let created_by = format!("COPY {shown} a /b # buildkit").replace("  ", " ");
            assert_eq!(recipe.history[1], layer(&created_by), "{flags}");
        }
    }

    #[test]
    fn escape_directive() {
        let recipe = ok("# escape=`\nFROM scratch\nCOPY src\\app.bin `\n     /dest/\nENV P=a\\b Q=`$literal\n\
                         CMD echo a `\n    b\n");
        assert_eq!(recipe.copies, vec![copy_step(3, &["src\\app.bin"], "/dest/")]);
        assert_eq!(env_of(&recipe, "P"), "a\\b");
        assert_eq!(env_of(&recipe, "Q"), "$literal");
        assert_eq!(recipe.config.cmd, Some(Some(strings(&["/bin/sh", "-c", "echo a     b"]))));
        // Not a directive once an instruction came.
        assert!(matches!(read("FROM scratch\n# escape=`\nENV A=`\n"), Ok(r) if env_of(&r, "A") == "`"));
    }

    #[test]
    fn line_continuations_comments_crlf_and_bom() {
        let text = "\u{feff}# a comment\nFROM scratch\nENV A=1 \\\n# between\n    B=2\n\
                    LABEL x=y \\\n\n      z=w\nCOPY a \\\n  b /c/\n";
        let recipe = ok(text);
        let env: Vec<(&str, &str)> = recipe.config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(env, [("A", "1"), ("B", "2")]);
        assert_eq!(recipe.config.labels.get("z").map(String::as_str), Some("w"));
        assert_eq!(recipe.copies, vec![copy_step(9, &["a", "b"], "/c/")]);
        let crlf = ok("FROM scratch\r\nENV A=1 \\\r\n  B=2\r\nCMD echo hi \\\r\n  there\r\nRUN x\r\n"
            .replace("RUN x\r\n", "")
            .as_str());
        assert_eq!(env_of(&crlf, "B"), "2");
        assert_eq!(crlf.config.cmd, Some(Some(strings(&["/bin/sh", "-c", "echo hi   there"]))));
        assert_eq!(read("\u{feff}FROM alpine\nRUN x\n"), Err(needs(2, "RUN")));
    }

    #[test]
    fn expose_forms_in_buildkit_order() {
        let recipe =
            ok("FROM scratch\nARG PORTS=\"1 2\"\nEXPOSE 80 443/udp 8000-8002 53/UDP 127.0.0.1:8080:9090/tcp $PORTS\n");
        let history = "EXPOSE [1/tcp 2/tcp 9090/tcp 443/udp 53/udp 80/tcp 8000/tcp 8001/tcp 8002/tcp]";
        assert_eq!(recipe.history[1], empty_layer(history));
        let ports: Vec<&str> = recipe.config.exposed_ports.iter().map(String::as_str).collect();
        assert_eq!(
            ports,
            ["1/tcp", "2/tcp", "443/udp", "53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp", "9090/tcp"]
        );
    }

    #[test]
    fn variables_of_the_base_image() {
        // scratch has no Env: unset is empty.
        assert_eq!(env_of(&ok("FROM scratch\nENV A=[$HOME${HOME}${HOME:-d}]\n"), "A"), "[d]");
        // A value from the Dockerfile needs no base image.
        let recipe = read_with("FROM alpine\nARG VERSION\nLABEL v=$VERSION\n", &[("VERSION", "3")]).unwrap();
        assert_eq!(recipe.config.labels.get("v").map(String::as_str), Some("3"));
        // Special parameters are no one's.
        assert_eq!(env_of(&ok("FROM alpine\nENV A=x$1$$\n"), "A"), "x");
        // In a command nothing is substituted, so nothing is needed.
        assert_eq!(
            ok("FROM alpine\nCMD echo $HOME\n").config.cmd,
            Some(Some(strings(&["/bin/sh", "-c", "echo $HOME"])))
        );
        // A syntax error is reported as such even next to an unknown variable.
        let error = read("FROM alpine\nENV A=$HOME${\n");
        assert_eq!(error, Err(RecipeError::Invalid { line: 2, message: "syntax error: missing '}'".into() }));
    }

    #[test]
    fn hostile_sizes_need_a_builder_rather_than_all_memory() {
        let doubling = format!("FROM scratch\nENV A=0123456789\n{}", "ENV A=$A$A\n".repeat(40));
        assert_eq!(read(&doubling), Err(needs(22, "a Dockerfile past archway's size limits")));
        let ranges = format!("FROM scratch\nEXPOSE {}\n", "0-65535 ".repeat(100));
        assert_eq!(read(&ranges), Err(needs(2, "a Dockerfile past archway's size limits")));
        let nested = format!("FROM scratch\nENV A={}x{}\n", "${A:-".repeat(1_000), "}".repeat(1_000));
        assert_eq!(read(&nested), Err(needs(2, "a Dockerfile past archway's size limits")));
    }

    #[test]
    fn helpers() {
        for (path, cleaned) in [("/a/./b/../c//", "/a/c"), ("a/../..", ".."), ("/..", "/"), ("./", "."), ("", ".")] {
            assert_eq!(clean(path), cleaned, "{path}");
        }
    }

    /// Odd inputs: whatever comes back, nothing panics.
    #[test]
    fn odd_inputs_do_not_panic() {
        let mut inputs: Vec<String> = [
            "",
            "\n\n\n",
            "# just a comment",
            "# escape=`\n# escape=\\\n",
            "FROM",
            "FROM \"",
            "FROM ${",
            "FROM $",
            "FROM a\nCOPY \"unterminated /x",
            "FROM a\nENV A=\"unterminated",
            "FROM a\nLABEL 'x",
            "FROM a\nCMD [\"a\"",
            "FROM a\nENTRYPOINT [",
            "FROM a\nENTRYPOINT []\nENTRYPOINT []",
            "FROM a\nCOPY <<EOF /x\n",
            "FROM a\nHEALTHCHECK",
            "FROM a\nHEALTHCHECK CMD",
            "FROM a\nHEALTHCHECK --interval= CMD x",
            "FROM a\nEXPOSE ::::",
            "FROM a\nEXPOSE 1-",
            "FROM a\nSTOPSIGNAL SIGRTMIN+99999999999999999999",
            "FROM a\x00\nCOPY \x00 /\x00",
            "\u{feff}",
            "FROM scratch\nENV A=${A:-${A:-${A:-${A:-x}}}}",
            "FROM scratch\nARG A=${A/*/${A//?/x}}",
            "FROM scratch\nCOPY \\",
            "FROM scratch\nWORKDIR \\\n",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        inputs.push(format!("FROM scratch\nENV A={}\n", "x".repeat(200_000)));
        inputs.push(format!("FROM scratch\nCOPY {} /\n", "${".repeat(10_000)));
        inputs.push("FROM scratch\n".to_string() + &"ENTRYPOINT []\n".repeat(1_000));
        // A few thousand random mixes of Dockerfile pieces, reproducible.
        let pieces = [
            "FROM ",
            "scratch",
            "alpine",
            "ARG ",
            "ENV ",
            "COPY ",
            "ADD ",
            "RUN ",
            "CMD ",
            "ENTRYPOINT ",
            "SHELL ",
            "HEALTHCHECK ",
            "EXPOSE ",
            "WORKDIR ",
            "LABEL ",
            "ONBUILD ",
            "--chown=",
            "--chmod=",
            "--from=",
            "--",
            "$",
            "${",
            "}",
            ":-",
            ":+",
            "#",
            "%",
            "/",
            "\"",
            "'",
            "\\",
            "`",
            "[",
            "]",
            ",",
            "=",
            " ",
            "\t",
            "\n",
            "\r\n",
            "<<EOF",
            "EOF",
            "\0",
            "é",
            "80",
            "a",
            "# escape=`\n",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3_000 {
            let mut text = String::new();
            for _ in 0..(state % 40) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(pieces[(state % pieces.len() as u64) as usize]);
            }
            inputs.push(text);
        }
        for input in &inputs {
            let _ = read(input);
            let _ = read(&format!("FROM scratch\n{input}"));
        }
        let message = "unexpected end of statement while looking for matching double-quote";
        assert_eq!(read("FROM \""), Err(RecipeError::Invalid { line: 1, message: message.into() }));
    }
}
