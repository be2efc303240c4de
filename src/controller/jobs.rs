//! The Jobs a reconcile creates and deletes: one build Job per platform, and a git source's resolve
//! Job. A name that exists already is ours (an earlier pass) or someone else's (an error that says so).

use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::{Api, Resource, ResourceExt};
use tracing::info;

use super::{Context, Error, FIELD_MANAGER};
use crate::api::{GitSource, MultiArchBuild};
use crate::plan::decide::Decision;
use crate::plan::git::report::dockerfile_path;
use crate::plan::git::{GitStep, ResolveRequest, resolve_job};
use crate::plan::job::{JobRequest, build_job};
use crate::plan::validate::ValidBuild;

/// The build Jobs `decision` creates, or why the spec makes none.
pub(super) fn build_jobs(
    build: &MultiArchBuild,
    ctx: &Context,
    decision: &Decision,
    valid: &ValidBuild,
) -> Result<Vec<Job>, String> {
    let namespace = build.namespace().unwrap_or_default();
    let owner = build.controller_owner_ref(&()).ok_or("the build has no uid yet")?;
    let timeout_seconds = i64::try_from(valid.timeout.as_secs()).unwrap_or(i64::MAX);
    let build_name = build.name_any();
    let mut jobs = Vec::new();
    for create in &decision.create {
        let request = JobRequest {
            build_name: &build_name,
            namespace: &namespace,
            owner: owner.clone(),
            platform: &create.platform,
            inputs: &create.inputs,
            placed: &create.placed,
            config: &ctx.builder,
            timeout_seconds,
            cache: valid.cache.as_ref(),
        };
        jobs.push(build_job(&request).map_err(|e| e.to_string())?);
    }
    Ok(jobs)
}

/// Creates `create` (expected in the caches already: a Job that fails to be created is expected no
/// more) and deletes the Jobs named in `delete`.
pub(super) async fn apply_jobs(
    build: &MultiArchBuild,
    ctx: &Context,
    create: &[Job],
    delete: &[String],
) -> Result<(), Error> {
    let namespace = build.namespace().unwrap_or_default();
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &namespace);
    let owner_uid = build.uid().unwrap_or_default();
    if !create.is_empty() || !delete.is_empty() {
        ctx.fence.check().await.inspect_err(|_| ctx.caches.unexpect_jobs(create))?;
    }
    // Side by side: one round trip for a build's platforms, not one each.
    let created = futures::future::join_all(create.iter().map(|job| create_job(&jobs, job, &owner_uid))).await;
    let mut failed = None;
    for (job, result) in create.iter().zip(created) {
        match result {
            Ok(true) => info!(job = job.metadata.name.as_deref().unwrap_or_default(), "created build job"),
            Ok(false) => {}
            Err(e) => {
                ctx.caches.unexpect_jobs(std::slice::from_ref(job));
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => delete_jobs(&jobs, delete).await,
    }
}

/// Creates the git source's resolve Job when one is due, deletes the ones done with.
pub(super) async fn apply_resolve(
    build: &MultiArchBuild,
    ctx: &Context,
    step: &GitStep,
    git: &GitSource,
) -> Result<(), Error> {
    let namespace = build.namespace().unwrap_or_default();
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &namespace);
    if step.create.is_some() || !step.delete.is_empty() {
        ctx.fence.check().await?;
    }
    if let Some(name) = &step.create {
        let owner = build.controller_owner_ref(&()).ok_or_else(|| Error::Invalid("the build has no uid yet".into()))?;
        let job = resolve_job(&ResolveRequest {
            name,
            namespace: &namespace,
            build_name: &build.name_any(),
            owner: owner.clone(),
            git,
            dockerfile_path: &dockerfile_path(git, &build.spec.dockerfile),
            image: &ctx.config.git_image,
            ttl_seconds: ctx.config.finished_job_ttl,
            node_terms: step.node_terms.clone(),
        });
        if create_job(&jobs, &job, &owner.uid).await? {
            info!(job = name.as_str(), revision = git.revision, "resolving the git revision");
        }
    }
    delete_jobs(&jobs, &step.delete).await
}

/// Creates a Job owned by `owner_uid`; `false` when it exists already (created by an earlier pass
/// whose status write did not land, or still being deleted: a later pass creates it). A Job of that
/// name that belongs to something else is an error that names it.
async fn create_job(jobs: &Api<Job>, job: &Job, owner_uid: &str) -> Result<bool, Error> {
    let name = job.metadata.name.clone().unwrap_or_default();
    match jobs.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, job).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = jobs.get_metadata_opt(&name).await?;
            if existing.is_some_and(|j| j.owner_references().iter().all(|o| o.uid != owner_uid)) {
                return Err(Error::Invalid(format!(
                    "a Job named {name:?} already exists in this namespace and belongs to something else; delete \
                     it, or rename this MultiArchBuild"
                )));
            }
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

async fn delete_jobs(jobs: &Api<Job>, names: &[String]) -> Result<(), Error> {
    let params = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    for name in names {
        match jobs.delete(name, &params).await {
            Ok(_) => info!(job = name.as_str(), "deleted job"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
