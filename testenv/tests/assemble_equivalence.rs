//! `archway assemble` makes the image a builder makes. A corpus of RUN-less Dockerfiles (every
//! instruction `assemble` supports, ARG substitution, `scratch`, `--chown`/`--chmod`, `.dockerignore`, a
//! directory tree with symlinks, an empty file and unusual modes) is built for linux/amd64 and
//! linux/arm64 twice: by `archway assemble` and by buildah. Both images are read back from the registry
//! with skopeo, their layers applied in order into a file tree, and the merged trees (paths, types,
//! modes, owners, contents, symlink targets) and the configs (platform, and the fields that decide how a
//! container runs) compared child by child.
//!
//! `assemble` follows Docker's semantics as BuildKit implements them; buildah 1.28 (Debian's) differs
//! from them in a few places. Those places are normalised narrowly: a few conventions
//! for every case (in [`compare_configs`]), and otherwise per case, as exact differences the case must
//! show, each with its reason. A known difference that stops showing fails the test too: its entry is
//! then stale (fixed, or a different buildah).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use archway_testenv::env::{Env, EnvOptions};
use serde_json::Value;
use tokio::process::Command;

const PLATFORMS: [&str; 2] = ["linux/amd64", "linux/arm64"];
/// `{base}` in a Dockerfile or a build arg stands for the environment's multi-arch busybox (merged-usr:
/// `/bin -> usr/bin`, `/var/run -> ../run`; `/srv` 0755 and `/tmp` 1777, and `Cmd` `sh`).
const BASE: &str = "{base}";

/// One Dockerfile of the corpus, its build context, and the differences it is known to show.
struct Case {
    name: &'static str,
    dockerfile: &'static str,
    context: &'static [Item],
    build_args: &'static [(&'static str, &'static str)],
    /// `(where, what)` of each difference this case shows on every platform, as [`Diff`] has them;
    /// the case says why next to it.
    known: &'static [(&'static str, &'static str)],
}

