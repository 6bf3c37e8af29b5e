//! The web console: headless Chromium on the lab's router logs in, adds a
//! virtual service with two real servers, quiesces one, watches one go down
//! and up; and the refusals (wrong password, missing CSRF token, read-only,
//! invalid weight, a stale version), each changing nothing.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::{json, Value};
use xtask::{
    lab::{Lab, DIRECTOR_IP},
    paths,
};

use crate::{browser::Browser, support::*, tests, Test};

const PORT: u16 = 9469;
const PASSWORD: &str = "lab-console-pw";

/// An argon2 hash of `pw`, made by `lbadm console-password`.
fn hash(pw: &str) -> String {
    let mut c = Command::new(paths().lbadm())
        .arg("console-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(c.stdin.take().unwrap(), "{pw}").unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(h.starts_with("$argon2id$"), "{h}");
    h
}

fn config(console_extra: &str, metrics_extra: &str, services: &str) -> String {
    format!(
        r#"
metrics: {{listen: "{DIRECTOR_IP}:{PORT}"{metrics_extra}}}
console:
  users:
    - {{name: admin, password_hash: "{}"}}
{console_extra}
services: {services}
"#,
        hash(PASSWORD)
    )
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots")
}

/// The row of real server `real` (address:port) of the monitor's `tcp
/// 192.0.2.100:80`: its state as a JS expression.
fn state_of(real: &str) -> String {
    format!(
        "(r => r && r.dataset.state)(document.querySelector('[data-service=\"tcp 192.0.2.100:80\"] tr[data-real=\"{real}\"]'))"
    )
}

/// Applies what is in review and waits for lbd's word.
fn apply_reviewed(b: &mut Browser, expect: &str) {
    b.wait("!document.querySelector('#review').hidden", "the review");
    let changes = b.text("#review-changes");
    assert!(changes.contains(expect), "review shows:\n{changes}");
    let n = b.eval("Number(document.body.dataset.applied || 0)");
    b.click("#review-apply");
    b.wait(
        &format!("Number(document.body.dataset.applied || 0) === {n} + 1"),
        "the apply",
    );
}

fn a_console_session_adds_quiesces_and_watches_real_servers() {
    let lab = lab();
    let _lbd = Lbd::start(&lab, &config("", "", "[]"));
    let before = lab.lbadm(&["export"]).unwrap();
    let mut b = Browser::start(&lab, &lab.ns("router"));
    b.goto(&format!("http://{DIRECTOR_IP}:{PORT}/console"));
    b.wait(
        "document.querySelector('#sum-services b')?.innerText === '0'",
        "the monitor",
    );

    // Configure needs a login.
    b.click("#tabs button[data-tab=configure]");
    b.wait("!document.querySelector('#login').hidden", "the login form");
    b.type_into("#login-user", "admin");
    b.type_into("#login-password", PASSWORD);
    b.click("#login-submit");

    // A new service: VIP, scheduler, an HTTP check, two real servers.
    b.click("#add-service");
    b.fill("[data-path='services.0.address']", "192.0.2.100");
    b.fill("[data-path='services.0.scheduler']", "rr");
    b.fill("#check-type", "http");
    for (k, v) in [
        ("interval", "0.5"),
        ("timeout", "0.5"),
        ("rise", "1"),
        ("fall", "1"),
    ] {
        b.fill(&format!("[data-path='services.0.health_check.{k}']"), v);
    }
    b.click("#editor-add-real");
    b.click("#editor-add-real");
    b.fill(
        "[data-path='services.0.real_servers.0.address']",
        "192.0.2.11",
    );
    b.fill(
        "[data-path='services.0.real_servers.1.address']",
        "192.0.2.12",
    );
    // A bad weight: the loader's message next to the field, nothing applied.
    b.fill("[data-path='services.0.real_servers.1.weight']", "70000");
    b.click("#editor-review");
    b.wait(
        "document.querySelector('.field-error[data-error-for=\"services.0.real_servers.1.weight\"]')",
        "the weight's error",
    );
    let next_to = b.text(".field-error");
    assert_eq!(next_to, "weight 70000 out of range (0..=65535)");
    let whole = b.text("#editor-error");
    assert!(
        whole.starts_with("console:") && whole.contains("services[0].real_servers[1].weight"),
        "{whole}"
    );
    b.screenshot(&screenshots().join("console-field-error.png"));
    assert_eq!(lab.lbadm(&["export"]).unwrap(), before);

    b.fill("[data-path='services.0.real_servers.1.weight']", "1");
    b.click("#editor-review");
    apply_reviewed(&mut b, "+ service tcp 192.0.2.100:80 rr");
    let listed = lab.lbadm(&["-L", "-n"]).unwrap();
    assert!(
        listed.contains("192.0.2.11:80") && listed.contains("192.0.2.12:80"),
        "{listed}"
    );

    // Both up on the monitor, then the client's traffic reaches both.
    b.click("#tabs button[data-tab=monitor]");
    for r in ["192.0.2.11:80", "192.0.2.12:80"] {
        b.wait(&format!("{} === 'up'", state_of(r)), &format!("{r} up"));
    }
    let counts = tally(&lab, 8);
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        ["rs1", "rs2"],
        "{counts:?}"
    );

    // Quiesce rs1 from the console: no new connection goes to it.
    b.click("#tabs button[data-tab=configure]");
    b.click("button[data-action=quiesce][data-path='services.0.real_servers.0']");
    apply_reviewed(
        &mut b,
        "~ real 192.0.2.11 of tcp 192.0.2.100:80: weight 1 -> 0",
    );
    let counts = tally(&lab, 6);
    assert_eq!(counts.get("rs2"), Some(&6), "{counts:?}");
    b.click("#tabs button[data-tab=monitor]");
    b.wait(
        &format!("{} === 'quiesced'", state_of("192.0.2.11:80")),
        "rs1 quiesced",
    );
    b.click("#tabs button[data-tab=configure]");
    b.click("button[data-action=restore][data-path='services.0.real_servers.0']");
    apply_reviewed(&mut b, "weight 0 -> 1");

    // rs2's web server stops: down on the monitor within a refresh or
    // two, with the check's reason; back up once it runs again.
    b.click("#tabs button[data-tab=monitor]");
    lab.stop_rs_http(2);
    b.wait(
        &format!("{} === 'down'", state_of("192.0.2.12:80")),
        "rs2 down",
    );
    let row = b.text("tr[data-real='192.0.2.12:80']");
    assert!(row.contains("down ("), "{row}");
    b.screenshot(&screenshots().join("console-monitor.png"));
    lab.start_rs_http(2).unwrap();
    b.wait(
        &format!("{} === 'up'", state_of("192.0.2.12:80")),
        "rs2 up again",
    );

    // Deactivated: out of the table, still in the configuration; then back.
    b.click("#tabs button[data-tab=configure]");
    b.click("[data-index='0'] .svc-head button[data-action=deactivate]");
    apply_reviewed(&mut b, "- service tcp 192.0.2.100:80");
    assert!(!lab.lbadm(&["-L", "-n"]).unwrap().contains("192.0.2.100"));
    assert!(lab.lbadm(&["export"]).unwrap().contains("active: false"));
    b.click("[data-index='0'] .svc-head button[data-action=activate]");
    apply_reviewed(&mut b, "+ service tcp 192.0.2.100:80");
    b.click("#tabs button[data-tab=monitor]");
    for r in ["192.0.2.11:80", "192.0.2.12:80"] {
        b.wait(&format!("{} === 'up'", state_of(r)), &format!("{r} up"));
    }
    assert_eq!(tally(&lab, 4).len(), 2);

    // The YAML tab: the configuration as text (no console section), an
    // edit reviewed and applied.
    b.click("#tabs button[data-tab=yaml]");
    b.wait(
        "document.querySelector('#yaml-text').value.includes('scheduler: rr')",
        "the YAML",
    );
    let text = b.eval("document.querySelector('#yaml-text').value");
    let text = text.as_str().unwrap();
    assert!(
        !text.contains("console") && !text.contains("argon2"),
        "{text}"
    );
    b.fill(
        "#yaml-text",
        &text.replace("scheduler: rr", "scheduler: wrr"),
    );
    b.click("#yaml-review");
    apply_reviewed(&mut b, "~ service tcp 192.0.2.100:80: scheduler rr -> wrr");
    assert!(lab.lbadm(&["-L", "-n"]).unwrap().contains("wrr"));
    b.click("#tabs button[data-tab=monitor]");

    // On a phone: nothing wider than the screen.
    b.viewport(390, 844, true);
    b.wait(
        "document.documentElement.scrollWidth <= window.innerWidth",
        "the page to fit a phone's width",
    );
    b.screenshot(&screenshots().join("console-phone.png"));

    let errors = b.errors();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
    // Each change logged once, with who made it.
    let log = std::fs::read_to_string(lab.lbd_log()).unwrap();
    let by = log
        .lines()
        .filter(|l| l.contains("applied by console user admin from 192.0.2.1"))
        .count();
    assert_eq!(by, 6, "{log}");
    // The monitor lists them, newest first.
    b.viewport(1280, 1000, false);
    b.wait(
        "document.querySelectorAll('#history-list > li').length === 6",
        "six recent changes",
    );
    let newest = b.text("#history-list > li");
    assert!(
        newest.contains("by console user admin from 192.0.2.1")
            && newest.contains("scheduler rr -> wrr"),
        "{newest}"
    );
    assert!(log.contains("console: logged in"), "{log}");
}

