//! What a pod's status says, kept as plain data while the pod runs and turned into the API's
//! `PodStatus` in one place. Pure: the caller passes the times.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP,
    PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub(crate) fn now() -> Timestamp {
    Timestamp::now()
}

/// Kubernetes caps a termination message at this many bytes.
pub(crate) const MESSAGE_LIMIT: usize = 4096;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum State {
    Waiting { reason: String, message: Option<String> },
    Running { started: Timestamp },
    Terminated(Terminated),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started: Option<Timestamp>,
    pub finished: Timestamp,
}

impl Terminated {
    /// `Completed` for exit code 0, `Error` otherwise, as the kubelet says.
    pub fn from_exit(
        exit_code: i32,
        message: Option<String>,
        started: Option<Timestamp>,
        finished: Timestamp,
    ) -> Terminated {
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        Terminated { exit_code, reason: reason.into(), message: message.filter(|m| !m.is_empty()), started, finished }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Container {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: State,
    pub last_state: Option<State>,
    pub restarts: i32,
}

impl Container {
    pub fn waiting(name: &str, image: &str, reason: &str) -> Container {
        Container {
            name: name.into(),
            image: image.into(),
            image_id: String::new(),
            state: State::Waiting { reason: reason.into(), message: None },
            last_state: None,
            restarts: 0,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    pub fn terminated(&self) -> Option<&Terminated> {
        match &self.state {
            State::Terminated(t) => Some(t),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// One pod condition; its transition time moves only when its status flips.
#[derive(Clone, Debug)]
struct Condition {
    type_: &'static str,
    status: bool,
    reason: Option<String>,
    since: Timestamp,
}

/// Everything the hostlet reports about one pod.
#[derive(Clone, Debug)]
pub(crate) struct PodView {
    pub phase: Phase,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub pod_ip: Ipv4Addr,
    pub started: Timestamp,
    pub init: Vec<Container>,
    pub main: Vec<Container>,
    conditions: Vec<Condition>,
}

const HOST_IP: &str = "127.0.0.1";

impl PodView {
    /// A pod just taken on: scheduled, not yet initialised or ready.
    pub fn new(pod_ip: Ipv4Addr, init: Vec<Container>, main: Vec<Container>, now: Timestamp) -> PodView {
        let mut view = PodView {
            phase: Phase::Pending,
            reason: None,
            message: None,
            pod_ip,
            started: now,
            init,
            main,
            conditions: Vec::new(),
        };
        view.set_condition("PodScheduled", true, None, now);
        view.set_condition("PodReadyToStartContainers", true, None, now);
        view.refresh_conditions(now);
        view
    }

    fn set_condition(&mut self, type_: &'static str, status: bool, reason: Option<&str>, now: Timestamp) {
        let reason = reason.map(str::to_string);
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == status => c.reason = reason,
            Some(c) => {
                c.status = status;
                c.reason = reason;
                c.since = now;
            }
            None => self.conditions.push(Condition { type_, status, reason, since: now }),
        }
    }

    /// Derives Initialized, ContainersReady and Ready from the containers and the phase; call after
    /// every change.
    pub fn refresh_conditions(&mut self, now: Timestamp) {
        let initialized = self.init.iter().all(|c| c.terminated().is_some_and(|t| t.exit_code == 0));
        let ready = !self.phase.is_terminal() && self.main.iter().all(Container::is_running);
        let unready_reason = match self.phase {
            Phase::Succeeded | Phase::Failed => Some("PodCompleted"),
            _ if ready => None,
            _ => Some("ContainersNotReady"),
        };
        let init_reason = (!initialized).then_some("ContainersNotInitialized");
        self.set_condition("Initialized", initialized, init_reason, now);
        self.set_condition("ContainersReady", ready, unready_reason, now);
        self.set_condition("Ready", ready, unready_reason, now);
    }

    pub fn status(&self) -> PodStatus {
        let pod_ip = self.pod_ip.to_string();
        PodStatus {
            phase: Some(self.phase.as_str().into()),
            reason: self.reason.clone(),
            message: self.message.clone(),
            host_ip: Some(HOST_IP.into()),
            host_ips: Some(vec![HostIP { ip: HOST_IP.into() }]),
            pod_ip: Some(pod_ip.clone()),
            pod_ips: Some(vec![PodIP { ip: pod_ip }]),
            start_time: Some(Time(self.started)),
            conditions: Some(
                self.conditions
                    .iter()
                    .map(|c| PodCondition {
                        type_: c.type_.into(),
                        status: if c.status { "True" } else { "False" }.into(),
                        reason: c.reason.clone(),
                        last_transition_time: Some(Time(c.since)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            init_container_statuses: (!self.init.is_empty()).then(|| self.init.iter().map(container_status).collect()),
            container_statuses: Some(self.main.iter().map(container_status).collect()),
            // The apiserver sets the QoS class at creation and refuses any other value later.
            qos_class: None,
            ..Default::default()
        }
    }
}

fn container_status(c: &Container) -> ContainerStatus {
    let running = c.is_running();
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: (!matches!(c.state, State::Waiting { .. })).then(|| format!("hostlet://{}", c.name)),
        ready: running,
        started: Some(running),
        restart_count: c.restarts,
        state: Some(api_state(&c.state)),
        last_state: c.last_state.as_ref().map(api_state),
        ..Default::default()
    }
}

fn api_state(state: &State) -> ContainerState {
    match state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: message.clone() }),
            ..Default::default()
        },
        State::Running { started } => ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(Time(*started)) }),
            ..Default::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.exit_code,
                reason: Some(t.reason.clone()),
                message: t.message.clone(),
                started_at: t.started.map(Time),
                finished_at: Some(Time(t.finished)),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// The first `MESSAGE_LIMIT` bytes of a termination-log file, as text.
pub(crate) fn termination_message(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MESSAGE_LIMIT)]).into_owned()
}

/// The last `MESSAGE_LIMIT` bytes of a log, as text: the fallback message of a failed container.
pub(crate) fn log_tail(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(MESSAGE_LIMIT)..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn condition<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
        let conditions = status.conditions.as_ref().unwrap();
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn pending_then_running_then_succeeded() {
        let ip = Ipv4Addr::new(127, 0, 0, 7);
        let init = vec![Container::waiting("clone", "alpine/git", "PodInitializing")];
        let main = vec![Container::waiting("build", "quay.io/buildah/stable", "PodInitializing")];
        let mut view = PodView::new(ip, init, main, t(0));
        let status = view.status();
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.7"));
        assert_eq!(condition(&status, "Initialized").status, "False");
        assert_eq!(condition(&status, "PodScheduled").status, "True");

        view.init[0].state = State::Terminated(Terminated::from_exit(0, None, Some(t(1)), t(2)));
        view.main[0].state = State::Running { started: t(3) };
        view.phase = Phase::Running;
        view.refresh_conditions(t(3));
        let status = view.status();
        assert_eq!(condition(&status, "Initialized").status, "True");
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(condition(&status, "Ready").last_transition_time, Some(Time(t(3))));
        let main = &status.container_statuses.as_ref().unwrap()[0];
        assert!(main.ready);
        assert!(main.state.as_ref().unwrap().running.is_some());

        let message = Some("done".to_string());
        view.main[0].state = State::Terminated(Terminated::from_exit(0, message, Some(t(3)), t(9)));
        view.phase = Phase::Succeeded;
        view.refresh_conditions(t(9));
        let status = view.status();
        assert_eq!(status.phase.as_deref(), Some("Succeeded"));
        let ready = condition(&status, "Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("False", Some("PodCompleted")));
        // Initialized did not flip again, so its time stays.
        assert_eq!(condition(&status, "Initialized").last_transition_time, Some(Time(t(3))));
        let main = &status.container_statuses.unwrap()[0];
        let terminated = main.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(terminated.exit_code, 0);
        assert_eq!(terminated.reason.as_deref(), Some("Completed"));
        assert_eq!(terminated.message.as_deref(), Some("done"));
        assert!(!main.ready);
    }

    #[test]
    fn failure_reason_and_empty_message() {
        let failed = Terminated::from_exit(2, Some(String::new()), None, t(1));
        assert_eq!(failed.reason, "Error");
        assert_eq!(failed.message, None);
    }

    #[test]
    fn messages_are_capped() {
        let big = vec![b'a'; 5000];
        assert_eq!(termination_message(&big).len(), MESSAGE_LIMIT);
        let mut log = vec![b'x'; 5000];
        log.extend_from_slice(b"the end");
        let tail = log_tail(&log);
        assert_eq!(tail.len(), MESSAGE_LIMIT);
        assert!(tail.ends_with("the end"));
        assert_eq!(log_tail(b"short"), "short");
    }
}