/// A member of a build context. Directories not listed are 0755.
enum Item {
    File(&'static str, &'static str, u32),
    Dir(&'static str, u32),
    Symlink(&'static str, &'static str),
}

use Item::{Dir, File, Symlink};

const CASES: &[Case] = &[
    Case {
        // Global ARGs (one in FROM, overridden by a build arg; one redeclared in the stage), stage ARGs
        // with a default, an empty one, the automatic platform ARGs, `${V:-d}` and `${V:+x}`; in ENV,
        // LABEL and a COPY source, so each platform copies its own file.
        name: "args",
        dockerfile: concat!(
            "ARG BASE=scratch\n",
            "ARG GREETING=hello\n",
            "FROM $BASE\n",
            "ARG GREETING\n",
            "ARG LEVEL=info\n",
            "ARG EMPTY=\n",
            "ARG TARGETARCH\n",
            "ARG TARGETPLATFORM\n",
            "ENV GREETING=$GREETING LEVEL=${LEVEL} FALLBACK=${EMPTY:-fallback} SET=${LEVEL:+yes}\n",
            "LABEL platform=$TARGETPLATFORM arch=${TARGETARCH}\n",
            "COPY arch-${TARGETARCH}.txt /srv/arch.txt\n",
        ),
        context: &[File("arch-amd64.txt", "x86_64\n", 0o644), File("arch-arm64.txt", "aarch64\n", 0o644)],
        build_args: &[("BASE", BASE), ("LEVEL", "debug")],
        known: &[],
    },
    Case {
        // Both ENV forms, an escaped space, a reference to an earlier ENV, a redefinition and a new PATH
        // (both replace the variable where it is).
        name: "env",
        dockerfile: concat!(
            "FROM {base}\n",
            "ENV A=1 B=\"two words\" C=with\\ space\n",
            "ENV LEGACY legacy form value\n",
            "ENV D=${A}-$B\n",
            "ENV A=replaced\n",
            "ENV PATH=/opt/bin:/usr/bin:/bin\n",
        ),
        context: &[],
        build_args: &[],
        known: &[],
    },
    Case {
        name: "labels",
        dockerfile: concat!(
            "FROM {base}\n",
            "LABEL org.opencontainers.image.title=\"Equivalence\" version=1.0\n",
            "LABEL \"com.example.multi word\"=\"a b c\" \\\n",
            "      empty=\"\"\n",
            "LABEL version=2.0\n",
        ),
        context: &[],
        build_args: &[],
        known: &[],
    },
    Case {
        // WORKDIR absolute, then relative; COPY to destinations relative to it, and to a WORKDIR without
        // a trailing `/` (a directory: into it); USER; EXPOSE of tcp, udp, a range and an upper-case
        // protocol.
        name: "workdir-user-expose",
        dockerfile: concat!(
            "FROM {base}\n",
            "WORKDIR /app\n",
            "WORKDIR sub/dir\n",
            "COPY hello.txt ./\n",
            "COPY hello.txt rel/\n",
            "WORKDIR /app\n",
            "COPY hello.txt /app\n",
            "USER 1000:1000\n",
            "EXPOSE 80 443/tcp 53/udp 8000-8002 9090/UDP\n",
        ),
        context: &[File("hello.txt", "hello\n", 0o644)],
        build_args: &[],
        known: &[],
    },
    Case {
        // Every WORKDIR makes its directory, the one after USER owned by that user; copying the context
        // into it leaves it so.
        name: "workdirs",
        dockerfile: concat!(
            "FROM {base}\n",
            "WORKDIR /first\n",
            "WORKDIR /second\n",
            "WORKDIR third\n",
            "USER 1000:1000\n",
            "WORKDIR /srv/app\n",
            "COPY . .\n",
        ),
        context: &[File("app.txt", "app\n", 0o644)],
        build_args: &[],
        known: &[],
    },
    Case {
        // /home is new in the base: WORKDIR makes it for the USER too, as `mkdir -p` does.
        name: "user-workdir-new-parent",
        dockerfile: concat!("FROM {base}\n", "USER 1000:1000\n", "WORKDIR /home/app\n"),
        context: &[],
        build_args: &[],
        known: &[],
    },
    Case {
        // The base's Cmd (`sh`) was written for its entrypoint: an ENTRYPOINT without a CMD clears it.
        name: "entrypoint-clears-cmd",
        dockerfile: concat!("FROM {base}\n", "ENTRYPOINT [\"/bin/echo\", \"hello\"]\n"),
        context: &[],
        build_args: &[],
        known: &[],
    },
    Case {
        name: "shell-forms",
        dockerfile: concat!("FROM {base}\n", "ENTRYPOINT echo start\n", "CMD echo hello world\n"),
        context: &[],
        build_args: &[],
        known: &[],
    },
    Case {
        // Docker runs a shell form in the SHELL set before it; buildah keeps `/bin/sh -c` (it stores the
        // Shell field, but its CMD ignores it).
        name: "shell",
        dockerfile: concat!(
            "FROM {base}\n",
            "SHELL [\"/bin/ash\", \"-eo\", \"pipefail\", \"-c\"]\n",
            "CMD echo shell form\n"
        ),
        context: &[],
        build_args: &[],
        known: &[(
            "config.Cmd",
            r#"["/bin/ash","-eo","pipefail","-c","echo shell form"] != ["/bin/sh","-c","echo shell form"]"#,
        )],
    },
    Case {
        name: "volume-stopsignal-healthcheck",
        dockerfile: concat!(
            "FROM {base}\n",
            "ARG VOL=/vol\n",
            "VOLUME [\"/data\", \"/var/log/app\"]\n",
            "VOLUME /cache $VOL\n",
            "STOPSIGNAL SIGQUIT\n",
            "HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=2 \\\n",
            "  CMD wget -q -O- http://localhost/ || exit 1\n",
        ),
        context: &[],
        build_args: &[],
        known: &[],
    },
    Case {
        name: "healthcheck-none-signal-number",
        dockerfile: concat!("FROM {base}\n", "HEALTHCHECK NONE\n", "STOPSIGNAL 9\n"),
        context: &[],
        build_args: &[],
        known: &[],
    },
    Case {
        // A file; a directory's contents; wildcards (`*`, `?`, `[...]`); several files; two directories
        // merged; the JSON form with a space in a name; ADD of a plain file (copied, not extracted), with
        // --chown; top-level symlinks (followed: to a file, to a directory); the same path twice (the
        // last wins).
        name: "copy-forms",
        dockerfile: concat!(
            "FROM {base}\n",
            "COPY single.txt /srv/\n",
            "COPY conf/ /etc/app/\n",
            "COPY conf/*.conf /etc/wild/\n",
            "COPY ?ile[0-9].txt /etc/wild/\n",
            "COPY a.txt b.txt /opt/multi/\n",
            "COPY d1 d2 /opt/merged/\n",
            "COPY [\"with space.txt\", \"/srv/\"]\n",
            "ADD added.txt /opt/added/plain.txt\n",
            "ADD --chown=7:8 added.txt /srv/\n",
            "COPY file-link /srv/\n",
            "COPY dir-link /opt/followed/\n",
            "COPY single.txt /srv/twice.txt\n",
            "COPY a.txt /srv/twice.txt\n",
        ),
        context: &[
            File("single.txt", "single\n", 0o644),
            File("conf/x.conf", "x=1\n", 0o644),
            File("conf/y.conf", "y=2\n", 0o644),
            File("conf/readme.md", "not a conf\n", 0o644),
            File("file1.txt", "1\n", 0o644),
            File("file2.txt", "2\n", 0o644),
            File("a.txt", "a\n", 0o644),
            File("b.txt", "b\n", 0o644),
            File("d1/a", "a\n", 0o644),
            File("d2/b", "b\n", 0o644),
            File("d2/sub/c", "c\n", 0o644),
            File("with space.txt", "space\n", 0o644),
            File("added.txt", "added, not extracted\n", 0o644),
            Symlink("file-link", "single.txt"),
            File("real/r", "r\n", 0o644),
            Symlink("dir-link", "real"),
        ],
        build_args: &[],
        known: &[],
    },
    Case {
        name: "chown-chmod",
        dockerfile: concat!(
            "FROM {base}\n",
            "COPY --chown=1000:1000 owned.txt /srv/owned.txt\n",
            "COPY --chown=1000 owned.txt /srv/uid-only.txt\n",
            "COPY --chown=1001:1002 --chmod=0640 data/ /srv/data/\n",
            "COPY --chmod=0755 run.sh /srv/bin/\n",
        ),
        context: &[
            File("owned.txt", "mine\n", 0o644),
            File("data/one", "1\n", 0o644),
            File("data/sub/two", "2\n", 0o600),
            File("run.sh", "#!/bin/sh\necho run\n", 0o644),
        ],
        build_args: &[],
        // BuildKit makes a COPY's missing destination directory with --chmod's mode (since its file
        // copier's fix of 2025; 0755 before); buildah makes it 0755 and chmods only what it copies.
        known: &[("/srv/data", "mode 0640 != 0755")],
    },
    Case {
        // The new parents of a --chown COPY's destination are made for that owner.
        name: "chown-new-parents",
        dockerfile: concat!("FROM {base}\n", "COPY --chown=1003:1004 nested.txt /home/app/deep/\n"),
        context: &[File("nested.txt", "n\n", 0o644)],
        build_args: &[],
        known: &[],
    },
    Case {
        // An exclusion by pattern with an exception, an excluded directory, a `**` pattern; the context
        // into a directory and into the image's root.
        name: "dockerignore",
        dockerfile: concat!("FROM {base}\n", "COPY . /app/\n", "COPY . /\n"),
        context: &[
            File(".dockerignore", "*.log\n!keep.log\nsecret/\n**/*.tmp\n", 0o644),
            File("app.js", "console.log('hi')\n", 0o644),
            File("debug.log", "noise\n", 0o644),
            File("keep.log", "kept\n", 0o644),
            File("secret/key", "hunter2\n", 0o600),
            File("lib/util.js", "module.exports = {}\n", 0o644),
            File("lib/cache.tmp", "tmp\n", 0o644),
        ],
        build_args: &[],
        known: &[],
    },
    Case {
        // A tree three levels deep: relative and absolute (dangling) symlinks, an empty file, an empty
        // directory, a hidden file, a long path, a non-ASCII name, and modes 0700, 0711, 01777, 0600,
        // 0755, 04755 and 02755. The top is 0750, which the copy does not keep: the destination it
        // makes is 0755.
        name: "tree",
        dockerfile: concat!("FROM {base}\n", "COPY tree /opt/tree\n"),
        context: &[
            Dir("tree", 0o750),
            File("tree/empty", "", 0o644),
            File("tree/private", "secret\n", 0o600),
            File("tree/.hidden", "hidden\n", 0o644),
            File("tree/exec.sh", "#!/bin/sh\n", 0o755),
            File("tree/suid", "#!/bin/sh\n", 0o4755),
            File("tree/sgid", "#!/bin/sh\n", 0o2755),
            File("tree/a/b/c/deep.txt", "deep\n", 0o644),
            Dir("tree/a/b", 0o700),
            Dir("tree/emptydir", 0o711),
            Dir("tree/sticky", 0o1777),
            File("tree/sticky/f", "f\n", 0o644),
            Symlink("tree/link", "a/b/c/deep.txt"),
            Symlink("tree/abs", "/etc/passwd"),
            File(
                "tree/long/a-directory-name-long-enough-that-the-path-needs-more-than-a-plain-tar-header/\
                 and-another-one-to-pass-one-hundred-characters/file.txt",
                "long\n",
                0o644,
            ),
            File("tree/\u{e9}t\u{e9}.txt", "non-ASCII\n", 0o644),
        ],
        build_args: &[],
        known: &[
            // buildah drops setuid and setgid from what it copies from the context (its stage executor
            // asks its copier to: "did this change between 18.06 and 19.03?"); Docker keeps them.
            ("/opt/tree/suid", "mode 4755 != 0755"),
            ("/opt/tree/sgid", "mode 2755 != 0755"),
        ],
    },
    Case {
        name: "scratch",
        dockerfile: concat!("FROM scratch\n", "COPY hello /hello\n", "CMD [\"/hello\"]\n"),
        context: &[File("hello", "#!/bin/sh\necho hello\n", 0o755)],
        build_args: &[],
        known: &[],
    },
    Case {
        // Directories the base image has: an existing WORKDIR and a COPY's existing destination
        // directory stay as they are (/tmp keeps 1777), a file named onto an existing directory goes
        // into it.
        name: "existing-dirs",
        dockerfile: concat!("FROM {base}\n", "WORKDIR /tmp\n", "COPY site /tmp/\n", "COPY file.txt /srv\n"),
        context: &[File("site/index.html", "i\n", 0o644), Dir("site", 0o750), File("file.txt", "f\n", 0o644)],
        build_args: &[],
        known: &[],
    },
    Case {
        // Destinations below the base's symlinks land where they lead, as buildah resolves them: into
        // a link to a directory with and without `/`, a file under a link, a directory's contents
        // under a relative link, a WORKDIR under one; /bin and /var/run stay links.
        name: "base-symlinks",
        dockerfile: concat!(
            "FROM {base}\n",
            "COPY tool /bin/\n",
            "COPY tool /bin/tool2\n",
            "COPY tool /bin\n",
            "COPY app/ /var/run/app/\n",
            "COPY app /var/run\n",
            "WORKDIR /var/run/work\n",
            "COPY tool ./\n",
        ),
        context: &[
            File("tool", "#!/bin/sh\necho tool\n", 0o755),
            File("app/conf", "c\n", 0o644),
            File("app/sub/data", "d\n", 0o600),
        ],
        build_args: &[],
        known: &[],
    },
    Case {
        // The new directories below a link are made for their owner: a WORKDIR after USER, the
        // parents of a --chown COPY.
        name: "base-symlinks-owners",
        dockerfile: concat!(
            "FROM {base}\n",
            "USER 1000:1000\n",
            "WORKDIR /var/run/user/dir\n",
            "COPY --chown=1001:1002 tool /bin/sub/new/\n",
        ),
        context: &[File("tool", "#!/bin/sh\necho tool\n", 0o755)],
        build_args: &[],
        known: &[],
    },
];

/// One case on one platform.
struct Job<'a> {
    case: &'a Case,
    platform: &'static str,
}

