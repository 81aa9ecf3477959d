//! The browser harness itself, in a real headless Chromium: a page served here (a form,
//! a script under a strict Content-Security-Policy, a cookie) is typed into, clicked,
//! tabbed through, submitted, photographed at a phone's size.

mod browser;
mod skip;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    time::Duration,
};

use browser::{Browser, Cookie, browser_available, evidence_dir, key};
use serde_json::json;

const T: Duration = Duration::from_secs(5);

const CSP: &str = "default-src 'none'; script-src 'self'";

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Harness</title>
<script src="/app.js" defer></script>
<script>document.title = "the inline script ran";</script>
</head>
<body>
<h1>Harness</h1>
<form id="form" method="post" action="/greet">
<label for="name">Name</label>
<input id="name" name="name" type="text" autocomplete="off">
<button id="greet" type="button">Greet</button>
<button id="send" type="submit">Send</button>
</form>
<p id="out">nobody yet</p>
<ul id="list"><li>one</li><li>two</li><li>three</li></ul>
</body>
</html>
"#;

/// Answers a click a little later, so that `wait_text` has to wait.
const SCRIPT: &str = r#"document.getElementById("greet").addEventListener("click", () => {
  const name = document.getElementById("name").value;
  setTimeout(() => {
    document.getElementById("out").textContent = "Hello, " + name + "!";
  }, 150);
});
"#;

/// Serves the page on 127.0.0.1 from a thread (and one more a connection) for the rest
/// of the test binary; its base URL.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// One request, one reply, then the connection closes.
fn answer(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let (mut length, mut cookies) = (0, String::new());
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("cookie") {
                value.trim().clone_into(&mut cookies);
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let html = format!("text/html; charset=utf-8\r\nContent-Security-Policy: {CSP}");
    let (status, kind, extra, content) = match (method, path) {
        ("GET", "/") => (
            "200 OK",
            html.as_str(),
            "Set-Cookie: visit=1; Path=/; HttpOnly; SameSite=Lax\r\n",
            PAGE.to_owned(),
        ),
        ("GET", "/app.js") => ("200 OK", "text/javascript", "", SCRIPT.to_owned()),
        ("POST", "/greet") => (
            "200 OK",
            html.as_str(),
            "",
            format!(
                "<!doctype html><title>Posted</title><p id=posted>posted {}</p>",
                String::from_utf8_lossy(&body)
            ),
        ),
        ("GET", "/cookies") => {
            if cookies.is_empty() {
                "none".clone_into(&mut cookies);
            }
            ("200 OK", "text/plain", "", format!("cookies: {cookies}"))
        }
        _ => ("404 Not Found", "text/plain", "", "not found".to_owned()),
    };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n{extra}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{content}",
        content.len()
    );
}

#[test]
fn types_clicks_tabs_and_submits_under_the_pages_csp() {
    if !browser_available() {
        return;
    }
    let site = serve();
    let b = Browser::start();
    b.goto(&format!("{site}/"));
    assert_eq!(b.current_url(), format!("{site}/"));

    // The inline script was refused (the title is still the page's), and the console
    // says so; /app.js, which the policy allows, answers the click below.
    assert_eq!(b.title(), "Harness");
    let console = b.console_log();
    assert!(
        console
            .iter()
            .any(|e| e.level == "SEVERE" && e.message.contains("Content Security Policy")),
        "no CSP violation in the console: {console:?}"
    );

    let name = b.find("#name");
    assert_eq!(name.tag_name(), "input");
    assert_eq!(name.attribute("type").as_deref(), Some("text"));
    assert_eq!(name.attribute("placeholder"), None);
    name.send_keys("Grace");
    assert_eq!(name.value(), "Grace");
    name.clear();
    assert_eq!(name.value(), "");
    name.send_keys("Ada Lovelace");

    b.find("#greet").click();
    assert_eq!(
        b.wait_text("#out", "Hello, Ada Lovelace!", T).text(),
        "Hello, Ada Lovelace!"
    );

    let items: Vec<String> = b
        .find_all("#list li")
        .iter()
        .map(browser::Element::text)
        .collect();
    assert_eq!(items, ["one", "two", "three"]);
    assert_eq!(b.find("#list").find_all("li").len(), 3);
    assert!(b.try_find("#missing").is_none());

    // The keyboard: Tab and Shift+Tab move the focus; keys go where it is.
    name.click();
    assert_eq!(b.active(), name);
    assert_eq!(b.tab(), b.find("#greet"));
    assert_eq!(b.tab(), b.find("#send"));
    assert_eq!(b.shift_tab(), b.find("#greet"));
    assert_eq!(b.shift_tab(), name);
    // Tabbing into a field selects its text: End, then type.
    b.press(&[key::END]);
    b.keys("!");
    assert_eq!(name.value(), "Ada Lovelace!");

    let joined = b.execute_script(
        "return arguments[0].value + arguments[1]",
        &[name.as_arg(), json!("?")],
    );
    assert_eq!(joined, json!("Ada Lovelace!?"));
    assert!(b.page_source().contains(r#"id="out""#));

    // A real form post, then back.
    b.find("#send").click();
    b.wait_text("#posted", "posted name=Ada+Lovelace%21", T);
    assert_eq!(b.current_url(), format!("{site}/greet"));
    b.back();
    b.wait_for("#name", T);
    b.wait_gone("#posted", T);
}

#[test]
fn keeps_cookies_and_photographs_a_phone_sized_page() {
    if !browser_available() {
        return;
    }
    let site = serve();
    let b = Browser::start_phone();
    b.goto(&format!("{site}/"));
    let viewport = "return [innerWidth, innerHeight]";
    assert_eq!(b.execute_script(viewport, &[]), json!([390, 844]));

    // The server's HttpOnly cookie is seen; one set here reaches the server.
    let visit = b.cookie("visit").expect("the page set a cookie");
    assert_eq!(visit.value, "1");
    assert_eq!(visit.http_only, Some(true));
    assert_eq!(visit.same_site.as_deref(), Some("Lax"));
    b.add_cookie(&Cookie::new("theme", "dark"));
    b.goto(&format!("{site}/cookies"));
    let sent = b.find("body").text();
    assert!(
        sent.contains("visit=1") && sent.contains("theme=dark"),
        "{sent}"
    );
    b.delete_cookie("visit");
    let names: Vec<String> = b.cookies().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["theme"]);
    b.delete_cookies();
    assert!(b.cookies().is_empty());
    b.refresh();
    assert_eq!(b.find("body").text(), "cookies: none");

    // A screenshot of the phone's viewport, one pixel a CSS pixel.
    b.goto(&format!("{site}/"));
    let path = evidence_dir().join("harness/phone.png");
    let _ = std::fs::remove_file(&path);
    b.screenshot(&path);
    let png = std::fs::read(&path).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(png_size(&png), (390, 844));

    b.set_window_size(1024, 700);
    assert_eq!(b.execute_script(viewport, &[]), json!([1024, 700]));
    assert_eq!(png_size(&b.screenshot_png()), (1024, 700));
}

/// Width and height from a PNG's header.
fn png_size(png: &[u8]) -> (u32, u32) {
    let field = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (field(16), field(20))
}
