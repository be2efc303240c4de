//! Git sources: one commit per build. `spec.source.git.revision` (a branch or tag) is resolved to a
//! commit once per generation, by a small Job that runs `git ls-remote` with the build's credentials
//! (the operator never holds them); the commit is recorded in status, every platform's Job checks out
//! exactly that commit, and the index names it. `pollInterval` resolves again on that interval, and a
//! moved branch is then new build inputs. The same Job reads the Dockerfile at that commit (a full
//! commit as revision needs a Job for that alone), so that git builds pin their base images as
//! ConfigMap builds do.

pub mod report;
mod step;

pub use step::{GitStep, ResolveObservation, git_step};

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, KeyToPath, NodeAffinity, NodeSelector, NodeSelectorTerm, PodSpec, PodTemplateSpec,
    SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::api::GitSource;
use crate::plan::job::build_labels;

/// Where the `secretRef` Secret is mounted, for both the clone and the resolve.
const CREDENTIALS_DIR: &str = "/archway/git";
const CREDENTIALS_VOLUME: &str = "git-credentials";
/// The keys of a kubernetes.io/basic-auth or kubernetes.io/ssh-auth Secret that git uses: the only
/// ones mounted, whatever else the Secret holds.
const CREDENTIAL_KEYS: [&str; 4] = ["username", "password", "ssh-privatekey", "known_hosts"];
/// The Secret types a git source's `secretRef` may have.
const BASIC_AUTH: &str = "kubernetes.io/basic-auth";
const SSH_AUTH: &str = "kubernetes.io/ssh-auth";
/// On a basic-auth Secret, the hosts (`host` or `host:port`, comma-separated) its owner lets its
/// password go to: whoever may create a build must not send it to a server of their own.
pub const GIT_HOSTS_ANNOTATION: &str = "archway.dev/git-hosts";
/// The label that tells a resolve Job from a platform's build Job.
pub const ROLE_LABEL: &str = "archway.dev/role";
pub const RESOLVE_ROLE: &str = "resolve-revision";
/// The container of a resolve Job; its termination message lists the refs and holds the Dockerfile.
pub const RESOLVE_CONTAINER: &str = "resolve";
/// A resolve lists refs and fetches one commit's trees: seconds, even over a slow link.
const RESOLVE_DEADLINE_SECONDS: i64 = 300;

const CLONE_SCRIPT: &str = concat!("set -eu\n", include_str!("credentials.sh"), include_str!("clone.sh"));
const RESOLVE_SCRIPT: &str = concat!("set -eu\n", include_str!("credentials.sh"), include_str!("resolve.sh"));