/// What every job needs: the environment, its base image, archway's binary, and a directory to work in
/// (contexts, buildah's stores, what skopeo reads back).
struct Setup {
    env: Env,
    base: String,
    archway: PathBuf,
    work: PathBuf,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assemble_builds_what_buildah_builds() -> Result<()> {
    let started = Instant::now();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testenv-assemble-equivalence");
    let env = Env::start(EnvOptions { nodes: false, operator: false, ..EnvOptions::new(&dir) }).await?;
    let base = env.base_image.clone().context("the environment has no base image")?;
    let archway = archway_bin()?;
    let work = env.dir.join("equivalence");
    let setup = Setup { env, base, archway, work };
    for case in CASES {
        write_context(&setup.work.join("contexts").join(case.name), case, &setup.base)
            .with_context(|| format!("writing the context of {}", case.name))?;
    }
    // The platforms at once (the machine has two cores), each one's cases one after the other: each
    // platform has a buildah store of its own, which then serves one build at a time.
    let per_platform = PLATFORMS.iter().map(|platform| {
        let setup = &setup;
        async move {
            let mut results = Vec::new();
            for case in CASES {
                let job = Job { case, platform };
                results.push((format!("{} {platform}", case.name), compare(setup, &job).await));
            }
            results
        }
    });
    let results: Vec<(String, Result<Vec<String>>)> =
        futures::future::join_all(per_platform).await.into_iter().flatten().collect();
    let total = results.len();
    let mut failures = Vec::new();
    for (job, result) in results {
        match result {
            Ok(diffs) if diffs.is_empty() => {}
            Ok(diffs) => failures.push(format!("{job}:\n  {}", diffs.join("\n  "))),
            Err(e) => failures.push(format!("{job}: {e:#}")),
        }
    }
    failures.sort();
    ensure!(failures.is_empty(), "{} of {total} builds differ:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{} cases x {} platforms equivalent in {:.0?}", CASES.len(), PLATFORMS.len(), started.elapsed());
    setup.env.remove().await;
    Ok(())
}

/// Builds one case for one platform both ways and returns what is wrong, one line each: a difference
/// the case does not know, or one it knows that did not show.
async fn compare(setup: &Setup, job: &Job<'_>) -> Result<Vec<String>> {
    let context = setup.work.join("contexts").join(job.case.name);
    let arch = job.platform.rsplit('/').next().unwrap_or(job.platform);
    let scratch = setup.work.join("jobs").join(format!("{}-{arch}", job.case.name));
    std::fs::create_dir_all(&scratch)?;
    let args: Vec<(String, String)> =
        job.case.build_args.iter().map(|(k, v)| (k.to_string(), v.replace(BASE, &setup.base))).collect();
    let assembled = assemble(setup, job, &context, &scratch, &args).await.context("archway assemble")?;
    let built = buildah(setup, job, &context, &args).await.context("buildah")?;
    let assembled = Image::fetch(setup, &assembled, &scratch.join("assembled")).await?;
    let built = Image::fetch(setup, &built, &scratch.join("built")).await?;
    let mut diffs = compare_configs(&assembled.config, &built.config);
    diffs.extend(compare_trees(&assembled.tree, &built.tree));
    let mut wrong: Vec<String> = diffs
        .iter()
        .filter(|d| !job.case.known.contains(&(d.at.as_str(), d.what.as_str())))
        .map(Diff::to_string)
        .collect();
    for (at, what) in job.case.known {
        if !diffs.iter().any(|d| d.at == *at && d.what == *what) {
            wrong.push(format!("{at}: the known difference \"{what}\" did not show (drop it from the case?)"));
        }
    }
    Ok(wrong)
}

/// `archway assemble` into `eq/<case>-assembled`; the reference of what it pushed, by digest.
async fn assemble(
    setup: &Setup,
    job: &Job<'_>,
    context: &Path,
    scratch: &Path,
    args: &[(String, String)],
) -> Result<String> {
    let registry = &setup.env.registry;
    let repository = registry.image(&format!("eq/{}-assembled", job.case.name));
    let digest_file = scratch.join("digest");
    let work_dir = scratch.join("assemble-work");
    std::fs::create_dir_all(&work_dir)?;
    let mut command = Command::new(&setup.archway);
    command
        .arg("assemble")
        .arg("--context")
        .arg(context)
        .args(["--platform", job.platform, "--image", &repository])
        .arg("--auth-file")
        .arg(&registry.auth_file)
        .arg("--ca-file")
        .arg(registry.cert_dir.join("ca.crt"))
        .arg("--work-dir")
        .arg(&work_dir)
        .arg("--digest-file")
        .arg(&digest_file);
    for (key, value) in args {
        command.arg("--build-arg").arg(format!("{key}={value}"));
    }
    run("archway assemble", &mut command).await?;
    let digest = std::fs::read_to_string(&digest_file).context("reading the digest file")?;
    Ok(format!("{repository}@{}", digest.trim()))
}

/// `buildah build` and push to `eq/<case>-built:<arch>`, in a store of the platform's own (the base's
/// name then always means that platform's child); the reference of what it pushed, by digest.
async fn buildah(setup: &Setup, job: &Job<'_>, context: &Path, args: &[(String, String)]) -> Result<String> {
    let registry = &setup.env.registry;
    let arch = job.platform.rsplit('/').next().unwrap_or(job.platform);
    let store = setup.work.join("buildah").join(arch);
    let buildah = || {
        let mut command = Command::new("buildah");
        command
            .arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .args(["--storage-driver", "vfs"]);
        command
    };
    let tls = |command: &mut Command| {
        command.arg("--cert-dir").arg(&registry.cert_dir).arg("--authfile").arg(&registry.auth_file);
    };
    let name = format!("eq-{}", job.case.name);
    let mut build = buildah();
    build.args(["build", "--platform", job.platform, "--isolation", "chroot"]);
    // Docker's format keeps HEALTHCHECK and SHELL, which the OCI config has no field for; no
    // `io.buildah.version` label, which a builder of Docker's semantics would not add.
    build.args(["--format", "docker", "--identity-label=false"]);
    tls(&mut build);
    for (key, value) in args {
        build.arg("--build-arg").arg(format!("{key}={value}"));
    }
    build.arg("-f").arg(context.join("Dockerfile")).args(["-t", &name]).arg(context);
    run("buildah build", &mut build).await?;
    let repository = registry.image(&format!("eq/{}-built", job.case.name));
    let digest_file = store.join(format!("{}.digest", job.case.name));
    let mut push = buildah();
    push.arg("push");
    tls(&mut push);
    push.arg("--digestfile").arg(&digest_file).arg(&name).arg(format!("docker://{repository}:{arch}"));
    run("buildah push", &mut push).await?;
    let digest = std::fs::read_to_string(&digest_file).context("reading buildah's digest file")?;
    Ok(format!("{repository}@{}", digest.trim()))
}

/// archway's binary, beside the test binary's directory as cargo lays them out (as the environment
/// finds it for the hostlet): `cargo build --workspace` makes it.
fn archway_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("the test binary has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    let bin = dir.join("archway");
    ensure!(bin.is_file(), "{} is missing: run `cargo build --workspace` first", bin.display());
    Ok(bin)
}

/// Writes the case's Dockerfile and context under `dir`, each directory with its mode set last (a 0700
/// one is then still written into).
fn write_context(dir: &Path, case: &Case, base: &str) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("Dockerfile"), case.dockerfile.replace(BASE, base))?;
    let mut dirs: BTreeMap<PathBuf, u32> = BTreeMap::new();
    let parents = |dirs: &mut BTreeMap<PathBuf, u32>, path: &Path| {
        for parent in path.ancestors().skip(1).filter(|p| !p.as_os_str().is_empty()) {
            dirs.entry(parent.to_path_buf()).or_insert(0o755);
        }
    };
    for item in case.context {
        match item {
            File(path, content, mode) => {
                parents(&mut dirs, Path::new(path));
                let file = dir.join(path);
                std::fs::create_dir_all(file.parent().context("a file without a directory")?)?;
                std::fs::write(&file, content)?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))?;
            }
            Dir(path, mode) => {
                parents(&mut dirs, Path::new(path));
                std::fs::create_dir_all(dir.join(path))?;
                dirs.insert(PathBuf::from(path), *mode);
            }
            Symlink(path, target) => {
                parents(&mut dirs, Path::new(path));
                let link = dir.join(path);
                std::fs::create_dir_all(link.parent().context("a symlink without a directory")?)?;
                symlink(target, &link)?;
            }
        }
    }
    // Deepest first, so that a directory closed to others is set after what it holds.
    for (path, mode) in dirs.iter().rev() {
        std::fs::set_permissions(dir.join(path), std::fs::Permissions::from_mode(*mode))?;
    }
    Ok(())
}