/// curl from the router with a cookie jar: (status, JSON body).
struct Client<'a> {
    lab: &'a Lab,
    jar: PathBuf,
    base: String,
    extra: Vec<String>,
}

impl<'a> Client<'a> {
    fn new(lab: &'a Lab, name: &str, base: &str, extra: &[&str]) -> Client<'a> {
        let jar = std::env::temp_dir().join(format!("{}-jar-{name}", lab.prefix));
        let _ = std::fs::remove_file(&jar);
        Client {
            lab,
            jar,
            base: base.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn req(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[&str],
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let jar = self.jar.to_str().unwrap().to_string();
        let data = body.map(|b| b.to_string());
        let mut args: Vec<&str> = vec![
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-X",
            method,
            "-b",
            &jar,
            "-c",
            &jar,
            "-w",
            "\n%{http_code}",
        ];
        args.extend(self.extra.iter().map(String::as_str));
        for h in headers {
            args.extend(["-H", h]);
        }
        if let Some(d) = &data {
            args.extend(["-H", "Content-Type: application/json", "--data", d]);
        }
        args.push(&url);
        let out = self.lab.exec_out(&self.lab.ns("router"), &args).unwrap();
        let (body, code) = out.rsplit_once('\n').unwrap();
        (
            code.trim().parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
        )
    }

    /// The first real server's weight set to `w` through the console,
    /// against the configuration read now.
    fn set_weight(&self, token: &str, w: u32) -> (u16, Value) {
        let (_, cfg) = self.req("GET", "/api/config", None, &[]);
        let mut changed = cfg["config"].clone();
        changed["services"][0]["real_servers"][0]["weight"] = json!(w);
        self.req(
            "POST",
            "/api/apply",
            Some(&json!({"config": changed, "version": cfg["version"]})),
            &[token],
        )
    }

    fn login(&self, pw: &str) -> (u16, Value) {
        self.req(
            "POST",
            "/api/login",
            Some(&json!({"user": "admin", "password": pw})),
            &[],
        )
    }
}

impl Drop for Client<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.jar);
    }
}

