//! `#[derive(TuneShape)]`: a family's tuning shape, one named `usize` field per dimension, each
//! declaring how it is bucketed (`#[bucket(pow2)]` or `#[bucket(exact)]`). The key's dimensions
//! are the fields in declaration order, so reordering fields changes the database key (the derive
//! documents the order in one place: the struct).

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Error, Fields, Path, Result};

use crate::attrs::{crate_path, string_value};

fn default_runtime_path() -> Path {
    syn::parse_quote!(::tessera_runtime)
}

/// `#[bucket(pow2)]` / `#[bucket(exact)]` on one field.
fn bucket_of(field: &syn::Field) -> Result<proc_macro2::Ident> {
    let name = field.ident.as_ref().expect("named field");
    let mut found = None;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("bucket")) {
        if found.is_some() {
            return Err(Error::new_spanned(attr, format!("`{name}` declares its bucket twice")));
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("pow2") {
                found = Some(quote::format_ident!("Pow2"));
            } else if meta.path.is_ident("exact") {
                found = Some(quote::format_ident!("Exact"));
            } else {
                return Err(meta.error("unknown bucket: expected `pow2` or `exact`"));
            }
            Ok(())
        })?;
    }
    found.ok_or_else(|| {
        Error::new_spanned(field, format!("declare how `{name}` is bucketed: `#[bucket(pow2)]` or `#[bucket(exact)]`"))
    })
}

pub fn expand(input: &DeriveInput) -> Result<TokenStream> {
    let mut krate = default_runtime_path();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("tune_shape")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                krate = crate_path(&string_value(&meta)?)?;
                Ok(())
            } else {
                Err(meta.error("unknown option: expected `crate = \"path\"`"))
            }
        })?;
    }
    let Data::Struct(data) = &input.data else {
        return Err(Error::new_spanned(&input.ident, "TuneShape is derived for structs with named `usize` fields"));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(Error::new_spanned(&input.ident, "TuneShape is derived for structs with named `usize` fields"));
    };
    if fields.named.is_empty() {
        return Err(Error::new_spanned(&input.ident, "a tuning shape needs at least one dimension"));
    }
    if !input.generics.params.is_empty() {
        return Err(Error::new_spanned(&input.generics, "TuneShape does not support generic shapes"));
    }
    let mut names = Vec::new();
    let mut buckets = Vec::new();
    for f in &fields.named {
        let ty = &f.ty;
        if quote!(#ty).to_string() != "usize" {
            return Err(Error::new_spanned(ty, "a tuning shape's dimensions are `usize`"));
        }
        buckets.push(bucket_of(f)?);
        names.push(f.ident.clone().expect("named field"));
    }
    let ident = &input.ident;
    let dims = names.len();
    let field_names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    Ok(quote! {
        impl #krate::tuning::TuneShape for #ident {
            fn dimension_names(&self) -> &'static [&'static str] {
                &[#(#field_names),*]
            }

            fn bucketed(&self) -> Self {
                Self { #(#names: #krate::tuning::Bucket::#buckets.dim(self.#names)),* }
            }

            fn key_dims(&self) -> ::std::vec::Vec<u64> {
                let dims: [u64; #dims] = [#(#krate::tuning::Bucket::#buckets.key(self.#names)),*];
                dims.to_vec()
            }
        }
    })
}
