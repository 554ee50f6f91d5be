//! IR -> the Rust function that replaces the user's: same attributes, visibility and signature, a
//! body that computes exactly what the CUDA function computes (f32 locals, f16 / bf16 results
//! rounded through `::tessera::half` after each operation).

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use super::ir::{BinOp, Block, CmpOp, Expr, ExprKind, Function, MathFn, Scalar};

pub fn emit(item: &syn::ItemFn, f: &Function) -> TokenStream {
    let mut e = Emitter { stmts: Vec::new(), next: 0, locals: std::collections::HashMap::new(), params: Vec::new() };
    for (i, (arg, ty)) in item.sig.inputs.iter().zip(&f.params).enumerate() {
        let syn::FnArg::Typed(pt) = arg else { unreachable!("receivers are rejected by the parser") };
        let syn::Pat::Ident(pi) = &*pt.pat else { unreachable!("patterns are rejected by the parser") };
        let name = &pi.ident;
        let p = format_ident!("_tessera_p{}", i);
        let value = match ty {
            Scalar::F32 => quote!(#name),
            _ => quote!(#name.to_f32()),
        };
        e.stmts.push(quote!(let #p: f32 = #value;));
        e.params.push(quote!(#p));
    }
    let result = e.block(&f.body);
    let result = match (f.ret, &item.sig.output) {
        (Scalar::F32, _) => result,
        (_, syn::ReturnType::Type(_, ty)) => quote!(<#ty>::from_f32(#result)),
        (_, syn::ReturnType::Default) => unreachable!("a missing return type is rejected by the parser"),
    };
    let attrs = &item.attrs;
    let vis = &item.vis;
    let sig = &item.sig;
    let stmts = &e.stmts;
    quote! {
        #(#attrs)*
        #[allow(clippy::all, clippy::pedantic, clippy::nursery)]
        #vis #sig {
            #(#stmts)*
            #result
        }
    }
}

struct Emitter {
    stmts: Vec<TokenStream>,
    next: usize,
    locals: std::collections::HashMap<usize, TokenStream>,
    params: Vec<TokenStream>,
}

impl Emitter {
    fn block(&mut self, b: &Block) -> TokenStream {
        for l in &b.lets {
            let atom = self.atom(&l.value);
            self.locals.insert(l.local, atom);
        }
        self.atom(&b.value)
    }

    /// `let v: T = value;` -> `v`.
    fn bind(&mut self, ty: Scalar, value: TokenStream) -> TokenStream {
        let v = format_ident!("_tessera_v{}", self.next);
        self.next += 1;
        let ty = if ty == Scalar::Bool { quote!(bool) } else { quote!(f32) };
        self.stmts.push(quote!(let #v: #ty = #value;));
        quote!(#v)
    }

    /// Emits the block as a `{ ... }` expression of its own.
    fn sub_block(&mut self, b: &Block) -> TokenStream {
        let outer = std::mem::take(&mut self.stmts);
        let value = self.block(b);
        let stmts = std::mem::replace(&mut self.stmts, outer);
        quote!({ #(#stmts)* #value })
    }

    fn atom(&mut self, e: &Expr) -> TokenStream {
        let ty = e.ty;
        match &e.kind {
            ExprKind::Param(i) => self.params[*i].clone(),
            ExprKind::Local(id) => self.locals[id].clone(),
            // A negative constant gets a name, so that no operator is followed by `-literal`.
            ExprKind::Const(v) if v.is_sign_negative() => self.bind(ty, float_literal(*v)),
            ExprKind::Const(v) => float_literal(*v),
            ExprKind::BoolConst(b) => quote!(#b),
            ExprKind::Neg(a) => {
                let a = self.atom(a);
                self.bind(ty, quote!(-#a))
            }
            ExprKind::Binary(op, a, b) => {
                let (a, b) = (self.atom(a), self.atom(b));
                let value = match op {
                    BinOp::Add => round(ty, quote!(#a + #b)),
                    BinOp::Sub => round(ty, quote!(#a - #b)),
                    BinOp::Mul => round(ty, quote!(#a * #b)),
                    BinOp::Div => round(ty, quote!(#a / #b)),
                    // IEEE 754-2019 minimumNumber / maximumNumber, as the CUDA text spells them out
                    // (f32::min / f32::max leave the sign of a zero result unspecified).
                    BinOp::Min => quote! {
                        if f32::is_nan(#a) { #b } else if f32::is_nan(#b) { #a }
                        else if #a < #b { #a } else if #b < #a { #b }
                        else if #a == 0.0 { -(-#a - #b) } else { #a }
                    },
                    BinOp::Max => quote! {
                        if f32::is_nan(#a) { #b } else if f32::is_nan(#b) { #a }
                        else if #a > #b { #a } else if #b > #a { #b }
                        else if #a == 0.0 { #a + #b } else { #a }
                    },
                };
                self.bind(ty, value)
            }
            ExprKind::Math(m, a) => {
                let a = self.atom(a);
                let value = match m {
                    MathFn::Abs => quote!(f32::abs(#a)),
                    MathFn::Exp => round(ty, quote!(f32::exp(#a))),
                    MathFn::Tanh => round(ty, quote!(f32::tanh(#a))),
                    MathFn::Sqrt => round(ty, quote!(f32::sqrt(#a))),
                };
                self.bind(ty, value)
            }
            ExprKind::Cmp(op, a, b) => {
                let (a, b) = (self.atom(a), self.atom(b));
                let value = match op {
                    CmpOp::Lt => quote!(#a < #b),
                    CmpOp::Le => quote!(#a <= #b),
                    CmpOp::Gt => quote!(#a > #b),
                    CmpOp::Ge => quote!(#a >= #b),
                    CmpOp::Eq => quote!(#a == #b),
                    CmpOp::Ne => quote!(#a != #b),
                };
                self.bind(Scalar::Bool, value)
            }
            ExprKind::And(a, b) => {
                let (a, b) = (self.atom(a), self.atom(b));
                self.bind(Scalar::Bool, quote!(#a && #b))
            }
            ExprKind::Or(a, b) => {
                let (a, b) = (self.atom(a), self.atom(b));
                self.bind(Scalar::Bool, quote!(#a || #b))
            }
            ExprKind::Not(a) => {
                let a = self.atom(a);
                self.bind(Scalar::Bool, quote!(!#a))
            }
            ExprKind::Cast(a) => {
                let from = a.ty;
                let a = self.atom(a);
                if from == ty || ty == Scalar::F32 {
                    a
                } else {
                    self.bind(ty, round(ty, a))
                }
            }
            ExprKind::If(c, t, f) => {
                let c = self.atom(c);
                let (t, f) = (self.sub_block(t), self.sub_block(f));
                self.bind(ty, quote!(if #c #t else #f))
            }
            ExprKind::Block(b) => self.block(b),
        }
    }
}

/// Rounds an f32 value to `ty` and widens it back.
fn round(ty: Scalar, value: TokenStream) -> TokenStream {
    match ty {
        Scalar::F16 => quote!(::tessera::half::f16::from_f32(#value).to_f32()),
        Scalar::Bf16 => quote!(::tessera::half::bf16::from_f32(#value).to_f32()),
        Scalar::F32 | Scalar::Bool => value,
    }
}

/// An `f32` literal with exactly the value `v` (finite; shortest round-trip digits).
fn float_literal(v: f32) -> TokenStream {
    let lit = Literal::f32_suffixed(v.abs());
    if v.is_sign_negative() {
        quote!(-#lit)
    } else {
        quote!(#lit)
    }
}
