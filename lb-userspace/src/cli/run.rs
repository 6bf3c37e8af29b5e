//! lbadm's commands: each sends its request to lbd and prints the answer
//! (or runs the real-server helper locally).

use std::{io::Read as _, process::ExitCode};

use clap::CommandFactory;

use super::{
    args::{BgpCmd, Cli, RsAction, Sub, VrrpCmd},
    format,
    ipvsadm::{self, Action},
    realserver,
};
use crate::control::{self, BgpAction, Listing, Request, Response, VrrpAction};

/// lbadm's entry point.
pub fn main() -> ExitCode {
    let cli = match Cli::parse_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lbadm: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.sub {
        Some(Sub::Realserver { action }) => return realserver_cmd(action),
        Some(Sub::ConsolePassword) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let pw = line.trim_end_matches(['\r', '\n']);
            if pw.len() < 8 {
                anyhow::bail!("the password must be at least 8 characters");
            }
            println!("{}", crate::console::hash_password(pw)?);
            return Ok(ExitCode::SUCCESS);
        }
        Some(Sub::Diagnose {
            realserver,
            rs,
            verbose,
            json,
        }) => {
            let findings = if *realserver {
                let vip = rs.vip.expect("clap requires --vip with --realserver");
                let port = rs.port.map(|p| (proto(rs.udp), p));
                diagnose_realserver(vip, port, &rs.dev, &rs.nic)?
            } else {
                match control::call(&cli.socket, Request::Diagnose) {
                    Ok(Response::Diagnosis { findings }) => findings,
                    Ok(other) => return fail(other),
                    Err(e) => vec![crate::diagnose::Finding::error(
                        format!("lbd does not answer: {e}"),
                        "start it (systemctl start lbd; journalctl -u lbd says why it stopped)",
                    )],
                }
            };
            return print_findings(&findings, *verbose, *json);
        }
        Some(Sub::Counters) => {
            return match control::call(&cli.socket, Request::Counters)? {
                Response::Counters { counters } => {
                    for (k, v) in counters {
                        println!("{k:<20} {v}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                other => fail(other),
            };
        }
        Some(Sub::Completions { shell }) => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "lbadm", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Some(Sub::Man) => {
            clap_mangen::Man::new(Cli::command())
                .section("8")
                .render(&mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Sub::Export) => {
            return match control::call(&cli.socket, Request::Export)? {
                Response::Export { yaml } => {
                    print!("{yaml}");
                    Ok(ExitCode::SUCCESS)
                }
                other => fail(other),
            };
        }
        Some(Sub::Apply { file, dry_run }) => {
            let yaml = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", file.display()))?;
            let req = Request::Apply {
                yaml,
                file: file.display().to_string(),
                dry_run: *dry_run,
                by: None,
                if_unchanged: None,
            };
            return match control::call(&cli.socket, req)? {
                Response::Applied { changes } => {
                    if changes.is_empty() {
                        println!("no change");
                    }
                    for c in changes {
                        println!("{c}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                other => fail(other),
            };
        }
        Some(Sub::Vrrp { action, json }) => {
            let (action, name) = match action {
                None | Some(VrrpCmd::List) => (VrrpAction::List, None),
                Some(VrrpCmd::Release { name }) => (VrrpAction::Release, name.clone()),
                Some(VrrpCmd::Resume { name }) => (VrrpAction::Resume, name.clone()),
            };
            return match control::call(&cli.socket, Request::Vrrp { action, name })? {
                Response::Vrrp { routers } => {
                    if *json {
                        println!("{}", serde_json::to_string_pretty(&routers)?);
                    } else {
                        print!("{}", format::vrrp(&routers));
                    }
                    Ok(ExitCode::SUCCESS)
                }
                other => fail(other),
            };
        }
        Some(Sub::Bgp { action, json }) => {
            let (action, vip) = match action {
                None | Some(BgpCmd::List) => (BgpAction::List, None),
                Some(BgpCmd::Drain { vip }) => (BgpAction::Drain, *vip),
                Some(BgpCmd::Resume { vip }) => (BgpAction::Resume, *vip),
            };
            return match control::call(&cli.socket, Request::Bgp { action, vip })? {
                Response::Bgp { bgp } => {
                    if *json {
                        println!("{}", serde_json::to_string_pretty(&bgp)?);
                    } else {
                        print!("{}", format::bgp(&bgp));
                    }
                    // A drain a script waits for must have reached BIRD.
                    if action != BgpAction::List && !bgp.in_effect {
                        eprintln!(
                            "lbadm: BIRD has not taken the change within 5 s ({}); lbd keeps trying",
                            bgp.error.as_deref().unwrap_or("no answer yet")
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                other => fail(other),
            };
        }
        Some(Sub::Group { action }) => {
            let req = match action.request() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("lbadm: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let Some(req) = req else {
                let l = list(&cli)?;
                for (m, g) in &l.groups {
                    let members: Vec<String> = g.members.iter().map(|a| a.to_string()).collect();
                    println!(
                        "{m} {} {}",
                        if g.name.is_empty() { "-" } else { &g.name },
                        members.join(" ")
                    );
                }
                return Ok(ExitCode::SUCCESS);
            };
            return match control::call(&cli.socket, req)? {
                Response::Ok => Ok(ExitCode::SUCCESS),
                other => fail(other),
            };
        }
        None => {}
    }
    let action = match cli.action() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lbadm: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    match action {
        Action::Version => {
            println!(
                "lbadm {} (ipvsadm v1.31 compatible)",
                env!("CARGO_PKG_VERSION")
            );
            Ok(ExitCode::SUCCESS)
        }
        Action::List(one, fmt) => {
            let mut listing = list(&cli)?;
            if let Some(a) = one {
                listing.services.retain(|s| s.spec.addr == a);
                if listing.services.is_empty() {
                    eprintln!("lbadm: No such service");
                    return Ok(ExitCode::from(1));
                }
            }
            if cli.json_output() {
                println!("{}", serde_json::to_string_pretty(&listing)?);
            } else {
                print!("{}", format::listing(&listing, &fmt));
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Save(fmt) => {
            print!("{}", format::rules(&list(&cli)?, &fmt));
            Ok(ExitCode::SUCCESS)
        }
        Action::ListDaemon => match control::call(&cli.socket, Request::Daemons)? {
            Response::Daemons { daemons } => {
                if cli.json_output() {
                    println!("{}", serde_json::to_string_pretty(&daemons)?);
                } else {
                    for d in &daemons {
                        println!("{}", d.ipvsadm_line());
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            other => fail(other),
        },
        Action::Restore => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            let requests = match ipvsadm::restore_requests(&text) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("lbadm: -R: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let (lines, requests) = requests.into_iter().unzip();
            match control::call(&cli.socket, Request::Batch { requests, lines })? {
                Response::Ok => Ok(ExitCode::SUCCESS),
                other => fail(other),
            }
        }
        Action::ListConns => {
            match control::call(&cli.socket, Request::ListConns { limit: 1_000_000 })? {
                Response::Conns { conns } => {
                    if cli.json_output() {
                        println!("{}", serde_json::to_string_pretty(&conns)?);
                    } else {
                        print!("{}", format::list_conns(&conns));
                    }
                    Ok(ExitCode::SUCCESS)
                }
                other => fail(other),
            }
        }
        Action::Send(req) => match control::call(&cli.socket, req)? {
            Response::Ok => Ok(ExitCode::SUCCESS),
            Response::Timeouts { tcp, tcpfin, udp } => {
                println!("Timeout (tcp tcpfin udp): {tcp} {tcpfin} {udp}");
                Ok(ExitCode::SUCCESS)
            }
            other => fail(other),
        },
    }
}

fn list(cli: &Cli) -> anyhow::Result<Listing> {
    match control::call(&cli.socket, Request::List)? {
        Response::Listing { listing } => Ok(listing),
        Response::Error { message } => anyhow::bail!("{message}"),
        other => anyhow::bail!("unexpected response {other:?}"),
    }
}

fn fail(r: Response) -> anyhow::Result<ExitCode> {
    match r {
        Response::Error { message } => eprintln!("lbadm: {message}"),
        other => eprintln!("lbadm: unexpected response {other:?}"),
    }
    Ok(ExitCode::from(1))
}

fn proto(udp: bool) -> crate::model::Protocol {
    if udp {
        crate::model::Protocol::Udp
    } else {
        crate::model::Protocol::Tcp
    }
}

/// This host's findings as a real server of `vip`.
fn diagnose_realserver(
    vip: std::net::IpAddr,
    port: Option<(crate::model::Protocol, u16)>,
    dev: &str,
    nics: &[String],
) -> anyhow::Result<Vec<crate::diagnose::Finding>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let nics = if nics.is_empty() {
        realserver::default_nics(std::path::Path::new("/proc/sys"))?
    } else {
        nics.to_vec()
    };
    let facts = rt.block_on(crate::diagnose::realserver::gather(vip, port, dev, &nics))?;
    Ok(crate::diagnose::realserver::judge(&facts))
}

/// Prints findings; exit 1 if any is a warning or an error.
fn print_findings(
    findings: &[crate::diagnose::Finding],
    verbose: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(findings)?);
    } else {
        print!("{}", crate::diagnose::render(findings, verbose));
    }
    let clean = findings
        .iter()
        .all(|f| f.level == crate::diagnose::Level::Ok);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `realserver join` and `leave`, with each `--director`.
fn join_cmd(action: &RsAction) -> anyhow::Result<ExitCode> {
    use crate::join::{client, service_name, JoinOp, JoinRequest, JoinResponse, JOIN_VERSION};
    let (a, leave) = match action {
        RsAction::Join(a) => (a, None),
        RsAction::Leave {
            join,
            drain,
            keep_vip,
        } => (join, Some((*drain, *keep_vip))),
        _ => unreachable!("join_cmd takes join and leave"),
    };
    realserver::require_root()?;
    let token = match &a.token_file {
        Some(p) => Some(crate::join::read_token(p, "--token-file")?),
        None => std::env::var("LB_JOIN_TOKEN").ok(),
    };
    let tls = a.ca.as_ref().map(|ca| client::ClientTls {
        ca: ca.clone(),
        cert: a.cert.clone(),
        key: a.key.clone(),
    });
    let name = service_name(&a.service);
    let vip = a.service.address;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let root = std::path::Path::new("/proc/sys");
    rt.block_on(async {
        let ask = |director: String, op: JoinOp| {
            let req = JoinRequest {
                version: JOIN_VERSION,
                token: token.clone(),
                op,
            };
            let tls = tls.clone();
            async move {
                match client::call(&director, tls.as_ref(), &req).await? {
                    JoinResponse::Ok { status } => Ok(status),
                    JoinResponse::Error { message } => {
                        Err(anyhow::anyhow!("{director} refused: {message}"))
                    }
                }
            }
        };
        let state = realserver::RsState::file(&a.state_dir)?;
        let nics = if a.nic.is_empty() {
            realserver::default_nics(root)?
        } else {
            a.nic.clone()
        };
        let mut failed = 0;
        let Some((drain, keep_vip)) = leave else {
            // Ready to serve first: a director may send traffic at once.
            for d in realserver::up(root, &state, vip, &a.dev, &nics).await? {
                println!("{d}");
            }
            for director in &a.director {
                let op = JoinOp::Join {
                    service: a.service,
                    weight: a.weight,
                };
                match ask(director.clone(), op).await {
                    Ok(st) => println!(
                        "joined {name} at {director} as {} (weight {})",
                        st.address, st.weight
                    ),
                    Err(e) => {
                        eprintln!("lbadm: {e:#}");
                        failed += 1;
                    }
                }
            }
            return Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        };
        // Every director drains it; each removes it once drained (or at
        // its deadline).
        let mut waiting = Vec::new();
        let mut others = false;
        for director in &a.director {
            let op = JoinOp::Leave {
                service: a.service,
                drain_s: drain,
            };
            match ask(director.clone(), op).await {
                Ok(st) => {
                    println!(
                        "leaving {name} at {director}: draining {} (weight 0)",
                        st.address
                    );
                    others |= !st.also_joined.is_empty();
                    waiting.push((director.clone(), st.active_conns));
                }
                Err(e) => {
                    eprintln!("lbadm: {e:#}");
                    failed += 1;
                }
            }
        }
        let give_up =
            std::time::Instant::now() + std::time::Duration::from_secs(u64::from(drain) + 30);
        while !waiting.is_empty() {
            if std::time::Instant::now() > give_up {
                anyhow::bail!("the directors still list this host in {name}");
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let mut still = Vec::new();
            for (director, last) in waiting {
                let st = ask(director.clone(), JoinOp::Status { service: a.service }).await?;
                others |= !st.also_joined.is_empty();
                if !st.joined {
                    println!("left {name} at {director}");
                    continue;
                }
                if st.active_conns != last {
                    println!("{director}: {} active connection(s)", st.active_conns);
                }
                still.push((director, st.active_conns));
            }
            waiting = still;
        }
        if failed > 0 {
            return Ok(ExitCode::from(1));
        }
        if keep_vip || others {
            if others {
                println!("the VIP stays: this host serves other services of {vip}");
            }
        } else {
            for d in realserver::down(&state, vip, &a.dev).await? {
                println!("{d}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn realserver_cmd(action: &RsAction) -> anyhow::Result<ExitCode> {
    if matches!(action, RsAction::Join(_) | RsAction::Leave { .. }) {
        return join_cmd(action);
    }
    if let RsAction::Check {
        args,
        verbose,
        port,
        udp,
    } = action
    {
        if *verbose || port.is_some() {
            let port = port.map(|p| (proto(*udp), p));
            let findings = diagnose_realserver(args.vip, port, &args.dev, &args.nic)?;
            return print_findings(&findings, *verbose, false);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let root = std::path::Path::new("/proc/sys");
    rt.block_on(async {
        let (args, kind) = match action {
            RsAction::Up(a) => (a, 0),
            RsAction::Down(a) => (a, 1),
            RsAction::Check { args, .. } => (args, 2),
            RsAction::Join(_) | RsAction::Leave { .. } => unreachable!("handled above"),
        };
        let nics = if args.nic.is_empty() {
            realserver::default_nics(root)?
        } else {
            args.nic.clone()
        };
        match kind {
            0 | 1 => {
                realserver::require_root()?;
                let state = realserver::RsState::file(&args.state_dir)?;
                let done = if kind == 0 {
                    realserver::up(root, &state, args.vip, &args.dev, &nics).await?
                } else {
                    realserver::down(&state, args.vip, &args.dev).await?
                };
                for d in &done {
                    println!("{d}");
                }
                if done.is_empty() {
                    println!("nothing to do");
                }
                Ok(ExitCode::SUCCESS)
            }
            _ => {
                let missing = realserver::check(root, args.vip, &args.dev, &nics).await?;
                if missing.is_empty() {
                    println!("ok: {} is set up for direct routing", args.vip);
                    Ok(ExitCode::SUCCESS)
                } else {
                    for m in &missing {
                        println!("missing: {m}");
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
    })
}