/// An image as skopeo reads it: its config and the file tree of its layers applied in order.
struct Image {
    config: Value,
    tree: Tree,
}

impl Image {
    async fn fetch(setup: &Setup, reference: &str, dir: &Path) -> Result<Image> {
        let registry = &setup.env.registry;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        run(
            "skopeo copy",
            Command::new("skopeo")
                .arg("copy")
                .arg("--authfile")
                .arg(&registry.auth_file)
                .arg("--src-cert-dir")
                .arg(&registry.cert_dir)
                .arg(format!("docker://{reference}"))
                .arg(format!("dir:{}", dir.display())),
        )
        .await?;
        let blob = |digest: &str| dir.join(digest.trim_start_matches("sha256:"));
        let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)
            .with_context(|| format!("the manifest of {reference}"))?;
        let config_digest = manifest["config"]["digest"].as_str().context("a manifest without a config")?;
        let config: Value = serde_json::from_slice(&std::fs::read(blob(config_digest))?)
            .with_context(|| format!("the config of {reference}"))?;
        let mut tree = Tree::default();
        for layer in manifest["layers"].as_array().context("a manifest without layers")? {
            let digest = layer["digest"].as_str().context("a layer without a digest")?;
            tree.apply(&blob(digest)).with_context(|| format!("layer {digest} of {reference}"))?;
        }
        Ok(Image { config, tree })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    /// Size and digest of the content.
    File(u64, String),
    Symlink(String),
}

