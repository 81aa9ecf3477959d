//! A real SMTP server for the notification tests: Debian's python3-aiosmtpd running
//! `tests/notify/smtpd.py` on 127.0.0.1, requiring STARTTLS (with a certificate from a
//! CA made here) and AUTH as vigie / s3cret.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

/// A running server; killed when dropped.
pub struct Smtpd {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The CA that signed its certificate (trust it with `caFile`).
    pub ca: PathBuf,
    out: PathBuf,
}

impl Smtpd {
    /// Starts one with its files in `dir` (emptied first). `None` when aiosmtpd is not
    /// installed, which `make test` does not accept.
    pub fn start(dir: &Path) -> Option<Self> {
        // Debian's interpreter, which python3-aiosmtpd installs for.
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let has_aiosmtpd = Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        if !has_aiosmtpd {
            super::skip::skip(
                "aiosmtpd for the SMTP tests (Debian: python3-aiosmtpd; make deps installs it)",
                "VIGIE_E2E_DOCKER",
            );
            return None;
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let (ca, cert, key) = certificates(dir);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = dir.join("received.eml");
        let mut child = Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/notify/smtpd.py"
            ))
            .arg(&cert)
            .arg(&key)
            .arg(port.to_string())
            .arg(&out)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        Some(Self {
            child,
            port,
            ca,
            out,
        })
    }

    /// Every message received so far: `MAIL FROM:` and `RCPT TO:` lines, then the
    /// raw message, each ended by a line `=== end ===`.
    pub fn received(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1 it signs (openssl), as
/// `(ca, server cert, server key)`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=vigie test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}
