//! Headless Chromium (Debian's `chromium`) in a lab namespace, driven by
//! its DevTools protocol over `--remote-debugging-pipe` (fd 3 carries
//! commands in, fd 4 replies and events out, each message ended by a NUL):
//! no port to open, nothing but the pipe to reach it.

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    os::fd::{FromRawFd, RawFd},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use xtask::lab::Lab;

/// How long one DevTools command may take.
const CALL_WAIT: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Child,
    to: File,
    from: mpsc::Receiver<Value>,
    next: u64,
    session: String,
    /// Errors the page reported: exceptions, console.error, failed loads.
    errors: Vec<String>,
    profile: PathBuf,
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

impl Browser {
    /// Chromium in namespace `ns`, attached to its first page.
    pub fn start(lab: &Lab, ns: &str) -> Browser {
        let profile = std::env::temp_dir().join(format!("{}-chromium", lab.prefix));
        let _ = std::fs::remove_dir_all(&profile);
        let (cmd_r, cmd_w) = pipe();
        let (out_r, out_w) = pipe();
        let mut c = lab.cmd(ns, "chromium");
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-pipe",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                // Out of the way first (either may be 3 or 4 already);
                // dup2's copies do not close on exec.
                let a = libc::fcntl(cmd_r, libc::F_DUPFD_CLOEXEC, 10);
                let b = libc::fcntl(out_w, libc::F_DUPFD_CLOEXEC, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("chromium (Debian package chromium)");
        // SAFETY: the descriptors are ours; the child has its own copies.
        let (to, from_file) = unsafe {
            libc::close(cmd_r);
            libc::close(out_w);
            (File::from_raw_fd(cmd_w), File::from_raw_fd(out_r))
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from_file);
            let mut buf = Vec::new();
            while matches!(r.read_until(0, &mut buf), Ok(n) if n > 0) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
        let mut b = Browser {
            child,
            to,
            from: rx,
            next: 0,
            session: String::new(),
            errors: Vec::new(),
            profile,
        };
        let targets = b.call("Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target")["targetId"]
            .clone();
        let s = b.call(
            "Target.attachToTarget",
            json!({ "targetId": page, "flatten": true }),
        );
        b.session = s["sessionId"].as_str().unwrap().to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.call(domain, json!({}));
        }
        b
    }

    fn event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.errors.push(format!(
                "exception: {}",
                p["exceptionDetails"]["exception"]["description"]
                    .as_str()
                    .or(p["exceptionDetails"]["text"].as_str())
                    .unwrap_or("?")
            )),
            Some("Runtime.consoleAPICalled") if p["type"] == "error" || p["type"] == "assert" => {
                self.errors
                    .push(format!("console.{}: {}", p["type"], p["args"]))
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => self.errors.push(format!(
                "log: {} {}",
                p["entry"]["text"],
                p["entry"]["url"].as_str().unwrap_or("")
            )),
            _ => {}
        }
    }

    /// One DevTools command; its result (panics on an error answer).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("writing to chromium");
        let deadline = Instant::now() + CALL_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    /// Evaluates `js` in the page (promises awaited); its value.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": js, "awaitPromise": true, "returnByValue": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{js}: {e}");
        }
        r["result"]["value"].clone()
    }

    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait("document.readyState === 'complete'", "the page to load");
    }

    /// Waits (10 s at most) until `cond` (JS) is true.
    pub fn wait(&mut self, cond: &str, what: &str) {
        self.wait_for(cond, what, Duration::from_secs(10));
    }

    pub fn wait_for(&mut self, cond: &str, what: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.eval(&format!("!!({cond})")) == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let body = self.eval("document.body.innerText");
        panic!(
            "waited {limit:?} for {what} ({cond}); the page says:\n{}",
            body.as_str().unwrap_or("")
        );
    }

    /// Clicks the element `selector` finds (it must exist and be enabled).
    pub fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        self.wait(
            &format!(
                "(e => e && !e.disabled && e.offsetParent !== null)(document.querySelector({sel}))"
            ),
            &format!("{selector} to be clickable"),
        );
        self.eval(&format!("document.querySelector({sel}).click()"));
    }

    /// Sets the value of the input or select `selector` finds and fires
    /// its change event, as a user's edit does.
    pub fn fill(&mut self, selector: &str, value: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        let val = serde_json::to_string(value).unwrap();
        self.wait(
            &format!("document.querySelector({sel})"),
            &format!("{selector} to exist"),
        );
        self.eval(&format!(
            "(e => {{ e.focus(); e.value = {val}; e.dispatchEvent(new Event('input', {{bubbles: true}})); e.dispatchEvent(new Event('change', {{bubbles: true}})); }})(document.querySelector({sel}))"
        ));
    }

    /// Types `text` into the focused element with the keyboard.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        self.eval(&format!("document.querySelector({sel}).focus()"));
        self.call("Input.insertText", json!({ "text": text }));
    }

    pub fn text(&mut self, selector: &str) -> String {
        let sel = serde_json::to_string(selector).unwrap();
        self.eval(&format!(
            "(e => e ? e.innerText : '')(document.querySelector({sel}))"
        ))
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// The viewport: a desktop window or a phone's screen.
    pub fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": if mobile { 2 } else { 1 }, "mobile": mobile }),
        );
    }

    /// A PNG of the viewport into `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let data = r["data"].as_str().expect("screenshot data");
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 from DevTools");
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }

    /// What went wrong in the page so far (events read up to now).
    pub fn errors(&mut self) -> Vec<String> {
        // Collect events that arrived since the last call.
        while let Ok(v) = self.from.try_recv() {
            self.event(&v);
        }
        self.errors.clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
