//! The operator's two clients of the apiserver: kube's own stack (base URI, retries of 429/503/504,
//! authentication, extra headers, timeouts; not its debug-level span per request) over a connector
//! that sets TCP_NODELAY. kube 5 leaves
//! Nagle's algorithm on (kube-rs/kube#2056): the first request on a new connection, written right
//! after the TLS handshake's last message, then waits for the apiserver's delayed ACK, 40 ms or more,
//! and a burst of writes opens connections and pays that on each (seen with strace in
//! `make bench-scale`: 43-45 ms for such first requests, 5 ms for the next ones).

use std::time::Duration;

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ConfigExt};
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

#[derive(Clone)]
pub struct Clients {
    /// For watches and the leader Lease.
    pub watches: Client,
    /// For every other request: reads, writes, events.
    pub requests: Client,
}

/// How long a request may wait for the apiserver's answer before it fails (and is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Clients {
    /// kube sets no read timeout by default (watches guard themselves), so a request that the apiserver
    /// never answers (one sent while it restarts) would hold its build's reconcile for good: requests
    /// get one, watches (idle for minutes) do not.
    pub fn new(config: Config) -> Result<Clients, kube::Error> {
        let mut requests = config.clone();
        requests.read_timeout = Some(REQUEST_TIMEOUT);
        requests.reset_reader_on_write = true;
        Ok(Clients { watches: client(config)?, requests: client(requests)? })
    }
}

/// A client as kube builds it, with TCP_NODELAY; kube's own where a proxy is configured (it tunnels).
fn client(config: Config) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() {
        return Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let mut connector = TimeoutConnector::new(config.rustls_https_connector_with_connector(http)?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace))
}
