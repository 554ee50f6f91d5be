//! Tokenizer for PTX text.
//!
//! PTX as NVRTC writes it is line oriented but statements end with `;`, several may share a line
//! (inline-asm blocks `{ .reg .u64 a; cvta...; cvt...; }`) and `.loc` / `.file` directives end at the
//! end of their line without a `;`. Tokens therefore carry their 1-based line, and the parser skips
//! a `.loc` or `.file` directive by dropping the rest of its line.

use crate::error::SimError;

/// One token of PTX text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An identifier, opcode (`add.s32`), directive (`.reg`) or register (`%r12`, `%tid.x`).
    /// `::` belongs to the word (`.shared::cta`); a single `:` ends it (labels).
    Word(String),
    /// A numeric literal as written (`16`, `0x1F`, `0f3F800000`, `1.5`); the sign is a separate `-`.
    Number(String),
    /// A string literal, without the quotes.
    Str(String),
    /// A punctuation character: `, ; { } [ ] ( ) < > + - : @ ! | =`.
    Punct(char),
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '_' | '$' | '%' | '.')
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.')
}

/// Splits PTX text into tokens, dropping comments.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, SimError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::with_capacity(text.len() / 4);
    let mut i = 0;
    let mut line = 1;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            let start = line;
            i += 2;
            loop {
                if i + 1 >= chars.len() {
                    return Err(SimError::Parse { line: start, message: "unterminated /* comment".into() });
                }
                if chars[i] == '*' && chars[i + 1] == '/' {
                    i += 2;
                    break;
                }
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\n' {
                    return Err(SimError::Parse { line, message: "unterminated string literal".into() });
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err(SimError::Parse { line, message: "unterminated string literal".into() });
            }
            tokens.push(Token { tok: Tok::Str(chars[start..i].iter().collect()), line });
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                // An exponent sign: 1e-5.
                i += 1;
                if i < chars.len()
                    && matches!(chars[i], '+' | '-')
                    && matches!(chars[i - 1], 'e' | 'E')
                    && !chars[start..i].iter().any(|c| matches!(c, 'x' | 'X' | 'f' | 'F' | 'd' | 'D'))
                {
                    i += 1;
                }
            }
            tokens.push(Token { tok: Tok::Number(chars[start..i].iter().collect()), line });
        } else if is_word_start(c) {
            let start = i;
            i += 1;
            loop {
                if i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                } else if i + 1 < chars.len() && chars[i] == ':' && chars[i + 1] == ':' {
                    i += 2;
                } else {
                    break;
                }
            }
            tokens.push(Token { tok: Tok::Word(chars[start..i].iter().collect()), line });
        } else if ",;{}[]()<>+-:@!|=".contains(c) {
            tokens.push(Token { tok: Tok::Punct(c), line });
            i += 1;
        } else {
            return Err(SimError::Parse { line, message: format!("unexpected character `{c}`") });
        }
    }
    Ok(tokens)
}

/// Parses an integer literal: decimal, `0x` hex, `0b` binary, leading-zero octal, optional `U`.
pub(crate) fn parse_int(text: &str) -> Option<u64> {
    let t = text.strip_suffix('U').or_else(|| text.strip_suffix('u')).unwrap_or(text);
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        u64::from_str_radix(b, 2).ok()
    } else if t.len() > 1 && t.starts_with('0') {
        u64::from_str_radix(&t[1..], 8).ok()
    } else {
        t.parse::<u64>().ok()
    }
}

/// A numeric literal, classified.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Literal {
    Int(u64),
    /// `0fXXXXXXXX`: the bits of an f32.
    F32Bits(u32),
    /// `0dXXXXXXXXXXXXXXXX`: the bits of an f64.
    F64Bits(u64),
    /// A decimal floating-point literal (`1.5`, `1e-3`).
    Float(f64),
}

pub(crate) fn parse_literal(text: &str) -> Option<Literal> {
    if let Some(h) = text.strip_prefix("0f").or_else(|| text.strip_prefix("0F")) {
        return (h.len() == 8).then(|| u32::from_str_radix(h, 16).ok().map(Literal::F32Bits)).flatten();
    }
    if let Some(h) = text.strip_prefix("0d").or_else(|| text.strip_prefix("0D")) {
        return (h.len() == 16).then(|| u64::from_str_radix(h, 16).ok().map(Literal::F64Bits)).flatten();
    }
    if let Some(v) = parse_int(text) {
        return Some(Literal::Int(v));
    }
    if text.contains(['.', 'e', 'E']) && !text.starts_with("0x") {
        return text.parse::<f64>().ok().map(Literal::Float);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_numbers_and_punctuation() {
        let toks = tokenize("@!%p1 ld.shared::cta.v2.u32 {%r1, %r2}, [%rd3+-16]; // c\n$L__BB0_2:").unwrap();
        let kinds: Vec<Tok> = toks.into_iter().map(|t| t.tok).collect();
        assert_eq!(
            kinds,
            vec![
                Tok::Punct('@'),
                Tok::Punct('!'),
                Tok::Word("%p1".into()),
                Tok::Word("ld.shared::cta.v2.u32".into()),
                Tok::Punct('{'),
                Tok::Word("%r1".into()),
                Tok::Punct(','),
                Tok::Word("%r2".into()),
                Tok::Punct('}'),
                Tok::Punct(','),
                Tok::Punct('['),
                Tok::Word("%rd3".into()),
                Tok::Punct('+'),
                Tok::Punct('-'),
                Tok::Number("16".into()),
                Tok::Punct(']'),
                Tok::Punct(';'),
                Tok::Word("$L__BB0_2".into()),
                Tok::Punct(':'),
            ]
        );
    }

    #[test]
    fn literals() {
        assert_eq!(parse_literal("0f3F800000"), Some(Literal::F32Bits(0x3F80_0000)));
        assert_eq!(parse_literal("0d3FF0000000000000"), Some(Literal::F64Bits(0x3FF0_0000_0000_0000)));
        assert_eq!(parse_literal("0x1F"), Some(Literal::Int(31)));
        assert_eq!(parse_literal("017"), Some(Literal::Int(15)));
        assert_eq!(parse_literal("42U"), Some(Literal::Int(42)));
        assert_eq!(parse_literal("1.5"), Some(Literal::Float(1.5)));
        assert_eq!(parse_literal("1e-3"), Some(Literal::Float(1e-3)));
        assert_eq!(parse_literal("0fXYZ"), None);
    }

    #[test]
    fn comments_and_lines() {
        let toks = tokenize("a /* x\ny */ b\n// z\nc").unwrap();
        let lines: Vec<usize> = toks.iter().map(|t| t.line).collect();
        assert_eq!(lines, vec![1, 2, 4]);
        assert!(tokenize("/* open").is_err());
        assert!(tokenize("a # b").is_err());
    }
}
