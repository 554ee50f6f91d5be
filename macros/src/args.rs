//! Attribute arguments: `key = value` pairs, bare flags and one nested `tile(...)`, each remembered
//! with its span so a spec error can point at the argument that caused it.

use std::collections::BTreeMap;

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::{Expr, ExprLit, Lit, LitBool, Path};

/// One argument's value.
#[derive(Clone, Debug)]
pub enum Value {
    Int(u64),
    Bool(bool),
    Ident(String),
    /// A path to an item (`epilogue = my_fn`).
    Path(Path),
}

/// Parsed arguments: `"head_dim"`, `"tile.block_n"`, ... -> (value, span).
#[derive(Default)]
pub struct Args {
    pub values: BTreeMap<String, (Value, Span)>,
    /// The span of the whole `tile(...)` group, if present.
    pub tile_span: Option<Span>,
}

impl Args {
    pub fn parse(&mut self, meta: ParseNestedMeta<'_>, prefix: &str) -> syn::Result<()> {
        let key = meta.path.get_ident().map(|i| i.to_string()).ok_or_else(|| meta.error("expected a plain name"))?;
        if prefix.is_empty() && key == "tile" && meta.input.peek(syn::token::Paren) {
            self.tile_span = Some(meta.path.get_ident().map_or_else(Span::call_site, |i| i.span()));
            return meta.parse_nested_meta(|inner| self.parse(inner, "tile."));
        }
        let full = format!("{prefix}{key}");
        if self.values.contains_key(&full) {
            return Err(meta.error(format!("`{full}` is given twice")));
        }
        let span = meta.path.get_ident().map_or_else(Span::call_site, |i| i.span());
        let value = if meta.input.peek(syn::Token![=]) {
            let expr: Expr = meta.value()?.parse()?;
            let span = syn::spanned::Spanned::span(&expr);
            let v = match expr {
                Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => Value::Int(i.base10_parse()?),
                Expr::Lit(ExprLit { lit: Lit::Bool(LitBool { value, .. }), .. }) => Value::Bool(value),
                Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Value::Ident(s.value()),
                Expr::Path(p) if p.path.get_ident().is_some() && !key.ends_with("epilogue") => {
                    Value::Ident(p.path.get_ident().map(|i| i.to_string()).unwrap_or_default())
                }
                Expr::Path(p) => Value::Path(p.path),
                other => return Err(syn::Error::new_spanned(other, format!("unsupported value for `{full}`"))),
            };
            self.values.insert(full, (v, span));
            return Ok(());
        } else {
            Value::Bool(true)
        };
        self.values.insert(full, (value, span));
        Ok(())
    }

    /// Rejects any argument not in `known` (with the list of known ones).
    pub fn only(&self, macro_name: &str, known: &[&str]) -> syn::Result<()> {
        for (key, (_, span)) in &self.values {
            if !known.contains(&key.as_str()) {
                return Err(syn::Error::new(
                    *span,
                    format!("unknown argument `{key}` for #[tessera::{macro_name}]; expected one of: {}", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    pub fn span(&self, key: &str) -> Option<Span> {
        self.values.get(key).map(|v| v.1)
    }

    pub fn int(&self, key: &str) -> syn::Result<Option<u32>> {
        match self.values.get(key) {
            None => Ok(None),
            Some((Value::Int(v), span)) => {
                u32::try_from(*v).map(Some).map_err(|_| syn::Error::new(*span, format!("`{key}` = {v} is too large")))
            }
            Some((_, span)) => Err(syn::Error::new(*span, format!("`{key}` takes an integer"))),
        }
    }

    pub fn required_int(&self, key: &str, call: Span) -> syn::Result<u32> {
        self.int(key)?.ok_or_else(|| syn::Error::new(call, format!("missing `{key} = <integer>`")))
    }

    pub fn flag(&self, key: &str) -> syn::Result<bool> {
        match self.values.get(key) {
            None => Ok(false),
            Some((Value::Bool(b), _)) => Ok(*b),
            Some((_, span)) => Err(syn::Error::new(*span, format!("`{key}` is a flag: write `{key}` or `{key} = true`"))),
        }
    }

    /// An identifier value mapped through `choices` (`("bf16", value)`), naming the allowed ones.
    pub fn choice<T: Copy>(&self, key: &str, choices: &[(&str, T)]) -> syn::Result<Option<T>> {
        match self.values.get(key) {
            None => Ok(None),
            Some((Value::Ident(s), span)) => choices.iter().find(|(n, _)| n == s).map(|(_, v)| Some(*v)).ok_or_else(|| {
                let allowed: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                syn::Error::new(*span, format!("unsupported {key} `{s}`: allowed values are {}", allowed.join(", ")))
            }),
            Some((_, span)) => {
                let allowed: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                Err(syn::Error::new(*span, format!("`{key}` takes one of: {}", allowed.join(", "))))
            }
        }
    }

    pub fn path(&self, key: &str) -> syn::Result<Option<(Path, Span)>> {
        match self.values.get(key) {
            None => Ok(None),
            Some((Value::Path(p), span)) => Ok(Some((p.clone(), *span))),
            Some((Value::Ident(s), span)) => Ok(Some((syn::parse_str(s)?, *span))),
            Some((_, span)) => Err(syn::Error::new(*span, format!("`{key}` takes the path of an #[tessera::elementwise] function"))),
        }
    }
}
