//! Line and column of a field in the YAML source (serde_yaml reports them
//! for syntax and type errors only): `services[1].real_servers[0].weight`
//! is found by walking the parser's events with their positions.

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

#[derive(Default)]
struct Events(Vec<(Event, Marker)>);

impl MarkedEventReceiver for Events {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        self.0.push((ev, mark));
    }
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        for idx in rest.split('[') {
            if let Ok(n) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(n));
            }
        }
    }
    out
}

/// Index of the event after the node starting at `i`.
fn skip(ev: &[(Event, Marker)], mut i: usize) -> usize {
    let mut depth = 0i32;
    loop {
        match ev.get(i).map(|e| &e.0) {
            None => return i,
            Some(Event::MappingStart(..) | Event::SequenceStart(..)) => depth += 1,
            Some(Event::MappingEnd | Event::SequenceEnd) => depth -= 1,
            _ => {}
        }
        i += 1;
        if depth <= 0 {
            return i;
        }
    }
}

fn find(ev: &[(Event, Marker)], i: usize, segs: &[Seg], at: Marker) -> Option<Marker> {
    let Some(seg) = segs.first() else {
        return Some(at);
    };
    match (&ev.get(i)?.0, seg) {
        (Event::MappingStart(..), Seg::Key(k)) => {
            let mut j = i + 1;
            while !matches!(ev.get(j)?.0, Event::MappingEnd) {
                let (key_ev, key_mark) = &ev[j];
                let value = j + 1;
                if matches!(key_ev, Event::Scalar(s, ..) if s == k) {
                    return find(ev, value, &segs[1..], *key_mark);
                }
                j = skip(ev, value);
            }
            None
        }
        (Event::SequenceStart(..), Seg::Index(n)) => {
            let mut j = i + 1;
            for _ in 0..*n {
                if matches!(ev.get(j)?.0, Event::SequenceEnd) {
                    return None;
                }
                j = skip(ev, j);
            }
            if matches!(ev.get(j)?.0, Event::SequenceEnd) {
                return None;
            }
            // A block mapping's start is reported after its first key:
            // point at that key instead.
            let at = match (&ev[j].0, ev.get(j + 1)) {
                (Event::MappingStart(..), Some((Event::Scalar(..), m))) => *m,
                _ => ev[j].1,
            };
            find(ev, j, &segs[1..], at)
        }
        _ => None,
    }
}

/// (line, column), both from 1, of `path` in `text`: the key for a field,
/// the item for an index.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let mut events = Events::default();
    Parser::new_from_str(text).load(&mut events, false).ok()?;
    let ev = &events.0;
    let start = ev
        .iter()
        .position(|(e, _)| matches!(e, Event::DocumentStart))?
        + 1;
    let m = find(ev, start, &segments(path), ev.get(start)?.1)?;
    Some((m.line(), m.col() + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields_and_items() {
        let y = "interface: eth0\nservices:\n  - protocol: tcp\n    port: 80\n  - protocol: udp\n    real_servers:\n      - address: 192.0.2.1\n      - {address: 192.0.2.2, weight: 70000}\n";
        assert_eq!(locate(y, "interface"), Some((1, 1)));
        assert_eq!(locate(y, "services[0].port"), Some((4, 5)));
        assert_eq!(locate(y, "services[1]"), Some((5, 5)));
        assert_eq!(
            locate(y, "services[1].real_servers[1].weight"),
            Some((8, 30))
        );
        assert_eq!(locate(y, "services[2]"), None);
        assert_eq!(locate(y, "nosuch"), None);
    }
}
