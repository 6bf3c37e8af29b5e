use super::{
    change::{field_of, Change, FILE},
    guard::{cookie_session, host_name},
    *,
};

fn cfg() -> ConsoleCfg {
    ConsoleCfg {
        read_only: false,
        users: vec![ConsoleUser {
            name: "alice".into(),
            password_hash: hash_password("pw-alice-123").unwrap(),
        }],
        login_to_view: false,
        session_idle: 1800,
        hosts: vec!["lb1.example.net".into()],
    }
}

#[test]
fn console_section_is_checked_with_field_names() {
    let mut c = cfg();
    assert!(c.check().is_ok());
    c.users[0].password_hash = "secret".into();
    let (f, m) = c.check().unwrap_err();
    assert_eq!(f, "console.users[0].password_hash");
    assert!(m.contains("PHC"), "{m}");
    let mut c = cfg();
    c.users.push(c.users[0].clone());
    assert_eq!(c.check().unwrap_err().0, "console.users[1].name");
    let mut c = cfg();
    c.users.clear();
    c.login_to_view = true;
    assert_eq!(c.check().unwrap_err().0, "console.login_to_view");
    let mut c = cfg();
    c.session_idle = 5;
    assert_eq!(c.check().unwrap_err().0, "console.session_idle");
}

#[test]
fn the_loaders_errors_name_their_field() {
    let bad_weight = "services:\n  - {protocol: tcp, address: 192.0.2.1, port: 80, real_servers: [{address: 192.0.2.11, weight: 70000}]}\n";
    let e = crate::config::Config::parse(bad_weight, FILE).unwrap_err();
    let (f, m) = field_of(&e);
    assert_eq!(f.as_deref(), Some("services[0].real_servers[0].weight"));
    assert_eq!(m, "weight 70000 out of range (0..=65535)");
    let bad_type = "services:\n  - protocol: tcp\n    address: 192.0.2.1\n    port: 80\n    real_servers:\n      - address: 192.0.2.11\n        weight: heavy\n";
    let e = crate::config::Config::parse(bad_type, FILE).unwrap_err();
    let (f, m) = field_of(&e);
    assert_eq!(
        f.as_deref(),
        Some("services[0].real_servers[0].weight"),
        "{e}"
    );
    assert!(m.contains("invalid type"), "{m}");
    assert!(e.to_string().starts_with("console:7:"), "{e}");
}

fn console() -> Console {
    let (jobs, _) = mpsc::channel(1);
    let (snaps, _) = mpsc::channel(1);
    Console {
        cfg: cfg(),
        auth: Auth::new(vec![], Duration::from_secs(60)),
        jobs,
        snapshots: snaps,
        tls: false,
        last_state: Recent::default(),
        refusals: crate::listen::RefusalLog::new("console"),
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn changes_get_the_running_console_section_and_cannot_touch_it() {
    let c = console();
    let change = |config: Option<serde_json::Value>, yaml: Option<&str>| Change {
        config,
        yaml: yaml.map(str::to_string),
        version: String::new(),
    };
    let parsed = block_on(c.parse(&change(None, Some("services: []\n")))).unwrap();
    assert_eq!(parsed.console.as_ref(), Some(&c.cfg));
    let parsed =
        block_on(c.parse(&change(Some(serde_json::json!({"services": []})), None))).unwrap();
    assert_eq!(parsed.console.as_ref(), Some(&c.cfg));
    // The section cannot come with a change, from JSON or YAML.
    for ch in [
        change(
            Some(serde_json::json!({"console": {"read_only": true}})),
            None,
        ),
        change(None, Some("console: {read_only: true}\n")),
        change(None, None),
    ] {
        assert!(block_on(c.parse(&ch)).is_err());
    }
}

#[test]
fn session_cookie_is_found_among_others() {
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_static("a=1; lbd_session=abc; b=2"),
    );
    assert_eq!(cookie_session(&h).as_deref(), Some("abc"));
    h.insert(header::COOKIE, HeaderValue::from_static("lbd_sessionx=abc"));
    assert_eq!(cookie_session(&h), None);
}

#[test]
fn versions_follow_the_text() {
    use crate::config::config_version;
    assert_eq!(config_version("a"), config_version("a"));
    assert_ne!(config_version("a"), config_version("b"));
    assert_eq!(config_version("a").len(), 32);
}

#[test]
fn only_known_hosts_and_same_origin_changes_pass() {
    let c = console();
    let h = |host: &str, origin: Option<&str>| {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    };
    let get = axum::http::Method::GET;
    let post = axum::http::Method::POST;
    for ok in [
        "192.0.2.2:9469",
        "[2001:db8::2]:9469",
        "localhost:9469",
        "LB1.example.net",
        "192.0.2.2",
    ] {
        assert!(c.same_site(&get, &h(ok, None)).is_ok(), "{ok}");
    }
    for bad in ["evil.example:9469", "", "192.0.2.2.evil.example"] {
        assert!(c.same_site(&get, &h(bad, None)).is_err(), "{bad}");
    }
    assert!(c
        .same_site(&post, &h("192.0.2.2:9469", Some("http://192.0.2.2:9469")))
        .is_ok());
    assert!(c
        .same_site(&post, &h("192.0.2.2:9469", Some("http://evil.example")))
        .is_err());
    assert_eq!(host_name("[2001:db8::2]:80"), "2001:db8::2");
    assert_eq!(host_name("a.example:80"), "a.example");
}
