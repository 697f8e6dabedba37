//! `https://` origins and CDNs over rustls, trusting a private CA given with `--ca-cert`.
//! nginx terminates TLS in front of `trackfs serve` (control plane and CDN alike).

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::rust_origin::RustOrigin;
use support::{sources, Mount};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=trackfs test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

struct TlsProxy(Child);

impl Drop for TlsProxy {
    fn drop(&mut self) {
        support::terminate(&mut self.0, Duration::from_secs(5));
    }
}

fn tls_proxy(dir: &Path, port: u16, backend: &str) -> TlsProxy {
    let conf = format!(
        "daemon off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{}}\n\
         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
           fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
           server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {d}/server.pem; ssl_certificate_key {d}/server.key;\n\
             location / {{ proxy_pass {backend}; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }} }} }}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .args(["-p"])
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(25));
    }
    TlsProxy(child)
}

#[test]
fn https_origin_and_cdn_with_a_private_ca() {
    if !support::fuse_usable()
        || !support::require_tool("ffmpeg")
        || !support::require_tool("nginx")
        || !support::require_tool("openssl")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let https = format!("https://127.0.0.1:{port}");
    let origin = RustOrigin::start(sources::music(), &["--cdn-base", &https]);
    let _proxy = tls_proxy(dir.path(), port, &origin.url);
    let ca = dir.path().join("ca.pem");

    // Without the CA the certificate is not trusted: a clear failure at start.
    match Mount::try_start(&https, &origin.credentials_file, &[]) {
        Ok(_) => panic!("a certificate from an unknown CA must not be trusted"),
        Err(log) => assert!(log.contains("cannot use the origin"), "{log}"),
    }

    let mount = Mount::start(
        &https,
        &origin.credentials_file,
        &["--ca-cert", ca.to_str().unwrap()],
    );
    let (relative, _) = sources::TRACKS[2];
    let source = sources::music().join(relative);
    let path = mount
        .path()
        .join("Björk/Vespertine: \"Live\"?/03 - Noise Study.flac");
    assert_eq!(support::sha256_file(&path), support::sha256_file(&source));
    assert!(mount.stat("cdn_requests") > 0);
}
