//! Tests of the parent module (a file of their own: the module is long).
use super::*;

fn action(args: &str) -> Result<Action, String> {
    let argv = std::iter::once("lbadm").chain(args.split_whitespace());
    Cli::parse_args(argv).map_err(|e| e.to_string())?.action()
}

#[test]
fn ipvsadm_command_lines() {
    let a = action("-A -t 192.0.2.100:80 -s rr").unwrap();
    let Action::Send(Request::AddService { service }) = a else {
        panic!("{a:?}")
    };
    assert_eq!(service.addr.to_string(), "tcp 192.0.2.100:80");
    assert_eq!(service.scheduler, Scheduler::Rr);
    assert_eq!(service.persistent, None);

    let a = action("-A -u [2001:db8::100]:53 -s mh -b mh-port,mh-fallback").unwrap();
    let Action::Send(Request::AddService { service }) = a else {
        panic!("{a:?}")
    };
    assert_eq!(service.addr.to_string(), "udp [2001:db8::100]:53");
    assert!(service.flags.mh_port && service.flags.mh_fallback);

    let a = action("-A -t 192.0.2.100:0 -s wrr -p").unwrap();
    let Action::Send(Request::AddService { service }) = a else {
        panic!("{a:?}")
    };
    assert_eq!(service.persistent, Some(360));
    let a = action("-A -t 192.0.2.100 -p 600").unwrap();
    let Action::Send(Request::AddService { service }) = a else {
        panic!("{a:?}")
    };
    assert_eq!((service.addr.port, service.persistent), (0, Some(600)));

    let a = action("-a -t 192.0.2.100:80 -r 192.0.2.11:80 -g -w 3").unwrap();
    let Action::Send(Request::AddReal { real, .. }) = a else {
        panic!("{a:?}")
    };
    assert_eq!(
        (real.address.to_string(), real.weight),
        ("192.0.2.11".into(), 3)
    );
    let a = action("-a -t 192.0.2.100:80 -r 192.0.2.12").unwrap();
    let Action::Send(Request::AddReal { real, .. }) = a else {
        panic!("{a:?}")
    };
    assert_eq!(real.weight, 1);

    assert!(matches!(
        action("-e -t 192.0.2.100:80 -r 192.0.2.12 -w 0"),
        Ok(Action::Send(Request::EditReal { .. }))
    ));
    assert!(matches!(
        action("-d -t 192.0.2.100:80 -r 192.0.2.12"),
        Ok(Action::Send(Request::DelReal { .. }))
    ));
    assert!(matches!(
        action("-D -u 192.0.2.100:53"),
        Ok(Action::Send(Request::DelService { .. }))
    ));
    assert_eq!(action("-C").unwrap(), Action::Send(Request::Clear));
    assert_eq!(
        action("-Ln").unwrap(),
        Action::List(
            None,
            Fmt {
                numeric: true,
                ..Default::default()
            }
        )
    );
    assert_eq!(action("-Lnc").unwrap(), Action::ListConns);
    assert_eq!(
        action("--set 3600 60 0").unwrap(),
        Action::Send(Request::SetTimeouts {
            tcp: 3600,
            tcpfin: 60,
            udp: 0
        })
    );
    assert_eq!(
        action("-L --timeout").unwrap(),
        Action::Send(Request::GetTimeouts)
    );
    assert!(action("--set 1 2").is_err());
    let a = action("-A -u 192.0.2.100:53 -s rr -p 60 -M 255.255.255.0 -o").unwrap();
    let Action::Send(Request::AddService { service }) = a else {
        panic!("{a:?}")
    };
    assert_eq!((service.netmask, service.one_packet), (Some(24), true));
    assert!(action("-A -t 192.0.2.100:80 -o")
        .unwrap_err()
        .contains("UDP"));
    assert!(action("-A -t 192.0.2.100:80 -p -M 255.0.255.0")
        .unwrap_err()
        .contains("-M"));
    assert!(action("-A -t [2001:db8::1]:80 -p -M 64").is_ok());
    assert_eq!(
        action("-l -n").unwrap(),
        Action::List(
            None,
            Fmt {
                numeric: true,
                ..Default::default()
            }
        )
    );
    assert_eq!(action("").unwrap(), Action::List(None, Fmt::default()));
}

