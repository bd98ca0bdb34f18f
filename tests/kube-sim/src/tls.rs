//! TLS: a CA generated at start, and a serving certificate it signs for the names clients
//! use (127.0.0.1, localhost, ::1 and the in-cluster `kubernetes.default.svc` names), so
//! kubectl and kube-rs verify the server as they verify a real cluster's.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// A generated CA and serving certificate.
pub struct Certs {
    /// The CA certificate, PEM (goes into kubeconfigs and `kube-root-ca.crt`).
    pub ca_pem: String,
    /// The rustls server configuration.
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Generates the CA and the serving certificate.
///
/// # Errors
/// Key generation or certificate encoding failures (not expected).
pub fn generate() -> Result<Certs, String> {
    let e = |x: rcgen::Error| x.to_string();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kube-sim-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(e)?;

    let names = vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ];
    let mut params = CertificateParams::new(names).map_err(e)?;
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    params
        .subject_alt_names
        .push(SanType::IpAddress("::1".parse().expect("ip")));
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(e)?;
    let cert = params.signed_by(&key, &ca).map_err(e)?;

    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone(), ca.der().clone()];
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|x| x.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|x| x.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Certs {
        ca_pem: ca.pem(),
        server_config: Arc::new(cfg),
    })
}