fn the_console_refuses_and_changes_nothing() {
    let lab = lab();
    let services = "\n  - {protocol: tcp, address: 192.0.2.100, port: 80, real_servers: [{address: 192.0.2.11}]}";
    let mut lbd = Lbd::start(&lab, &config("", "", services));
    let export = || lab.lbadm(&["export"]).unwrap();
    let before = export();
    let c = Client::new(&lab, "http", &format!("http://{DIRECTOR_IP}:{PORT}"), &[]);

    // Not logged in: the monitor is open, the configuration is not.
    let (code, state) = c.req("GET", "/api/state", None, &[]);
    assert_eq!(code, 200);
    assert_eq!(state["services"][0]["name"], "tcp 192.0.2.100:80");
    assert_eq!(c.req("GET", "/api/config", None, &[]).0, 401);
    assert_eq!(c.req("GET", "/api/config.yaml", None, &[]).0, 401);
    let any = json!({"yaml": "services: []\n", "version": "x"});
    assert_eq!(c.req("POST", "/api/plan", Some(&any), &[]).0, 401);
    assert_eq!(c.req("POST", "/api/apply", Some(&any), &[]).0, 401);
    // Another name for this address (DNS rebinding) is refused.
    let (code, _) = c.req("GET", "/api/state", None, &["Host: lb.evil.example"]);
    assert_eq!(code, 421);

    // A wrong password: refused and logged.
    let (code, body) = c.login("wrong-password");
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["error"], "wrong user name or password");
    let (code, body) = c.login(PASSWORD);
    assert_eq!(code, 200, "{body}");
    let csrf = body["csrf"].as_str().unwrap().to_string();
    let token = format!("X-CSRF-Token: {csrf}");

    // The configuration as the console holds it: no console section, no hash.
    let (code, cfg) = c.req("GET", "/api/config", None, &[]);
    assert_eq!(code, 200);
    assert!(cfg["config"].get("console").is_none(), "{cfg}");
    assert!(!cfg.to_string().contains("argon2"), "{cfg}");
    let version = cfg["version"].as_str().unwrap().to_string();
    let mut changed = cfg["config"].clone();
    changed["services"][0]["real_servers"][0]["weight"] = json!(5);
    let change = json!({"config": changed, "version": version});

    // No CSRF token, or a wrong one: refused.
    let (code, body) = c.req("POST", "/api/apply", Some(&change), &[]);
    assert_eq!(code, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("CSRF"), "{body}");
    let wrong = format!("X-CSRF-Token: {}", "0".repeat(64));
    let (code, _) = c.req("POST", "/api/apply", Some(&change), &[&wrong]);
    assert_eq!(code, 403);
    // The right token from another origin's page: refused.
    let (code, _) = c.req(
        "POST",
        "/api/apply",
        Some(&change),
        &[&token, "Origin: http://evil.example"],
    );
    assert_eq!(code, 403);
    assert_eq!(export(), before);
    // The download holds no password hash either.
    let (code, yaml) = c.req("GET", "/api/config.yaml", None, &[]);
    assert_eq!(code, 200);
    let yaml = yaml.as_str().unwrap_or_default().to_string();
    assert!(
        yaml.contains("192.0.2.100") && !yaml.contains("argon2"),
        "{yaml}"
    );
    // Nor can a change carry the console's section.
    let (_, body) = c.req(
        "POST",
        "/api/plan",
        Some(&json!({"yaml": "console: {read_only: true}\nservices: []\n", "version": version})),
        &[&token],
    );
    assert!(
        body["error"].as_str().unwrap().starts_with("console:"),
        "{body}"
    );

    // An invalid weight: the loader's message and field, nothing applied.
    let mut bad = cfg["config"].clone();
    bad["services"][0]["real_servers"][0]["weight"] = json!(70000);
    let (code, body) = c.req(
        "POST",
        "/api/apply",
        Some(&json!({"config": bad, "version": version})),
        &[&token],
    );
    assert_eq!(code, 200);
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(body["field"], "services[0].real_servers[0].weight");
    assert_eq!(body["message"], "weight 70000 out of range (0..=65535)");
    assert_eq!(export(), before);

    // The YAML path gives the user's own line numbers.
    let yaml = "services:\n  - protocol: tcp\n    address: 192.0.2.100\n    port: eighty\n";
    let (_, body) = c.req(
        "POST",
        "/api/plan",
        Some(&json!({"yaml": yaml, "version": version})),
        &[&token],
    );
    assert!(
        body["error"].as_str().unwrap().starts_with("console:4:"),
        "{body}"
    );
    // A plan changes nothing; the apply does, once; the same change made
    // against the old version again is refused.
    let (_, plan) = c.req("POST", "/api/plan", Some(&change), &[&token]);
    assert_eq!(plan["ok"], true, "{plan}");
    assert_eq!(
        plan["changes"][0],
        "~ real 192.0.2.11 of tcp 192.0.2.100:80: weight 1 -> 5"
    );
    assert_eq!(export(), before);
    let (_, done) = c.req("POST", "/api/apply", Some(&change), &[&token]);
    assert_eq!(done["ok"], true, "{done}");
    assert!(export().contains("weight: 5"));
    // Recent changes: the newest first, with who made it (for users only).
    let (_, state) = c.req("GET", "/api/state", None, &[]);
    let last = &state["history"][0];
    assert_eq!(
        last["what"],
        "configuration console applied by console user admin from 192.0.2.1"
    );
    assert_eq!(
        last["changes"][0],
        "~ real 192.0.2.11 of tcp 192.0.2.100:80: weight 1 -> 5"
    );
    let anonymous = Client::new(&lab, "anon", &format!("http://{DIRECTOR_IP}:{PORT}"), &[]);
    let (_, state) = anonymous.req("GET", "/api/state", None, &[]);
    assert_eq!(state["history"], json!([]), "{state}");
    let (_, stale) = c.req("POST", "/api/apply", Some(&change), &[&token]);
    assert!(
        stale["error"]
            .as_str()
            .unwrap()
            .contains("changed since it was read"),
        "{stale}"
    );

    // Logged out: the session is gone.
    assert_eq!(c.req("POST", "/api/logout", None, &[&token]).0, 200);
    assert_eq!(c.req("GET", "/api/config", None, &[]).0, 401);

    // Five wrong passwords lock the source out, the right one included.
    for _ in 0..5 {
        assert_eq!(c.login("guess").0, 401);
    }
    assert_eq!(c.login(PASSWORD).0, 429);

    let log = std::fs::read_to_string(lab.lbd_log()).unwrap();
    assert!(log.contains("console: login refused"), "{log}");

    // Read-only, over TLS: logins work, changes do not.
    drop(c);
    lbd.kill();
    let pki = Pki::new(&lab);
    let f = |n: &str| pki.path(n);
    let tls = format!(
        ", tls: {{cert: \"{}\", key: \"{}\"}}",
        f("server.pem"),
        f("server.key")
    );
    let mut ro = Lbd::start(&lab, &config("  read_only: true", &tls, services));
    let before = export();
    let ca = f("ca.pem");
    let https = |name: &str| {
        Client::new(
            &lab,
            name,
            &format!("https://{DIRECTOR_IP}:{PORT}"),
            &["--cacert", &ca],
        )
    };
    let c = https("https");
    let (code, _) = c.req("GET", "/console", None, &[]);
    assert_eq!(code, 200);
    let (code, body) = c.login(PASSWORD);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["can_edit"], false);
    // The session cookie is HttpOnly and, over TLS, Secure.
    let jar = std::fs::read_to_string(&c.jar).unwrap();
    let cookie: Vec<&str> = jar
        .lines()
        .find(|l| l.contains("lbd_session"))
        .unwrap_or_else(|| panic!("{jar}"))
        .split('\t')
        .collect();
    assert!(
        cookie[0].starts_with("#HttpOnly_") && cookie[3] == "TRUE",
        "{jar}"
    );
    let token = format!("X-CSRF-Token: {}", body["csrf"].as_str().unwrap());
    let (code, body) = c.set_weight(&token, 7);
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("read-only"),
        "{body}"
    );
    assert_eq!(export(), before);
    ro.kill();
    drop(c);

    // The same over TLS, not read-only: the change is taken.
    let _rw = Lbd::start(&lab, &config("", &tls, services));
    let c = https("https-rw");
    let (code, body) = c.login(PASSWORD);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["can_edit"], true);
    let token = format!("X-CSRF-Token: {}", body["csrf"].as_str().unwrap());
    let (code, body) = c.set_weight(&token, 7);
    assert_eq!((code, &body["ok"]), (200, &json!(true)), "{body}");
    assert!(export().contains("weight: 7"));
}

pub const TESTS: &[Test] = tests![
    a_console_session_adds_quiesces_and_watches_real_servers,
    the_console_refuses_and_changes_nothing
];
