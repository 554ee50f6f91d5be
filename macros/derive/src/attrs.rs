//! What both derives read from the item: `#[repr(...)]`, doc comments, names that must be valid
//! CUDA C++ identifiers, and the `crate = "path"` option.

use proc_macro2::Span;
use syn::{Attribute, Error, LitStr, Path, Result};

/// The parts of `#[repr(...)]` (possibly split over several attributes) the derives care about.
#[derive(Default)]
pub struct Repr {
    pub c: bool,
    /// `i32`, `u32`, `u8`, ... with its span.
    pub int: Option<(String, Span)>,
    pub align: Option<u64>,
    pub packed: Option<Span>,
    pub transparent: Option<Span>,
}

const INT_REPRS: &[&str] = &["i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64", "i128", "u128", "isize", "usize"];

impl Repr {
    pub fn parse(attrs: &[Attribute]) -> Result<Repr> {
        let mut repr = Repr::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("repr")) {
            attr.parse_nested_meta(|meta| {
                let span = meta.path.get_ident().map_or_else(Span::call_site, |i| i.span());
                if meta.path.is_ident("C") {
                    repr.c = true;
                } else if meta.path.is_ident("transparent") {
                    repr.transparent = Some(span);
                } else if meta.path.is_ident("packed") {
                    repr.packed = Some(span);
                    if meta.input.peek(syn::token::Paren) {
                        let content;
                        syn::parenthesized!(content in meta.input);
                        let _: syn::LitInt = content.parse()?;
                    }
                } else if meta.path.is_ident("align") {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let n: syn::LitInt = content.parse()?;
                    repr.align = Some(n.base10_parse()?);
                } else if let Some(int) = INT_REPRS.iter().find(|i| meta.path.is_ident(i)) {
                    repr.int = Some((int.to_string(), span));
                } else {
                    return Err(meta.error("unrecognised repr"));
                }
                Ok(())
            })?;
        }
        Ok(repr)
    }
}

/// The text of the `///` comments (`#[doc = "..."]` attributes), one line per attribute line,
/// with the single space after `///` removed and leading/trailing blank lines dropped.
pub fn doc_text(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        if let syn::Meta::NameValue(nv) = &attr.meta {
            if let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = &nv.value {
                for line in s.value().split('\n') {
                    lines.push(line.strip_prefix(' ').unwrap_or(line).trim_end().to_string());
                }
            }
        }
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let first = lines.iter().position(|l| !l.is_empty()).unwrap_or(lines.len());
    lines[first..].join("\n")
}

/// C++ keywords (and CUDA's) that are valid Rust identifiers: a field or constant with one of these
/// names would not compile on the device side.
const CPP_KEYWORDS: &[&str] = &[
    "alignas",
    "alignof",
    "and",
    "and_eq",
    "asm",
    "auto",
    "bitand",
    "bitor",
    "bool",
    "case",
    "catch",
    "char",
    "char8_t",
    "char16_t",
    "char32_t",
    "class",
    "co_await",
    "co_return",
    "co_yield",
    "compl",
    "concept",
    "const_cast",
    "consteval",
    "constexpr",
    "constinit",
    "decltype",
    "default",
    "delete",
    "double",
    "dynamic_cast",
    "explicit",
    "export",
    "float",
    "friend",
    "goto",
    "inline",
    "int",
    "long",
    "mutable",
    "namespace",
    "new",
    "noexcept",
    "not",
    "not_eq",
    "nullptr",
    "operator",
    "or",
    "or_eq",
    "private",
    "protected",
    "public",
    "register",
    "reinterpret_cast",
    "requires",
    "short",
    "signed",
    "sizeof",
    "static_assert",
    "static_cast",
    "switch",
    "template",
    "this",
    "thread_local",
    "throw",
    "try",
    "typedef",
    "typeid",
    "typename",
    "union",
    "unsigned",
    "using",
    "virtual",
    "void",
    "volatile",
    "wchar_t",
    "xor",
    "xor_eq",
    "NULL",
];

/// Rejects `name` unless it is an identifier CUDA C++ accepts and does not reserve.
pub fn check_cuda_ident(name: &str, span: Span, what: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(Error::new(span, format!("{what} `{name}` is not a C++ identifier ([A-Za-z_][A-Za-z0-9_]*)")));
    }
    if CPP_KEYWORDS.contains(&name) {
        return Err(Error::new(
            span,
            format!("{what} `{name}` is a C++ keyword; the CUDA declaration could not use it"),
        ));
    }
    let bytes = name.as_bytes();
    if name.contains("__") || (bytes[0] == b'_' && bytes.get(1).is_some_and(u8::is_ascii_uppercase)) {
        return Err(Error::new(
            span,
            format!("{what} `{name}` is reserved in C++ (it contains `__` or starts with `_` and a capital letter)"),
        ));
    }
    Ok(())
}

/// A `key = "string"` option value.
pub fn string_value(meta: &syn::meta::ParseNestedMeta<'_>) -> Result<LitStr> {
    meta.value()?.parse::<LitStr>()
}

/// `crate = "path"`: where the expansion finds tessera-codegen.
pub fn crate_path(lit: &LitStr) -> Result<Path> {
    lit.parse::<Path>().map_err(|_| Error::new(lit.span(), format!("`crate = \"{}\"` is not a path", lit.value())))
}

pub fn default_crate_path() -> Path {
    syn::parse_quote!(::tessera_codegen)
}
