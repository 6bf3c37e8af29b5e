//! A nesting-depth limit checked before serde_yaml loads the text: its
//! parser's cost grows with the square of the flow nesting (100,000 nested
//! `[` take minutes) and no configuration needs more than a handful of
//! levels. The check runs the same parser (libyaml's, which serde_yaml
//! uses, so both read the text alike) event by event and stops at the
//! first node deeper than [`MAX_DEPTH`]: the work before that point is
//! linear in the text.

use std::mem::MaybeUninit;

use unsafe_libyaml as unsafe_sys;

/// Deeper than any configuration lbd reads (they use 6 or 7 levels).
pub const MAX_DEPTH: usize = 64;

/// The line and column (1-based) where `text` first nests deeper than
/// [`MAX_DEPTH`], if it does. Text the parser refuses first is left to
/// serde_yaml to report (the parser got there within the limit).
pub fn too_deep(text: &str) -> Option<(usize, usize)> {
    // The parser keeps a pointer to itself once given its input: boxed, it
    // stays put.
    let mut parser: Box<MaybeUninit<unsafe_sys::yaml_parser_t>> = Box::new(MaybeUninit::uninit());
    let p = parser.as_mut_ptr();
    // SAFETY: `p` points to memory owned by `parser` for the whole call;
    // it is initialised before use and deleted once; `text` outlives the
    // parser; every event is deleted after its type and mark are read.
    unsafe {
        if unsafe_sys::yaml_parser_initialize(p).fail {
            return None;
        }
        unsafe_sys::yaml_parser_set_encoding(p, unsafe_sys::YAML_UTF8_ENCODING);
        unsafe_sys::yaml_parser_set_input_string(p, text.as_ptr(), text.len() as u64);
        let mut depth = 0usize;
        let mut found = None;
        loop {
            let mut ev = MaybeUninit::<unsafe_sys::yaml_event_t>::uninit();
            if unsafe_sys::yaml_parser_parse(p, ev.as_mut_ptr()).fail {
                break;
            }
            let ev = ev.as_mut_ptr();
            let (kind, mark) = ((*ev).type_, (*ev).start_mark);
            unsafe_sys::yaml_event_delete(ev);
            match kind {
                unsafe_sys::YAML_SEQUENCE_START_EVENT | unsafe_sys::YAML_MAPPING_START_EVENT => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        found = Some((mark.line as usize + 1, mark.column as usize + 1));
                        break;
                    }
                }
                unsafe_sys::YAML_SEQUENCE_END_EVENT | unsafe_sys::YAML_MAPPING_END_EVENT => {
                    depth = depth.saturating_sub(1)
                }
                unsafe_sys::YAML_STREAM_END_EVENT => break,
                _ => {}
            }
        }
        unsafe_sys::yaml_parser_delete(p);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_configurations_pass() {
        let example = include_str!("../../../deploy/lbd.yaml");
        assert_eq!(too_deep(example), None);
        let scalar = "services:\n  - health_check:\n      send: |\n        [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n";
        assert_eq!(too_deep(scalar), None);
        let quoted = format!(
            "a: \"{}\"\nb: '{}'\n# {}\n",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100)
        );
        assert_eq!(too_deep(&quoted), None);
    }

    #[test]
    fn deep_flow_block_and_dash_nesting_are_found_at_once() {
        let flow = format!("services: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        let t = std::time::Instant::now();
        assert_eq!(too_deep(&flow), Some((1, 10 + MAX_DEPTH)));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let block: String = (0..100)
            .map(|i| format!("{}a{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(too_deep(&block).map(|p| p.0), Some(MAX_DEPTH + 1));
        let dashes = format!("{}1\n", "- ".repeat(100));
        assert!(too_deep(&dashes).is_some());
    }

    /// What a line scanner gets wrong: quotes inside plain scalars, quoted
    /// scalars over several lines, keys that end in `|`, brackets inside
    /// strings. The parser's own events are not fooled.
    #[test]
    fn quotes_block_indicators_and_brackets_in_strings_do_not_hide_depth() {
        let n = 100_000;
        let deep = || format!("{}{}", "[".repeat(n), "]".repeat(n));
        for text in [
            format!("services: [a', {}]", deep()),
            format!("services: [a\", {}]", deep()),
            format!("services:\n  k |:\n    x: {}\n", deep()),
            format!(
                "x: [ \"\n {}",
                (0..200).map(|_| " \", [[[[[[[[[[ \"\n").collect::<String>()
            ),
            format!("x: {}", (0..100).map(|_| "[ ']]]]', ").collect::<String>()),
        ] {
            let t = std::time::Instant::now();
            let found = too_deep(&text);
            assert!(
                t.elapsed() < std::time::Duration::from_secs(2),
                "{:?}",
                t.elapsed()
            );
            let shown: String = text.chars().take(40).collect();
            if found.is_none() {
                // Only if the parser itself refuses the text first, quickly.
                let t = std::time::Instant::now();
                assert!(
                    serde_yaml::from_str::<serde_yaml::Value>(&text).is_err(),
                    "{shown}"
                );
                assert!(t.elapsed() < std::time::Duration::from_secs(2), "{shown}");
            }
        }
    }
}
