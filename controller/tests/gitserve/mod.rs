//! Real git remotes for the tests: `git http-backend` (Git's own smart-HTTP server, a
//! CGI program) behind a small HTTP/1.1 front on 127.0.0.1 that asks for a token by
//! Basic authentication; and Debian's OpenSSH server on 127.0.0.1 with generated host
//! and client keys.

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

/// Runs git in `dir` (author and committer set); its output, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "ops")
        .env("GIT_AUTHOR_EMAIL", "ops@example.com")
        .env("GIT_COMMITTER_NAME", "ops")
        .env("GIT_COMMITTER_EMAIL", "ops@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A smart-HTTP git server for the repositories under `root`; a request without the
/// token (as the Basic password, any user) gets 401.
pub struct HttpGit {
    pub port: u16,
}

/// Whether a request's Basic credentials (user, password) are taken.
pub type Check = std::sync::Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Called with the method and the target (`/ops.git/info/refs?service=…`) of each
/// authorized request before Git answers it: a test makes a concurrent push there.
pub type BeforeRequest = std::sync::Arc<dyn Fn(&str, &str) + Send + Sync>;

impl HttpGit {
    /// Serves `root` on a free port.
    #[must_use]
    pub fn start(root: &Path, token: &str) -> Self {
        Self::start_with(root, token, std::sync::Arc::new(|_: &str, _: &str| {}))
    }

    /// Serves `root` on a free port, calling `before` ahead of each request.
    #[must_use]
    pub fn start_with(root: &Path, token: &str, before: BeforeRequest) -> Self {
        let token = token.to_owned();
        Self::serve(
            root,
            std::sync::Arc::new(move |_: &str, password: &str| password == token),
            before,
        )
    }

    /// Serves `root` on a free port; a request is taken when `check(user, password)`
    /// of its Basic authentication says so (tokens that change: a GitHub App's).
    #[must_use]
    pub fn start_checked(root: &Path, check: Check) -> Self {
        Self::serve(root, check, std::sync::Arc::new(|_: &str, _: &str| {}))
    }

    fn serve(root: &Path, check: Check, before: BeforeRequest) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let root = root.to_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, check, before) = (root.clone(), check.clone(), before.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &root, &*check, &*before);
                });
            }
        });
        Self { port }
    }

    /// The URL of a repository under the root.
    #[must_use]
    pub fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.port)
    }
}

fn authorized(
    headers: &[(String, String)],
    check: &(dyn Fn(&str, &str) -> bool + Send + Sync),
) -> bool {
    use base64::Engine as _;
    headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .and_then(|(_, v)| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|d| String::from_utf8(d).ok())
        .is_some_and(|up| up.split_once(':').is_some_and(|(u, p)| check(u, p)))
}

#[allow(
    clippy::too_many_lines,
    reason = "one HTTP exchange, read top to bottom"
)]
fn serve(
    stream: TcpStream,
    root: &Path,
    check: &(dyn Fn(&str, &str) -> bool + Send + Sync),
    before: &(dyn Fn(&str, &str) + Send + Sync),
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // The body: Content-Length, or chunked (libgit2 streams its POSTs).
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                let mut end = String::new();
                reader.read_line(&mut end)?;
                break;
            }
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    }
    if !authorized(&headers, check) {
        write!(
            out,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    before(&method, &target);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut child = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "vigie")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env(
            "HTTP_GIT_PROTOCOL",
            header("git-protocol").unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    child.stdin.take().unwrap().write_all(&body)?;
    let mut cgi = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut cgi)?;
    let _ = child.wait();
    // CGI output: headers (with an optional Status:), a blank line, the body.
    let split = cgi
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| cgi.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((at, sep)) = split else {
        write!(
            out,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    };
    let head = String::from_utf8_lossy(&cgi[..at]).into_owned();
    let payload = &cgi[at + sep..];
    let mut status = "200 OK".to_owned();
    let mut response = String::new();
    for h in head.lines() {
        if let Some(s) = h.strip_prefix("Status:") {
            s.trim().clone_into(&mut status);
        } else if !h.trim().is_empty() {
            response.push_str(h.trim_end());
            response.push_str("\r\n");
        }
    }
    write!(
        out,
        "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    )?;
    out.write_all(payload)?;
    Ok(())
}

/// An OpenSSH server on 127.0.0.1 for this test run, as root, accepting one key.
pub struct SshGit {
    pub port: u16,
    child: Child,
    /// The client's private key (OpenSSH format).
    pub client_key: String,
    /// A `known_hosts` line for this server.
    pub known_hosts: String,
    /// A `known_hosts` line with another key for this server (an impostor's view).
    pub wrong_known_hosts: String,
}

fn keygen(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pubkey(path: &Path) -> String {
    let p = PathBuf::from(format!("{}.pub", path.display()));
    std::fs::read_to_string(p).unwrap()
}

impl SshGit {
    /// Starts sshd (Debian's openssh-server) with keys made under `dir`; `None` when
    /// sshd is not installed or the tests are not root.
    #[must_use]
    pub fn start(dir: &Path) -> Option<Self> {
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        if !Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"))
        {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let (host, other, client) = (
            dir.join("host_key"),
            dir.join("other_key"),
            dir.join("client_key"),
        );
        keygen(&host);
        keygen(&other);
        keygen(&client);
        let authorized = dir.join("authorized_keys");
        std::fs::write(&authorized, pubkey(&client)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile {}\n",
                host.display(),
                authorized.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").ok();
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .ok()?;
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let line = |key: &Path| {
            let p = pubkey(key);
            let mut f = p.split_whitespace();
            format!(
                "[127.0.0.1]:{port} {} {}\n",
                f.next().unwrap(),
                f.next().unwrap()
            )
        };
        Some(Self {
            port,
            child,
            client_key: std::fs::read_to_string(&client).unwrap(),
            known_hosts: line(&host),
            wrong_known_hosts: line(&other),
        })
    }

    /// The URL of a repository at an absolute path.
    #[must_use]
    pub fn url(&self, path: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, path.display())
    }
}

impl Drop for SshGit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
