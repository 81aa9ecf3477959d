//! Local stand-ins of GitHub's and GitLab's REST APIs, answering as their
//! documentation shapes the payloads.

#![allow(dead_code, reason = "each test binary uses part of it")]

pub mod github_app;

/// Shared state of a provider stand-in: what CI says now, per SHA.
pub type Answers =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, &'static str>>>;

/// A tiny HTTP/1.1 server on 127.0.0.1 answering each request with
/// `answer(path, lower-cased headers)` → (status line, JSON body).
pub fn fake_api(
    answer: impl Fn(&str, &[(String, String)]) -> (&'static str, String) + Send + Sync + 'static,
) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                use std::io::{BufRead, BufReader, Write};
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut headers = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or_default();
                let (code, body) = answer(path, &headers);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// A stand-in for GitHub's REST API: check runs and combined status per SHA, as the
/// documentation shapes them.
pub fn fake_github(conclusions: Answers) -> u16 {
    fake_api(move |path, _| github_answer(&conclusions, path))
}

/// GitHub's answer to `GET path` (a repository, a SHA's check runs or its combined
/// status) when CI says `conclusions`.
pub fn github_answer(conclusions: &Answers, path: &str) -> (&'static str, String) {
    {
        if path
            .split('?')
            .next()
            .is_some_and(|p| p.split('/').count() == 4 && p.starts_with("/repos/"))
        {
            return (
                "200 OK",
                r#"{"id": 1, "full_name": "octo/app", "private": true}"#.to_owned(),
            );
        }
        let sha = path.split('/').nth(5).unwrap_or_default().to_owned();
        let body = if path.contains("/check-runs") {
            let state = conclusions
                .lock()
                .unwrap()
                .get(&sha)
                .copied()
                .unwrap_or("queued");
            let (status, conclusion) = match state {
                "queued" | "in_progress" => (state, "null".to_owned()),
                c => ("completed", format!("\"{c}\"")),
            };
            format!(
                r#"{{"total_count": 1, "check_runs": [{{"id": 1, "head_sha": "{sha}", "name": "test", "status": "{status}",
                "conclusion": {conclusion}, "html_url": "https://github.com/octo/app/runs/1", "details_url": null}}]}}"#
            )
        } else {
            format!(r#"{{"state": "pending", "sha": "{sha}", "total_count": 0, "statuses": []}}"#)
        };
        ("200 OK", body)
    }
}

/// A stand-in for GitLab's pipelines API; checks the token and the URL-encoded
/// project path.
pub fn fake_gitlab(statuses: Answers) -> u16 {
    fake_api(move |path, headers| {
        let token = headers
            .iter()
            .find(|(k, _)| k == "private-token")
            .map(|(_, v)| v.as_str());
        if token != Some("read-api-token") {
            return (
                "401 Unauthorized",
                r#"{"message": "401 Unauthorized"}"#.to_owned(),
            );
        }
        if path == "/api/v4/projects/data%2Fapp" {
            return (
                "200 OK",
                r#"{"id": 1, "path_with_namespace": "data/app"}"#.to_owned(),
            );
        }
        let Some(sha) = path
            .strip_prefix("/api/v4/projects/data%2Fapp/pipelines?sha=")
            .and_then(|q| q.split('&').next())
        else {
            return (
                "404 Not Found",
                r#"{"message": "404 Project Not Found"}"#.to_owned(),
            );
        };
        let status = statuses
            .lock()
            .unwrap()
            .get(sha)
            .copied()
            .unwrap_or("created");
        (
            "200 OK",
            format!(
                r#"[{{"id": 47, "iid": 12, "project_id": 1, "status": "{status}", "source": "push", "ref": "main",
                "sha": "{sha}", "web_url": "https://gitlab.example/data/app/-/pipelines/47",
                "created_at": "2026-11-23T10:00:00.000Z", "updated_at": "2026-11-23T10:01:00.000Z"}}]"#
            ),
        )
    })
}

/// A stand-in answering as the one on `port` does, counting the requests it forwards
/// (how often Vigie asked the provider).
pub fn counting(port: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::{
        fmt::Write as _,
        io::{Read, Write},
    };
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    let front = fake_api(move |path, headers| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for (k, v) in headers
            .iter()
            .filter(|(k, _)| k != "host" && k != "connection")
        {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let code = match response.split_whitespace().nth(1) {
            Some("200") => "200 OK",
            Some("401") => "401 Unauthorized",
            Some("404") => "404 Not Found",
            _ => "502 Bad Gateway",
        };
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (code, body)
    });
    (front, hits)
}