/// One path of a tree. Times are not kept: they are when each builder ran.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`& 0o7777`).
    mode: u32,
    uid: u64,
    gid: u64,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let owner = format!("{:04o} {}:{}", self.mode, self.uid, self.gid);
        match &self.kind {
            Kind::Dir => write!(f, "directory {owner}"),
            Kind::File(size, _) => write!(f, "file {owner}, {size} bytes"),
            Kind::Symlink(target) => write!(f, "symlink {owner} -> {target}"),
        }
    }
}

/// A root file system: path (relative, no `./`, no trailing `/`) -> what is there.
#[derive(Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    /// Applies one layer (a tar, gzipped or not) as containerd unpacks it: an entry replaces what is at
    /// its path (a directory over a directory only changes its metadata), missing parents are made
    /// 0755 root, and whiteouts remove what they name.
    fn apply(&mut self, blob: &Path) -> Result<()> {
        let mut file = std::fs::File::open(blob)?;
        let mut magic = [0u8; 2];
        let gzipped = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
        let file = std::fs::File::open(blob)?;
        let reader: Box<dyn Read> = match gzipped {
            true => Box::new(flate2::read::GzDecoder::new(file)),
            false => Box::new(file),
        };
        let mut archive = tar::Archive::new(reader);
        let mut hardlinks = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = clean(&entry.path()?.to_string_lossy());
            if path.is_empty() {
                // The root's own entry: a runtime never changes `/` from a layer.
                continue;
            }
            let name = path.rsplit('/').next().unwrap_or(&path);
            let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent);
            if name == ".wh..wh..opq" {
                let below = format!("{parent}/");
                self.nodes.retain(|p, _| !p.starts_with(&below));
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                self.remove(&join(parent, hidden));
                continue;
            }
            let header = entry.header();
            let (mode, uid, gid) = (header.mode()? & 0o7777, header.uid()?, header.gid()?);
            let kind = match header.entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => {
                    let target = entry.link_name()?.context("a symlink without a target")?;
                    Kind::Symlink(target.to_string_lossy().into_owned())
                }
                tar::EntryType::Link => {
                    let target = entry.link_name()?.context("a hard link without a target")?;
                    hardlinks.push((path, clean(&target.to_string_lossy())));
                    continue;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut content = Vec::new();
                    entry.read_to_end(&mut content)?;
                    Kind::File(content.len() as u64, archway::registry::digest_of(&content))
                }
                other => bail!("{path}: an entry of type {other:?}, which no case makes"),
            };
            self.insert(path, Node { kind, mode, uid, gid });
        }
        // A hard link is the file it names, as far as what a container reads goes.
        for (path, target) in hardlinks {
            let node = self.nodes.get(&target).cloned().with_context(|| format!("{path}: hard link to {target}"))?;
            self.insert(path, node);
        }
        Ok(())
    }

    fn insert(&mut self, path: String, node: Node) {
        let mut parent = path.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            parent = up;
            self.nodes.entry(parent.to_string()).or_insert(Node { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0 });
        }
        match self.nodes.get(&path) {
            Some(old) if old.kind == Kind::Dir && node.kind == Kind::Dir => {}
            Some(_) => self.remove(&path),
            None => {}
        }
        self.nodes.insert(path, node);
    }

    fn remove(&mut self, path: &str) {
        let below = format!("{path}/");
        self.nodes.retain(|p, _| p != path && !p.starts_with(&below));
    }
}

