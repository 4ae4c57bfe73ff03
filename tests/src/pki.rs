//! Test certificates: a throwaway CA and leaf certificates for chosen names, written as
//! PEM files (for static-certificate sites and for Pebble's own HTTPS listener).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub cert_path: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        let cert_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        TestCa {
            issuer: Issuer::new(p, key),
            cert_pem: cert.pem(),
            cert_path,
        }
    }

    /// Writes `<file>.pem` (chain) and `<file>.key`; returns their paths.
    pub fn leaf(&self, dir: &Path, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0]);
        p.distinguished_name = dn;
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, format!("{}{}", cert.pem(), self.cert_pem)).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// The certificate a TLS server presents for `sni`, as `openssl x509 -text` sees it
/// (subject, SANs, serial), using the real openssl client.
pub fn served_cert(addr: std::net::SocketAddr, sni: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut s_client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            sni,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(s_client.stdin.take());
    let out = s_client.wait_with_output().unwrap();
    let mut x509 = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-serial",
            "-ext",
            "subjectAltName",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let parsed = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&parsed.stdout).into_owned()
}

/// The `serial=...` line of `served_cert`.
pub fn served_serial(addr: std::net::SocketAddr, sni: &str) -> Option<String> {
    served_cert(addr, sni)
        .lines()
        .find_map(|l| l.strip_prefix("serial=").map(str::to_owned))
}

/// An HTTPS client trusting `ca_pem`, resolving `name` to `addr`, opening a new
/// connection (and TLS handshake) for every request.
pub fn https_client(ca_pem: &str, name: &str, addr: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve(name, addr)
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}
