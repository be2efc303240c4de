//! The reasons archway writes in its conditions and events. They are part of its API: alerts, scripts
//! and GitOps health checks match on them, so each is one variant here, never a literal elsewhere.

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// A condition's or an event's `reason`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }
        }
    };
}

reasons! {
    /// Platform builds run.
    Building,
    /// A platform waits for a node that can build it.
    WaitingForNode,
    /// A platform waits for a build on its nodes to end (`--max-builds-per-node`).
    Queued,
    /// Every platform is built.
    Built,
    /// A platform's build failed.
    BuildFailed,
    /// The children are verified and the index pushed.
    Publishing,
    /// The index is pushed under every tag.
    Published,
    /// The index is pushed without the platforms that failed or waited too long (`AvailablePlatforms`).
    PartiallyPublished,
    /// A base image's tag names another digest: the platforms whose image of it changed build again.
    BaseImageChanged,
    /// The spec cannot be built as it is (an object it names is missing, a field does not parse).
    InvalidSpec,
    /// `spec.platforms` names a platform archway does not know.
    InvalidPlatform,
    /// The git revision names no commit, or cannot be listed.
    RevisionUnresolved,
    /// The registry refused what only a change can fix (credentials, a missing repository).
    RegistryError,
    /// The push secret does not exist.
    PushSecretMissing,
    /// The push secret has no usable `.dockerconfigjson`.
    PushSecretInvalid,
    /// A platform's image is not of the platform it was built for.
    PlatformMismatch,
    /// The index could not be assembled from the children.
    InvalidIndex,
    /// Nothing published yet to roll out.
    Pending,
    /// A workload's controller replaces its pods.
    Progressing,
    /// Every target runs the published image.
    RolledOut,
    /// A target was not rolled out: coverage, a missing workload, an image rewritten after archway's patch.
    RolloutBlocked,
    /// A target's rollout made no progress within its deadline.
    RolloutStalled,
    /// Event: a platform's Job was created or its pod started.
    PlatformBuilding,
    /// Event: a platform's image is built and pushed.
    PlatformBuilt,
    /// Event: a platform's build failed.
    PlatformFailed,
    /// Event: a platform left the build (`[auto]` lost its last node of it, or the spec dropped it).
    PlatformDropped,
    /// Event: the registry kept the builders' temporary tags after a publish (it cannot delete tags).
    TemporaryTagsKept,
    /// Event: archway patched a target.
    RollingOut,
    /// Event: the build's phase changed.
    PhaseChanged,
    /// Event: the object cannot be read (stored before a schema change, or written around admission).
    InvalidObject,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn a_reason_reads_as_its_name() {
        assert_eq!(Reason::RolloutBlocked.as_str(), "RolloutBlocked");
        assert_eq!(Reason::WaitingForNode.to_string(), "WaitingForNode");
    }
}