/// A full commit id: what a build checks out, and a revision that needs no resolving.
pub fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The commit `revision` names in `git ls-remote` output: a branch first, then a tag (the commit an
/// annotated tag points to, by its peeled `^{}` line), or a full ref name or `HEAD` as written.
pub fn commit_in(ls_remote: &str, revision: &str) -> Option<String> {
    let refs: Vec<(&str, &str)> = ls_remote.lines().filter_map(|l| l.split_once('\t')).collect();
    let find = |name: &str| refs.iter().find(|(_, r)| r.trim() == name).map(|(sha, _)| sha.trim().to_string());
    candidates(revision).iter().find_map(|c| find(c)).filter(|sha| is_commit(sha))
}

/// The refs that may name `revision`'s commit, best first: the one rule of which wins, for
/// [`commit_in`] and for the resolve Job, which reads the Dockerfile at the first it finds.
fn candidates(revision: &str) -> Vec<String> {
    if revision == "HEAD" || revision.starts_with("refs/") {
        vec![format!("{revision}^{{}}"), revision.to_string()]
    } else {
        vec![format!("refs/heads/{revision}"), format!("refs/tags/{revision}^{{}}"), format!("refs/tags/{revision}")]
    }
}

/// The volume of the `secretRef` Secret, if the source names one.
pub fn credentials_volume(git: &GitSource) -> Option<Volume> {
    let secret = git.secret_ref.as_ref()?;
    Some(Volume {
        name: CREDENTIALS_VOLUME.into(),
        // ssh refuses a private key that others may read.
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.name.clone()),
            default_mode: Some(0o400),
            // Those of the keys the Secret has (a basic-auth Secret may lack one of its two).
            items: Some(
                CREDENTIAL_KEYS.map(|key| KeyToPath { key: key.into(), path: key.into(), ..Default::default() }).into(),
            ),
            optional: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The scheme and `host[:port]` of an HTTP(S) URL; `None` for other transports, which never ask
/// git's credential helper.
fn http_authority(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    (matches!(scheme, "http" | "https") && !host.is_empty()).then_some((scheme, host))
}

/// `scheme://host[:port]`: where git's credential helper may answer (git matches `credential.<url>.*`
/// by scheme, host and port).
fn credential_url(url: &str) -> Option<String> {
    http_authority(url).map(|(scheme, host)| format!("{scheme}://{host}"))
}

/// Whether git may be given the credentials of Secret `secret` (of `type_`, with the
/// [`GIT_HOSTS_ANNOTATION`] `hosts`) for `url`: what is wrong, for the status, if not.
pub fn check_credentials(url: &str, secret: &str, type_: &str, hosts: Option<&str>) -> Result<(), String> {
    if type_ != BASIC_AUTH && type_ != SSH_AUTH {
        return Err(format!(
            "Secret {secret:?} is of type {type_}; git gets only a {BASIC_AUTH} (username, password) or {SSH_AUTH} \
             (ssh-privatekey, known_hosts) Secret: create one, e.g. `kubectl create secret generic {secret} \
             --type={BASIC_AUTH} --from-literal=username=... --from-literal=password=...`"
        ));
    }
    // A key is never sent (ssh signs with it); a password is, to the URL's host only.
    let Some((_, authority)) = http_authority(url).filter(|_| type_ == BASIC_AUTH) else { return Ok(()) };
    let named = hosts.into_iter().flat_map(|h| h.split(',')).any(|h| h.trim().eq_ignore_ascii_case(authority));
    match named {
        true => Ok(()),
        false => Err(format!(
            "Secret {secret:?} does not name {authority}, the host of spec.source.git.url, in its annotation \
             {GIT_HOSTS_ANNOTATION}: the Secret's owner adds it (`kubectl annotate secret {secret} \
             {GIT_HOSTS_ANNOTATION}={authority}`) to let builds send its password there"
        )),
    }
}

/// The init container of a build pod that clones `git.url` into `dir` and checks out `commit`.
pub fn clone_container(git: &GitSource, commit: &str, image: &str, dir_mount: VolumeMount) -> Container {
    let dir = dir_mount.mount_path.clone();
    git_container("clone", image, CLONE_SCRIPT, vec![git.url.clone(), commit.to_string(), dir], git, vec![dir_mount])
}

fn git_container(
    name: &str,
    image: &str,
    script: &str,
    params: Vec<String>,
    git: &GitSource,
    mut mounts: Vec<VolumeMount>,
) -> Container {
    let mut env = Vec::new();
    if git.secret_ref.is_some() {
        mounts.push(VolumeMount {
            name: CREDENTIALS_VOLUME.into(),
            mount_path: CREDENTIALS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        if let Some(url) = credential_url(&git.url) {
            env.push(EnvVar { name: "ARCHWAY_GIT_CREDENTIAL_URL".into(), value: Some(url), value_from: None });
        }
    }
    let mut args = vec!["-c".to_string(), script.to_string(), name.to_string()];
    args.extend(params);
    Container {
        name: name.into(),
        image: Some(image.into()),
        command: Some(vec!["sh".into()]),
        args: Some(args),
        volume_mounts: Some(mounts),
        env: (!env.is_empty()).then_some(env),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

/// What a resolve Job is made of.
pub struct ResolveRequest<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    /// The MultiArchBuild's name (for the Job's labels).
    pub build_name: &'a str,
    pub owner: OwnerReference,
    pub git: &'a GitSource,
    /// The Dockerfile's path in the repository ([`report::dockerfile_path`]).
    pub dockerfile_path: &'a str,
    pub image: &'a str,
    pub ttl_seconds: i32,
    /// Required node selector terms: where the image runs (`None`: anywhere).
    pub node_terms: Option<Vec<NodeSelectorTerm>>,
}

/// The Job that lists the refs of `git.url` matching its revision, and reads the Dockerfile at the
/// commit they name, into its termination message (see [`report`]). A full commit is not listed.
pub fn resolve_job(req: &ResolveRequest) -> Job {
    let mut labels = build_labels(req.build_name);
    labels.insert(ROLE_LABEL.into(), RESOLVE_ROLE.into());
    let mut params = vec![req.git.url.clone(), req.git.revision.clone(), req.dockerfile_path.to_string()];
    if !is_commit(&req.git.revision) {
        params.extend(candidates(&req.git.revision));
    }
    let container = git_container(RESOLVE_CONTAINER, req.image, RESOLVE_SCRIPT, params, req.git, vec![]);
    Job {
        metadata: ObjectMeta {
            name: Some(req.name.to_string()),
            namespace: Some(req.namespace.to_string()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![req.owner.clone()]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            active_deadline_seconds: Some(RESOLVE_DEADLINE_SECONDS),
            ttl_seconds_after_finished: Some(req.ttl_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    volumes: credentials_volume(req.git).map(|v| vec![v]),
                    affinity: req.node_terms.clone().map(|node_selector_terms| Affinity {
                        node_affinity: Some(NodeAffinity {
                            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                                node_selector_terms,
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LocalRef;

    const MAIN: &str = "e96170b9f24304f431209b9305930710d7736b5e";
    const TAG_OBJECT: &str = "a5bb7f355a98b8b8a0ee2a9f89a5c7f5206583cd";

    #[test]
    fn credentials_go_only_to_the_scheme_and_host_of_the_url() {
        assert_eq!(credential_url("https://git.example.com/team/site.git").as_deref(), Some("https://git.example.com"));
        assert_eq!(credential_url("http://bob@git.example.com:8080/x").as_deref(), Some("http://git.example.com:8080"));
        assert_eq!(credential_url("https://git.example.com").as_deref(), Some("https://git.example.com"));
        assert_eq!(credential_url("https://git.example.com?x=@evil").as_deref(), Some("https://git.example.com"));
        for other in ["ssh://git@git.example.com/x", "git@git.example.com:x.git", "file:///srv/git/x", "https:///x"] {
            assert_eq!(credential_url(other), None, "{other}");
        }
    }

    #[test]
    fn a_password_goes_only_to_hosts_its_secret_names() {
        let check = |url, type_, hosts| check_credentials(url, "git", type_, hosts);
        let url = "https://git.example.com/team/site.git";
        assert_eq!(check(url, BASIC_AUTH, Some("git.example.com")), Ok(()));
        assert_eq!(check(url, BASIC_AUTH, Some("other.example.com, GIT.example.com")), Ok(()));
        let refused = check(url, BASIC_AUTH, None).unwrap_err();
        assert!(
            refused.contains("does not name git.example.com") && refused.contains(GIT_HOSTS_ANNOTATION),
            "{refused}"
        );
        assert!(check(url, BASIC_AUTH, Some("git.example.com:8443")).is_err(), "another port");
        assert!(check("http://git.example.com:8443/x", BASIC_AUTH, Some("git.example.com")).is_err());
        // An ssh key, or a transport that asks no password, needs no annotation.
        assert_eq!(check(url, SSH_AUTH, None), Ok(()));
        assert_eq!(check("file:///srv/git/site", BASIC_AUTH, None), Ok(()));
        let opaque = check(url, "Opaque", Some("git.example.com")).unwrap_err();
        assert!(opaque.starts_with("Secret \"git\" is of type Opaque; git gets only"), "{opaque}");
    }

    #[test]
    fn a_revision_resolves_to_a_branch_then_a_tags_commit() {
        let refs = format!("{MAIN}\trefs/heads/main\n{TAG_OBJECT}\trefs/tags/v1\n{MAIN}\trefs/tags/v1^{{}}\n");
        assert_eq!(commit_in(&refs, "main").as_deref(), Some(MAIN));
        assert_eq!(commit_in(&refs, "v1").as_deref(), Some(MAIN), "the commit, not the tag object");
        assert_eq!(commit_in(&format!("{MAIN}\tHEAD\n"), "HEAD").as_deref(), Some(MAIN));
        assert_eq!(commit_in(&refs, "refs/heads/main").as_deref(), Some(MAIN));
        assert_eq!(commit_in(&refs, "feature"), None);
        assert_eq!(commit_in(&format!("{MAIN}\trefs/heads/feature/main\n"), "main"), None, "tail matches only");
        assert!(is_commit(MAIN) && !is_commit("e96170b") && !is_commit(&MAIN.to_uppercase()));
    }

    #[test]
    fn the_resolve_job_lists_refs_with_the_credentials_and_nothing_else() {
        let git = GitSource {
            url: "https://example.com/blog.git".into(),
            revision: "main".into(),
            secret_ref: Some(LocalRef { name: "git-token".into() }),
            ..Default::default()
        };
        let job = resolve_job(&ResolveRequest {
            name: "blog-resolve-0123456789",
            namespace: "web",
            build_name: "blog",
            owner: OwnerReference::default(),
            git: &git,
            dockerfile_path: "Dockerfile",
            image: "alpine/git:2.47.2",
            ttl_seconds: 60,
            node_terms: None,
        });
        let spec = job.spec.unwrap();
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        let args = c.args.clone().unwrap();
        assert!(args[1].contains("ls-remote") && args[1].contains("credential.helper"), "{}", args[1]);
        let refs = ["refs/heads/main", "refs/tags/main^{}", "refs/tags/main"];
        assert_eq!(&args[2..6], ["resolve", "https://example.com/blog.git", "main", "Dockerfile"]);
        assert_eq!(&args[6..], refs, "the refs that may name the commit, best first");
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, CREDENTIALS_DIR);
        let env = c.env.as_ref().unwrap();
        assert_eq!(
            (env[0].name.as_str(), env[0].value.as_deref()),
            ("ARCHWAY_GIT_CREDENTIAL_URL", Some("https://example.com"))
        );
        // Only git's keys of the Secret, whichever it has.
        let secret = pod.volumes.as_ref().unwrap()[0].secret.clone().unwrap();
        let keys: Vec<String> = secret.items.unwrap().into_iter().map(|i| i.key).collect();
        assert_eq!((keys, secret.optional), (CREDENTIAL_KEYS.map(String::from).to_vec(), Some(true)));
        let labels = job.metadata.labels.unwrap();
        assert_eq!((labels[ROLE_LABEL].as_str(), labels["archway.dev/build"].as_str()), (RESOLVE_ROLE, "blog"));
        assert_eq!(labels["app.kubernetes.io/managed-by"], "archway", "the operator's Job cache selects it");
    }
}