/// A layer's path as a tree key: no leading `/` or `./`, no trailing `/`, no `.` segments.
fn clean(path: &str) -> String {
    path.split('/').filter(|part| !part.is_empty() && *part != ".").collect::<Vec<_>>().join("/")
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") }
}

/// One difference: where (a path of the tree, or a config field), and what, assembled first.
#[derive(Debug)]
struct Diff {
    at: String,
    what: String,
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} (assembled != buildah)", self.at, self.what)
    }
}

/// Every path whose entry differs: its type or presence, else each of mode, owner, content and
/// symlink target that differs.
fn compare_trees(assembled: &Tree, built: &Tree) -> Vec<Diff> {
    let paths: BTreeSet<&String> = assembled.nodes.keys().chain(built.nodes.keys()).collect();
    let shown = |node: Option<&Node>| node.map_or_else(|| "nothing".to_string(), Node::to_string);
    let mut diffs = Vec::new();
    for path in paths {
        let (a, b) = (assembled.nodes.get(path), built.nodes.get(path));
        let what = match (a, b) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) if std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind) => {
                let mut aspects = Vec::new();
                if a.mode != b.mode {
                    aspects.push(format!("mode {:04o} != {:04o}", a.mode, b.mode));
                }
                if (a.uid, a.gid) != (b.uid, b.gid) {
                    aspects.push(format!("owner {}:{} != {}:{}", a.uid, a.gid, b.uid, b.gid));
                }
                match (&a.kind, &b.kind) {
                    (Kind::File(sa, da), Kind::File(sb, db)) if (sa, da) != (sb, db) => {
                        aspects.push(format!("content {sa} bytes {da} != {sb} bytes {db}"));
                    }
                    (Kind::Symlink(ta), Kind::Symlink(tb)) if ta != tb => {
                        aspects.push(format!("target {ta} != {tb}"));
                    }
                    _ => {}
                }
                aspects.join(", ")
            }
            (a, b) => format!("{} != {}", shown(a), shown(b)),
        };
        diffs.push(Diff { at: format!("/{path}"), what });
    }
    diffs
}