/// `--socket` goes before or after any subcommand; ipvsadm options and
/// a subcommand together are refused; stray words are named.
#[test]
fn socket_with_every_subcommand_and_stray_words() {
    let parse = |a: &str| Cli::parse_args(std::iter::once("lbadm").chain(a.split_whitespace()));
    for sub in [
        "counters",
        "apply -f x.yaml",
        "apply -f x.yaml --dry-run",
        "export",
        "group list",
        "group set 7 -t 192.0.2.100:80",
        "realserver check --vip 192.0.2.100",
        "man",
        "completions bash",
    ] {
        for line in [
            format!("--socket /tmp/s {sub}"),
            format!("{sub} --socket /tmp/s"),
        ] {
            let c = parse(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(c.sub.is_some(), "{line}");
            assert_eq!(c.socket, std::path::PathBuf::from("/tmp/s"), "{line}");
        }
    }
    let e = parse("-A -t 192.0.2.100:80 counters")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot be combined with ipvsadm options (--add-service, --tcp-service)"),
        "{e}"
    );
    assert_eq!(
        action("-A -t 192.0.2.100:80 foo").unwrap_err(),
        "unexpected argument foo"
    );
    assert_eq!(
        action("--set 1 2 3 4").unwrap_err(),
        "unexpected argument 4"
    );
    assert_eq!(action("bogus").unwrap_err(), "unexpected argument bogus");
}

#[test]
fn ipvsadm_scheduler_flags_and_tunnel_options() {
    let flags = |a: &str| match action(a) {
        Ok(Action::Send(Request::AddService { service })) => service.flags,
        other => panic!("{a}: {other:?}"),
    };
    let f = flags("-A -t 192.0.2.100:80 -s mh -b flag-1,flag-2");
    assert!(f.mh_fallback && f.mh_port);
    let f = flags("-A -t 192.0.2.100:80 -b flag-2 -s sh");
    assert!(f.sh_port && !f.sh_fallback);
    assert!(flags("-A -t 192.0.2.100:80 -s rr -b flag-1,flag-2,flag-3").is_empty());
    assert!(action("-A -t 192.0.2.100:80 -b sh-port")
        .unwrap_err()
        .contains("does not apply to scheduler wlc"));
    assert!(action("-A -t 192.0.2.100:80 -s sh -b flag-9")
        .unwrap_err()
        .contains("-b: unknown scheduler flag 'flag-9'"));
    for tun in [
        "--tun-type ipip",
        "--tun-type gue --tun-port 6080 --tun-csum",
        "--tun-nocsum",
        "--tun-remcsum",
    ] {
        let e = action(&format!("-a -t 192.0.2.100:80 -r 192.0.2.11 -i {tun}")).unwrap_err();
        assert!(
            e.starts_with("-i (tunnelling) is not supported"),
            "{tun}: {e}"
        );
        let e = action(&format!("-a -t 192.0.2.100:80 -r 192.0.2.11 {tun}")).unwrap_err();
        assert!(e.contains("conflict with the forward method"), "{tun}: {e}");
    }
    assert!(matches!(action("-L -n --tun-info"), Ok(Action::List(..))));
}

#[test]
fn bad_command_lines_name_the_argument() {
    let e = action("-a -t 192.0.2.100:80 -r 192.0.2.11 -m").unwrap_err();
    assert!(
        e.starts_with("-m (masquerading/NAT) is not supported"),
        "{e}"
    );
    assert!(action("-a -t 192.0.2.100:80 -r 192.0.2.11 -i")
        .unwrap_err()
        .starts_with("-i"));
    assert!(action("-A -t 192.0.2.100:80 -s wlcx")
        .unwrap_err()
        .contains("-s: unknown scheduler 'wlcx'"));
    assert!(action("-a -t 192.0.2.100:80 -r 192.0.2.11 -w 70000")
        .unwrap_err()
        .contains("-w: weight 70000"));
    assert!(action("-A -t 192.0.2.300:80")
        .unwrap_err()
        .contains("invalid address '192.0.2.300:80'"));
    assert!(action("-A -t 192.0.2.1:99999")
        .unwrap_err()
        .contains("invalid port"));
    assert!(action("-A -t 192.0.2.100:0")
        .unwrap_err()
        .contains("port 0 is only allowed"));
    assert!(action("-A -s rr").unwrap_err().contains("-t|-u"));
    assert!(action("-a -t 192.0.2.100:80").unwrap_err().contains("-r"));
    // Two commands at once are refused by the parser.
    assert!(action("-A -D -t 192.0.2.100:80").is_err());
}
