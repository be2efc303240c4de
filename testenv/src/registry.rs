//! Debian's docker-registry (distribution 2.8) on loopback, with TLS and htpasswd auth like a real
//! private registry. Its storage in `<dir>/registry` outlives a run, so a warm start keeps the base
//! image; the password is new on every start.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use base64::prelude::{BASE64_STANDARD, Engine};
use serde_json::json;

use crate::certs::Pki;
use crate::process::{Processes, free_port, run};

pub const USERNAME: &str = "archway";

/// How clients reach the registry.
#[derive(Clone, Debug)]
pub struct Registry {
    /// `127.0.0.1:PORT`, the registry part of image references.
    pub host: String,
    pub username: String,
    pub password: String,
    /// The CA that signed the registry's serving cert.
    pub ca_pem: String,
    /// containers-auth.json / docker config.json with the credentials (`REGISTRY_AUTH_FILE`).
    pub auth_file: PathBuf,
    /// Holds `ca.crt`, for skopeo's and buildah's `--cert-dir`.
    pub cert_dir: PathBuf,
}

impl Registry {
    /// `HOST/REPO`, e.g. `image("library/busybox:latest")`.
    pub fn image(&self, repo: &str) -> String {
        format!("{}/{repo}", self.host)
    }
}

pub async fn start(procs: &mut Processes, dir: &Path, pki: &Pki) -> Result<Registry> {
    let port = free_port()?;
    let host = format!("127.0.0.1:{port}");
    let password = random_hex(16)?;

    let conf = dir.join("registry-conf");
    fs::create_dir_all(&conf)?;
    let htpasswd = conf.join("htpasswd");
    fs::write(&htpasswd, bcrypt_entry(&password).await?)?;
    let config = json!({
        "version": 0.1,
        // The access log lets tests count what was pushed (logs/registry.log).
        "log": {"level": "info", "accesslog": {"disabled": false}},
        "storage": {
            "filesystem": {"rootdirectory": dir.join("registry")},
            "delete": {"enabled": true},
        },
        "http": {
            "addr": host,
            "tls": {"certificate": pki.registry_cert, "key": pki.registry_key},
        },
        "auth": {"htpasswd": {"realm": "archway", "path": htpasswd}},
    });
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes())?])
        .build()?;
    // 401 is the answer of a registry with auth to a client without credentials.
    let url = format!("https://{host}/v2/");
    let program = Path::new("docker-registry");
    serve(procs, "registry", program, &config, &conf.join("config.yml"), &http, &url, &[200, 401]).await?;

    let cert_dir = dir.join("registry-certs");
    fs::create_dir_all(&cert_dir)?;
    fs::write(cert_dir.join("ca.crt"), &pki.ca_pem)?;
    let auth_file = dir.join("registry-auth.json");
    let auth = BASE64_STANDARD.encode(format!("{USERNAME}:{password}"));
    let auths = json!({"auths": {&host: {"auth": auth}}});
    fs::write(&auth_file, serde_json::to_string_pretty(&auths)?)?;

    Ok(Registry { host, username: USERNAME.to_string(), password, ca_pem: pki.ca_pem.clone(), auth_file, cert_dir })
}

/// A second registry, plain HTTP and without auth, as some home labs run one: for the
/// `insecureRegistry` opt-in. It is distribution v3 (the `registry:3` image's), which deletes tags,
/// where the main registry cannot. Returns its `127.0.0.1:PORT`; it stops with `procs`.
pub async fn start_plain(procs: &mut Processes, dir: &Path) -> Result<String> {
    let host = format!("127.0.0.1:{}", free_port()?);
    let config = json!({
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": true}},
        "storage": {
            "filesystem": {"rootdirectory": dir.join("registry-plain")},
            "delete": {"enabled": true},
        },
        "http": {"addr": host},
    });
    let http = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://{host}/v2/");
    let program = crate::gobuild::REGISTRY_V3.bin_dir().await?.join("registry");
    let config_file = dir.join("registry-plain.yml");
    serve(procs, "registry-plain", &program, &config, &config_file, &http, &url, &[200]).await?;
    Ok(host)
}

/// Writes `config` to `config_file`, starts the registry `program` on it as `name`, and waits until
/// `GET url` answers one of `ready`.
#[allow(clippy::too_many_arguments)]
async fn serve(
    procs: &mut Processes,
    name: &str,
    program: &Path,
    config: &serde_json::Value,
    config_file: &Path,
    http: &reqwest::Client,
    url: &str,
    ready: &[u16],
) -> Result<()> {
    fs::write(config_file, serde_saphyr::to_string(config)?)?;
    let mut cmd = Command::new(program);
    cmd.arg("serve").arg(config_file);
    procs.spawn(name, cmd)?;
    let probe = || async {
        let status = http.get(url).send().await?.status().as_u16();
        ensure!(ready.contains(&status), "GET /v2/ answered {status}");
        Ok(())
    };
    procs.wait_ready(name, probe, Duration::from_secs(30)).await
}

/// An htpasswd line with a bcrypt hash, the only hash distribution accepts.
async fn bcrypt_entry(password: &str) -> Result<String> {
    let out = run(tokio::process::Command::new("htpasswd").args(["-Bbn", USERNAME, password])).await?;
    Ok(out.trim().to_string() + "\n")
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
