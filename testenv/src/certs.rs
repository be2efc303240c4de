//! The environment's PKI, made fresh on every start (ECDSA keys take milliseconds, and a fresh CA means
//! no certificate of an earlier run is trusted): one CA, the apiserver and registry serving certs, the
//! admin client cert and the service-account signing key pair, written into `<dir>/pki/`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// Paths of the files in `<dir>/pki/`, plus the PEM texts that go into the kubeconfig.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_pem: String,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    pub registry_cert: PathBuf,
    pub registry_key: PathBuf,
    /// Private key that signs service-account tokens (apiserver and controller-manager).
    pub sa_key: PathBuf,
    /// Its public key, which the apiserver verifies tokens with.
    pub sa_pub: PathBuf,
}

/// Names the apiserver answers to. 10.0.0.1 is the `kubernetes` Service's cluster IP (the first of
/// the service range): it appears here only because in-cluster clients expect it in the cert; nothing
/// ever connects to it.
const APISERVER_NAMES: &[&str] =
    &["127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "10.0.0.1"];
const REGISTRY_NAMES: &[&str] = &["127.0.0.1", "localhost"];

pub fn generate(dir: &Path) -> Result<Pki> {
    let pki = dir.join("pki");
    fs::create_dir_all(&pki)?;
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let path = pki.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };

    let (ca_pem, ca) = ca()?;
    let (apiserver_pem, apiserver_key) = leaf(&ca, "kube-apiserver", None, APISERVER_NAMES, true)?;
    let (admin_cert_pem, admin_key_pem) = leaf(&ca, "admin", Some("system:masters"), &[], false)?;
    let (registry_pem, registry_key) = leaf(&ca, "registry", None, REGISTRY_NAMES, true)?;
    let sa = KeyPair::generate()?;

    Ok(Pki {
        ca_cert: write("ca.crt", &ca_pem)?,
        apiserver_cert: write("apiserver.crt", &apiserver_pem)?,
        apiserver_key: write("apiserver.key", &apiserver_key)?,
        registry_cert: write("registry.crt", &registry_pem)?,
        registry_key: write("registry.key", &registry_key)?,
        sa_key: write("sa.key", &sa.serialize_pem())?,
        sa_pub: write("sa.pub", &sa.public_key_pem())?,
        ca_pem,
        admin_cert_pem,
        admin_key_pem,
    })
}

fn ca() -> Result<(String, Issuer<'static, KeyPair>)> {
    let mut params = CertificateParams::new(Vec::new())?;
    params.distinguished_name.push(DnType::CommonName, "archway testenv CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

/// A certificate signed by the CA: a serving cert for `names`, or a client cert whose organization is
/// the Kubernetes group. Returns (cert PEM, key PEM).
fn leaf(
    ca: &Issuer<'static, KeyPair>,
    cn: &str,
    org: Option<&str>,
    names: &[&str],
    server: bool,
) -> Result<(String, String)> {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(org) = org {
        params.distinguished_name.push(DnType::OrganizationName, org);
    }
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages =
        vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}
