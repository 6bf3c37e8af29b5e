//! A nesting-depth limit checked before the YAML parser sees the text: the
//! parser's cost grows with the square of the nesting (100,000 nested `[`
//! take minutes), and no configuration needs more than a handful of levels.
//! One linear pass over the text, counting block indentation levels,
//! sequence dashes and flow brackets outside quotes, comments and block
//! scalars.

/// Deeper than any configuration lbd reads (they use 6 or 7 levels).
pub const MAX_DEPTH: usize = 64;

/// The line and column (1-based) where `text` first nests deeper than
/// [`MAX_DEPTH`], if it does.
pub fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Indentation of the line that opened a block scalar (`|`, `>`): more
    // indented lines after it are its content.
    let mut scalar_of: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if let Some(s) = scalar_of {
            if indent > s {
                continue;
            }
            scalar_of = None;
        }
        if flow == 0 {
            while indents.last().is_some_and(|&t| t > indent) {
                indents.pop();
            }
            if indents.last().is_none_or(|&t| t < indent) {
                indents.push(indent);
            }
        }
        let mut depth = indents.len() + flow;
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        let mut dashes = true;
        for (i, c) in body.char_indices() {
            match quote {
                Some(q) => {
                    if c == q {
                        quote = None;
                    }
                }
                None => match c {
                    '#' if prev == ' ' || prev == '\t' => break,
                    '"' | '\'' => quote = Some(c),
                    '[' | '{' => flow += 1,
                    ']' | '}' => flow = flow.saturating_sub(1),
                    '-' if dashes && matches!(body[i + 1..].chars().next(), Some(' ') | None) => {
                        depth += 1
                    }
                    ' ' => {}
                    _ => dashes = false,
                },
            }
            if c != '-' && c != ' ' {
                dashes = false;
            }
            if depth.max(indents.len() + flow) > MAX_DEPTH {
                return Some((n + 1, indent + i + 1));
            }
            prev = c;
        }
        let end = body.split(" #").next().unwrap_or("").trim_end();
        if quote.is_none()
            && flow == 0
            && end
                .rsplit(' ')
                .next()
                .is_some_and(|w| w.starts_with(['|', '>']) && w.len() <= 3)
        {
            scalar_of = Some(indent);
        }
    }
    None
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
}
