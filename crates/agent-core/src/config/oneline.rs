//! HCL1 lets a block hold several attributes on one line (`ports { http = 1  rpc = 2 }`, as
//! Nomad's documentation writes them); HCL2 allows one. This pass spreads such lines over several
//! lines and remembers how many lines it added, so parse errors still name the original line.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tok {
    /// An identifier, number or keyword.
    Word,
    /// A quoted string.
    Str,
    /// `=` (not `==`).
    Assign,
    /// `{` opening a block body.
    BlockOpen,
    /// `}` closing a block body.
    BlockClose,
    /// Any other bracket or character.
    Other(u8),
}

struct Token {
    kind: Tok,
    start: usize,
    end: usize,
}

fn tokenize(line: &str) -> Option<Vec<Token>> {
    let b = line.as_bytes();
    let mut out: Vec<Token> = Vec::new();
    let mut stack: Vec<bool> = Vec::new(); // true = block brace
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => break,
            b'/' if b.get(i + 1) == Some(&b'/') => break,
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if i >= b.len() {
                    return None; // unterminated or multi-line: leave the line alone
                }
                i += 1;
                out.push(Token {
                    kind: Tok::Str,
                    start,
                    end: i,
                });
                continue;
            }
            b'=' if b.get(i + 1) == Some(&b'=') => {
                i += 2;
                out.push(Token {
                    kind: Tok::Other(b'='),
                    start,
                    end: i,
                });
                continue;
            }
            b'=' => Tok::Assign,
            b'{' => {
                let prev = out.last().map(|t| t.kind);
                let block = matches!(prev, Some(Tok::Word) | Some(Tok::Str));
                stack.push(block);
                if block {
                    Tok::BlockOpen
                } else {
                    Tok::Other(b'{')
                }
            }
            b'}' => match stack.pop() {
                Some(true) => Tok::BlockClose,
                Some(false) => Tok::Other(b'}'),
                None => return None,
            },
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.' => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'-' | b'.'))
                {
                    i += 1;
                }
                out.push(Token {
                    kind: Tok::Word,
                    start,
                    end: i,
                });
                continue;
            }
            other => Tok::Other(other),
        };
        i += 1;
        out.push(Token {
            kind,
            start,
            end: i,
        });
    }
    Some(out)
}

/// Whether token `i` starts a new item (attribute or block) inside a block body.
fn starts_item(toks: &[Token], i: usize) -> bool {
    let key = matches!(toks[i].kind, Tok::Word | Tok::Str);
    if !key {
        return false;
    }
    let mut j = i + 1;
    while j < toks.len() && toks[j].kind == Tok::Str {
        j += 1; // block labels
    }
    match toks.get(j).map(|t| t.kind) {
        Some(Tok::Assign) => j == i + 1,
        Some(Tok::BlockOpen) => true,
        _ => false,
    }
}

/// Spreads one line's single-line blocks over several lines when a body holds more than one
/// item; `None` when the line needs no change.
fn expand_line(line: &str) -> Option<String> {
    let toks = tokenize(line)?;
    if !toks.iter().any(|t| t.kind == Tok::BlockOpen) {
        return None;
    }
    // Insert a newline after every block `{`, before every block `}`, and before every item
    // that follows a completed value at block-body depth.
    let mut breaks: Vec<usize> = Vec::new();
    let mut depth_other = 0usize; // inside [..], (..) or object expressions
    let mut in_block = 0usize;
    let mut items_in_line = 0usize;
    for i in 0..toks.len() {
        match toks[i].kind {
            Tok::BlockOpen => {
                in_block += 1;
                breaks.push(toks[i].end);
            }
            Tok::BlockClose => {
                in_block = in_block.saturating_sub(1);
                breaks.push(toks[i].start);
            }
            Tok::Other(b'[' | b'(' | b'{') => depth_other += 1,
            Tok::Other(b']' | b')' | b'}') => depth_other = depth_other.saturating_sub(1),
            _ => {}
        }
        if in_block > 0 && depth_other == 0 && starts_item(&toks, i) {
            items_in_line += 1;
            let after_value = i > 0
                && matches!(
                    toks[i - 1].kind,
                    Tok::Word | Tok::Str | Tok::BlockClose | Tok::Other(b']' | b')' | b'}')
                );
            if after_value {
                breaks.push(toks[i].start);
            }
        }
    }
    let nested = toks.iter().filter(|t| t.kind == Tok::BlockOpen).count() > 1;
    if items_in_line < 2 && !nested {
        return None;
    }
    breaks.sort_unstable();
    breaks.dedup();
    let mut out = String::with_capacity(line.len() + breaks.len());
    let mut last = 0;
    for at in breaks {
        let piece = &line[last..at];
        out.push_str(if last == 0 {
            piece.trim_end()
        } else {
            piece.trim()
        });
        out.push('\n');
        last = at;
    }
    out.push_str(line[last..].trim_start());
    Some(out)
}

/// The rewritten text and, for each output line, the original line it came from (1-based).
pub fn spread_single_line_blocks(text: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len() + 64);
    let mut origin = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        let piece = expand_line(line).unwrap_or_else(|| line.to_string());
        for _ in piece.split('\n') {
            origin.push(n + 1);
        }
        out.push_str(&piece);
        out.push('\n');
    }
    out.pop();
    (out, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_only_what_hcl2_rejects() {
        let (t, map) = spread_single_line_blocks("ports { http = 1  rpc = 2 }\nx = 1\n");
        assert_eq!(t, "ports {\nhttp = 1\nrpc = 2\n}\nx = 1\n");
        assert_eq!(map, vec![1, 1, 1, 1, 2, 3]);
        let one = "ports { http = 1 }\nmeta = { a = \"b\", c = \"d\" }";
        assert_eq!(spread_single_line_blocks(one).0, one);
    }

    #[test]
    fn nested_and_lists() {
        let (t, _) = spread_single_line_blocks(
            "server_join { retry_join = [\"a\", \"b\"]  retry_interval = \"30s\"  retry_max = 0 }",
        );
        assert_eq!(
            t,
            "server_join {\nretry_join = [\"a\", \"b\"]\nretry_interval = \"30s\"\nretry_max = 0\n}"
        );
        let (t, _) = spread_single_line_blocks(
            "server { enabled = true server_join { retry_join = [\"a\"] } }",
        );
        assert_eq!(
            t,
            "server {\nenabled = true\nserver_join {\nretry_join = [\"a\"]\n}\n}"
        );
    }
}
