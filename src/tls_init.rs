//! `ffcluster tls-init`: a private CA and a server certificate it signs, so a
//! home cluster can turn TLS on without running a CA (contrib/docs/running-a-cluster.md, TLS).
//!
//! The CA's key stays in the directory: it can sign again (with `openssl`) and
//! must be guarded like the token. Nothing is overwritten.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write ca.pem, ca.key, server.pem and server.key to (created
    /// if missing; existing files are never overwritten).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// A host name or IP address clients use for the controller; repeat for
    /// each (e.g. --name controller.lan --name 192.168.1.10).
    #[arg(long = "name", value_name = "HOST", required = true)]
    names: Vec<String>,
    /// How long the server certificate is valid, in days (the CA: ten years).
    #[arg(long, value_name = "N", default_value_t = 825, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
}

const FILES: [&str; 4] = ["ca.pem", "ca.key", "server.pem", "server.key"];

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let existing: Vec<_> = FILES.iter().filter(|f| a.dir.join(f).exists()).collect();
    if !existing.is_empty() {
        bail!("{} already holds {existing:?}: nothing written (choose another --dir)", a.dir.display());
    }
    let now = OffsetDateTime::now_utc();
    // A day of slack for clocks a little behind.
    let since = now - Duration::days(1);

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "ffcluster CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (ca.not_before, ca.not_after) = (since, now + Duration::days(3650));
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut server = CertificateParams::new(a.names.clone()).context("--name: not a host name or IP address")?;
    server.distinguished_name.push(DnType::CommonName, a.names[0].clone());
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    (server.not_before, server.not_after) = (since, now + Duration::days(i64::from(a.days)));
    let server_key = KeyPair::generate()?;
    let ca_pem = ca_cert.pem();
    let server_cert = server.signed_by(&server_key, &Issuer::new(ca, &ca_key))?;

    write(&a.dir, "ca.pem", &ca_pem, 0o644)?;
    write(&a.dir, "ca.key", &ca_key.serialize_pem(), 0o600)?;
    write(&a.dir, "server.pem", &server_cert.pem(), 0o644)?;
    write(&a.dir, "server.key", &server_key.serialize_pem(), 0o600)?;
    let d = a.dir.display();
    println!("wrote {d}/ca.pem, ca.key, server.pem and server.key for {}", a.names.join(", "));
    println!("  controller: ffcluster serve --tls-cert {d}/server.pem --tls-key {d}/server.key");
    println!("  nodes, shims, admin commands: an https:// controller URL and --tls-ca / FFCLUSTER_TLS_CA {d}/ca.pem");
    println!("  keep ca.key private (or delete it): it can sign certificates every client trusts");
    Ok(ExitCode::SUCCESS)
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> anyhow::Result<()> {
    let path = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}