/// The fields of the config's `config` object that decide how a container runs.
const CONFIG_FIELDS: [&str; 11] = [
    "Env",
    "Entrypoint",
    "Cmd",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "Shell",
];

/// Differences of the platform fields and of [`CONFIG_FIELDS`]. Absent, `null` and empty are alike
/// (Docker reads them so); beyond that, conventions in which buildah and BuildKit differ without a
/// container seeing it are normalised, each said where.
fn compare_configs(assembled: &Value, built: &Value) -> Vec<Diff> {
    let mut diffs = Vec::new();
    for field in ["architecture", "os", "variant"] {
        let (mut a, mut b) = (assembled[field].clone(), built[field].clone());
        // buildah keeps the base's `variant: v8` of arm64; BuildKit (and `assemble`) write the target
        // platform as given, without one. containerd reads a missing arm64 variant as v8.
        if field == "variant" && assembled["architecture"] == "arm64" {
            for variant in [&mut a, &mut b] {
                if *variant == "v8" {
                    *variant = Value::Null;
                }
            }
        }
        if a != b {
            diffs.push(Diff { at: field.to_string(), what: format!("{a} != {b}") });
        }
    }
    for field in CONFIG_FIELDS {
        let (mut a, mut b) = (normal(&assembled["config"][field]), normal(&built["config"][field]));
        match field {
            // A redefined variable: Docker and BuildKit replace it where it is, buildah moves it to the
            // end. A process sees the same environment either way (no name is there twice).
            "Env" => {
                for env in [&mut a, &mut b] {
                    if let Value::Array(vars) = env {
                        vars.sort_by_key(Value::to_string);
                    }
                }
            }
            // A container without a WorkingDir starts in `/`; BuildKit writes `/` for `FROM scratch`,
            // buildah nothing.
            "WorkingDir" => {
                for dir in [&mut a, &mut b] {
                    if *dir == "/" {
                        *dir = Value::Null;
                    }
                }
            }
            // buildah keeps EXPOSE's words as written (`8000-8002/tcp`, `9090/UDP`); Docker and BuildKit
            // store one port per key with the protocol in lower case, which is what runtimes read.
            "ExposedPorts" => {
                for ports in [&mut a, &mut b] {
                    if let Value::Object(keys) = ports {
                        *keys = keys
                            .keys()
                            .flat_map(|key| expand_port(key))
                            .map(|k| (k, Value::Object(Default::default())))
                            .collect();
                    }
                }
            }
            _ => {}
        }
        if a != b {
            diffs.push(Diff { at: format!("config.{field}"), what: format!("{a} != {b}") });
        }
    }
    diffs
}

/// `8000-8002/TCP` as `8000/tcp`, `8001/tcp`, `8002/tcp`; a key it cannot read, as it is.
fn expand_port(key: &str) -> Vec<String> {
    let (ports, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = protocol.to_ascii_lowercase();
    let (first, last) = ports.split_once('-').unwrap_or((ports, ports));
    match (first.parse::<u16>(), last.parse::<u16>()) {
        (Ok(first), Ok(last)) if first <= last => (first..=last).map(|port| format!("{port}/{protocol}")).collect(),
        _ => vec![key.to_string()],
    }
}

fn normal(value: &Value) -> Value {
    match value {
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        Value::String(s) if s.is_empty() => Value::Null,
        other => other.clone(),
    }
}

/// Runs `name` to its end: its output, or an error with what it printed to stderr (its command line,
/// all paths, says little).
async fn run(name: &str, command: &mut Command) -> Result<String> {
    let out = command.stdin(Stdio::null()).output().await.with_context(|| format!("starting {name}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{name} failed ({}): {}", out.status, stderr.trim());
    Ok(String::from_utf8(out.stdout)?)
}
