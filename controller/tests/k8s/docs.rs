//! Following a page of the documentation as a reader would: its `sh` and `bash` blocks,
//! each marked by an HTML comment on the line right above it —
//! `<!-- doc-test: run -->` or `<!-- doc-test: skip (why) -->` — run in order in one
//! shell, so that the variables a block sets reach the next ones.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

/// The mark of a block the test runs.
pub const RUN: &str = "<!-- doc-test: run -->";
/// The start of the mark of a block the test leaves out, `<!-- doc-test: skip (why) -->`.
pub const SKIP: &str = "<!-- doc-test: skip (";

/// What the test does with a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    /// Runs it.
    Run,
    /// Leaves it out, for this reason.
    Skip(String),
}

/// A shell block of the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The line of its opening fence (from 1).
    pub line: usize,
    /// Run or skipped.
    pub mark: Mark,
    /// Its commands.
    pub code: String,
}

/// The `sh` and `bash` blocks of `markdown` in order. Every such block must carry a
/// mark, and every mark must sit right above such a block: a new command cannot escape
/// the test unnoticed.
///
/// # Errors
/// Every block without a mark, and every mark out of place or malformed, by line.
pub fn shell_blocks(markdown: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut errors = Vec::new();
    let mut pending: Option<(usize, Mark)> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let number = i + 1;
        if let Some(info) = line.strip_prefix("```") {
            let lang = info.split_whitespace().next().unwrap_or_default();
            let mut code = String::new();
            i += 1;
            while i < lines.len() && lines[i].trim_end() != "```" {
                code.push_str(lines[i]);
                code.push('\n');
                i += 1;
            }
            match (matches!(lang, "sh" | "bash"), pending.take()) {
                (true, Some((_, mark))) => blocks.push(Block {
                    line: number,
                    mark,
                    code,
                }),
                (true, None) => errors.push(format!(
                    "line {number}: a ```{lang} block without a doc-test mark on the line above"
                )),
                (false, Some((at, _))) => errors.push(format!(
                    "line {at}: a doc-test mark above a ```{lang} block, not a shell one"
                )),
                (false, None) => {}
            }
        } else if line.contains("doc-test") {
            let mark = if line == RUN {
                Some(Mark::Run)
            } else {
                line.strip_prefix(SKIP)
                    .and_then(|rest| rest.strip_suffix(") -->"))
                    .filter(|why| !why.trim().is_empty())
                    .map(|why| Mark::Skip(why.to_owned()))
            };
            match mark {
                Some(mark) => {
                    if let Some((at, _)) = pending.replace((number, mark)) {
                        errors.push(format!("line {at}: a doc-test mark above another one"));
                    }
                }
                None => errors.push(format!(
                    "line {number}: not a doc-test mark: {line:?} (expected {RUN:?} or \"{SKIP}why) -->\")"
                )),
            }
        } else if let Some((at, _)) = pending.take() {
            errors.push(format!(
                "line {at}: a doc-test mark not on the line right above a shell block"
            ));
        }
        i += 1;
    }
    if let Some((at, _)) = pending {
        errors.push(format!("line {at}: a doc-test mark at the end of the page"));
    }
    if errors.is_empty() {
        Ok(blocks)
    } else {
        Err(errors.join("\n"))
    }
}

/// One bash process that runs blocks one after the other (`set -euo pipefail`, each
/// command traced), its output in a log; killed with everything it started (its
/// process group) when dropped.
pub struct Shell {
    child: Child,
    stdin: ChildStdin,
    dir: PathBuf,
    log: PathBuf,
    count: usize,
}

impl Shell {
    /// Starts bash in `cwd` with `env` added; block files, markers and the log go to `dir`.
    #[must_use]
    pub fn start(cwd: &Path, dir: &Path, env: &[(&str, String)]) -> Self {
        use std::os::unix::process::CommandExt as _;
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join("shell.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("bash")
            .args(["--noprofile", "--norc"])
            .current_dir(cwd)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("bash runs");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "set -euo pipefail -x").unwrap();
        Self {
            child,
            stdin,
            dir: dir.to_owned(),
            log,
            count: 0,
        }
    }

    /// Runs `code` (sourced, its standard input empty) and waits for it.
    ///
    /// # Errors
    /// When a command fails (the shell stops, as `set -e` says), or `code` is still
    /// running after `timeout`.
    pub fn run(&mut self, what: &str, code: &str, timeout: Duration) -> Result<(), String> {
        self.count += 1;
        let file = self.dir.join(format!("block-{}.sh", self.count));
        let done = self.dir.join(format!("block-{}.done", self.count));
        std::fs::write(&file, code).unwrap();
        writeln!(
            self.stdin,
            "echo '+++ {}' >&2; source '{}' < /dev/null; touch '{}'",
            what.replace('\'', ""),
            file.display(),
            done.display()
        )
        .map_err(|e| format!("the shell is gone: {e}"))?;
        let start = Instant::now();
        loop {
            if done.exists() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the shell stopped ({status}): a command failed"));
            }
            if start.elapsed() > timeout {
                return Err(format!("still running after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The value of a shell variable.
    ///
    /// # Errors
    /// As [`Shell::run`].
    pub fn var(&mut self, name: &str) -> Result<String, String> {
        let out = self.dir.join(format!("var-{name}"));
        self.run(
            &format!("(the test reads ${name})"),
            &format!("printf '%s' \"${{{name}-}}\" > '{}'\n", out.display()),
            Duration::from_secs(10),
        )?;
        Ok(std::fs::read_to_string(out).unwrap_or_default())
    }

    /// What the shell printed so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn every_shell_block_carries_a_mark_and_every_mark_a_shell_block() {
    let page = "intro\n\n<!-- doc-test: run -->\n```sh\necho one\n```\n\n```yaml\na: 1\n```\n\
                <!-- doc-test: skip (needs Docker) -->\n```bash\ndocker ps\n```\n";
    assert_eq!(
        shell_blocks(page).unwrap(),
        vec![
            Block {
                line: 4,
                mark: Mark::Run,
                code: "echo one\n".into()
            },
            Block {
                line: 12,
                mark: Mark::Skip("needs Docker".into()),
                code: "docker ps\n".into()
            },
        ]
    );
    let unmarked = "```sh\necho one\n```\n";
    assert!(shell_blocks(unmarked).unwrap_err().contains("line 1"));
    let astray = "<!-- doc-test: run -->\n\n```sh\necho one\n```\n";
    assert!(shell_blocks(astray).is_err(), "a blank line between");
    let yaml = "<!-- doc-test: run -->\n```yaml\na: 1\n```\n";
    assert!(shell_blocks(yaml).is_err());
    let no_reason = "<!-- doc-test: skip () -->\n```sh\necho\n```\n";
    assert!(shell_blocks(no_reason).is_err());
    let typo = "<!-- doc-test: runs -->\n```sh\necho\n```\n";
    assert!(shell_blocks(typo).is_err());
}
