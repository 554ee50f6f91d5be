//! `syn::ItemFn` -> typed IR, with a spanned error for everything outside the supported subset.
//!
//! Typing follows Rust's rules for the subset, with one addition for literals: an unsuffixed literal
//! (`0.5`, `2`) has no type of its own and takes the type of the other operand (or the declared
//! type of the `let` / the function result it initialises); a literal expression with nothing to
//! take a type from (`let a = 1.0;`, `(0.5 + 0.25) as bf16`) is `f32`. `1.0f32` is always `f32`.
//!
//! Errors are collected: every unsupported construct and type mismatch of a function is reported
//! in one compile, each at its own span.

use std::collections::HashSet;

use quote::ToTokens;
use syn::{BinOp as SynBinOp, Expr as SynExpr, FnArg, Lit, Pat, ReturnType, Stmt, Type, UnOp};

use super::ir::{round_to, BinOp, Block, CmpOp, Expr, ExprKind, Function, Let, MathFn, Scalar};

/// What the subset offers, appended to "not supported" errors.
const SUBSET: &str = "an elementwise function supports `let` bindings, float literals, parameters and \
locals, `+ - * /`, unary `-`, comparisons, `&& || !`, `if .. else ..`, blocks, `as f32|f16|bf16` \
and the methods `min`, `max`, `abs`, `exp`, `tanh`, `sqrt`";

const METHODS: &str = "`min`, `max`, `abs`, `exp`, `tanh`, `sqrt`";

/// The checked signature and the IR of a function.
pub struct Parsed {
    pub params: Vec<(syn::Ident, Scalar)>,
    pub ret: Scalar,
    pub function: Function,
}

/// Translates `item` to IR, or returns every error found (combined).
pub fn parse(item: &syn::ItemFn) -> syn::Result<Parsed> {
    let mut cx = Lowerer { errors: Vec::new(), scope: Vec::new(), next_local: 0, lenient_names: false };
    let sig = &item.sig;
    if let Some(c) = &sig.constness {
        cx.error(c, "`const fn` is not supported: an elementwise function is a plain `fn`");
    }
    if let Some(a) = &sig.asyncness {
        cx.error(a, "`async fn` is not supported: an elementwise function is a plain `fn`");
    }
    if let Some(u) = &sig.unsafety {
        cx.error(u, "`unsafe fn` is not supported: an elementwise function is a plain `fn`");
    }
    if let Some(abi) = &sig.abi {
        cx.error(abi, "an `extern` ABI is not supported: an elementwise function is a plain `fn`");
    }
    if !sig.generics.params.is_empty() {
        cx.error(&sig.generics, "generic parameters are not supported: parameters are f32, f16 or bf16");
    }
    if let Some(w) = &sig.generics.where_clause {
        cx.error(w, "`where` clauses are not supported: an elementwise function is not generic");
    }
    if let Some(v) = &sig.variadic {
        cx.error(v, "variadic parameters are not supported");
    }
    if sig.ident.to_string().trim_start_matches("r#").bytes().any(|b| !b.is_ascii()) {
        cx.error(&sig.ident, "the name of an elementwise function must be ASCII (it names a CUDA function)");
    }

    let mut params = Vec::new();
    let mut seen = HashSet::new();
    for (index, arg) in sig.inputs.iter().enumerate() {
        let pt = match arg {
            FnArg::Receiver(r) => {
                cx.error(r, "`self` is not supported: an elementwise function is a free function over scalars");
                continue;
            }
            FnArg::Typed(pt) => pt,
        };
        let ty = cx.float_type(&pt.ty, "parameter");
        let (ident, plain) = match &*pt.pat {
            Pat::Ident(pi) if pi.by_ref.is_none() && pi.mutability.is_none() && pi.subpat.is_none() => {
                (Some(pi.ident.clone()), true)
            }
            Pat::Ident(pi) if pi.mutability.is_some() && pi.by_ref.is_none() && pi.subpat.is_none() => {
                cx.error(pi, "`mut` parameters are not supported: values in an elementwise function are immutable");
                (Some(pi.ident.clone()), false)
            }
            other => {
                cx.error(other, "only plain parameter names are supported (no patterns)");
                cx.lenient_names = true;
                (None, false)
            }
        };
        let Some(ident) = ident else { continue };
        if !seen.insert(ident.to_string()) {
            cx.error(&ident, "a parameter name is used twice");
        }
        match ty {
            Some(ty) if plain => {
                cx.scope.push((ident.to_string(), Binding::Value(Expr::new(ty, ExprKind::Param(index)))));
                params.push((ident, ty));
            }
            _ => cx.scope.push((ident.to_string(), Binding::Poisoned)),
        }
    }
    if sig.inputs.is_empty() {
        cx.error(&sig.ident, "an elementwise function needs at least one parameter (f32, f16 or bf16)");
    }
    let ret = match &sig.output {
        ReturnType::Default => {
            cx.error(
                &sig.ident,
                "an elementwise function must declare its return type: `-> f32`, `-> f16` or `-> bf16`",
            );
            None
        }
        ReturnType::Type(_, ty) => cx.float_type(ty, "return"),
    };

    let body = cx.fn_body(&item.block, ret);
    let errors = std::mem::take(&mut cx.errors);
    let mut combined: Option<syn::Error> = None;
    for e in errors {
        match &mut combined {
            Some(c) => c.combine(e),
            None => combined = Some(e),
        }
    }
    match (combined, body, ret) {
        (None, Ok(body), Some(ret)) if params.len() == sig.inputs.len() => {
            let function = Function { params: params.iter().map(|p| p.1).collect(), ret, body };
            Ok(Parsed { params, ret, function })
        }
        (Some(e), _, _) => Err(e),
        _ => Err(syn::Error::new_spanned(sig, "unsupported elementwise function")),
    }
}

/// Marks a failure whose error has already been recorded.
struct Failed;
type LResult<T> = Result<T, Failed>;

enum Binding {
    /// An atom (`Param` or `Local`).
    Value(Expr),
    /// A name whose definition failed: uses are not reported again.
    Poisoned,
}

/// A lowered expression. `flexible` when its type came from context (an unsuffixed literal, or an
/// expression built only from such), so it may be lowered again at another type.
struct Typed {
    expr: Expr,
    flexible: bool,
}

struct Lowerer {
    errors: Vec<syn::Error>,
    /// Bindings in scope, innermost last.
    scope: Vec<(String, Binding)>,
    next_local: usize,
    /// Set when a parameter pattern was rejected: unknown names are then not reported.
    lenient_names: bool,
}

impl Lowerer {
    fn error(&mut self, node: impl ToTokens, msg: impl std::fmt::Display) {
        self.errors.push(syn::Error::new_spanned(node, msg));
    }

    fn fail<T>(&mut self, node: impl ToTokens, msg: impl std::fmt::Display) -> LResult<T> {
        self.error(node, msg);
        Err(Failed)
    }

    /// `f32`, `f16`, `bf16` (any path ending in one of them, e.g. `half::bf16`); `what` names the
    /// position for the error.
    fn float_type(&mut self, ty: &Type, what: &str) -> Option<Scalar> {
        match scalar_type(ty) {
            Some(s) if s.is_float() => Some(s),
            _ => {
                self.error(
                    ty,
                    format!(
                        "{what} type `{}` is not supported: elementwise functions work on f32, f16 and bf16 \
                         (also written `half::f16` / `half::bf16`)",
                        tokens_text(ty)
                    ),
                );
                None
            }
        }
    }

    fn fn_body(&mut self, block: &syn::Block, ret: Option<Scalar>) -> LResult<Block> {
        let (BlockTyped(body, _), tail) = self.block(&block.stmts, block, ret, true)?;
        if let Some(ret) = ret {
            if body.value.ty != ret {
                return self.fail(tail, mismatch(ret, body.value.ty, "the function returns"));
            }
        }
        Ok(body)
    }

    /// Lowers a block's statements in a new scope; returns the block (and whether its value is
    /// flexible) and its value expression (for error spans). `fn_body`: the function's own block,
    /// which may end in `return value;`.
    fn block<'a>(
        &mut self,
        stmts: &'a [Stmt],
        whole: &dyn ToTokens,
        hint: Option<Scalar>,
        fn_body: bool,
    ) -> LResult<(BlockTyped, &'a SynExpr)> {
        let mark = self.scope.len();
        let result = self.block_inner(stmts, whole, hint, fn_body);
        self.scope.truncate(mark);
        result
    }

    fn block_inner<'a>(
        &mut self,
        stmts: &'a [Stmt],
        whole: &dyn ToTokens,
        hint: Option<Scalar>,
        fn_body: bool,
    ) -> LResult<(BlockTyped, &'a SynExpr)> {
        let before = self.errors.len();
        let mut lets = Vec::new();
        let mut tail: Option<&SynExpr> = None;
        for (i, stmt) in stmts.iter().enumerate() {
            let last = i + 1 == stmts.len();
            match stmt {
                Stmt::Local(local) => {
                    if let Ok(Some(l)) = self.local(local) {
                        lets.push(l);
                    }
                }
                Stmt::Expr(SynExpr::Return(r), _) if last && fn_body => match &r.expr {
                    Some(e) => tail = Some(e),
                    None => self.error(r, "`return` needs a value: the function's result"),
                },
                Stmt::Expr(SynExpr::Return(r), _) => {
                    self.error(
                        r,
                        "early `return` is not supported: end the function with its result expression \
                         (use `if .. else ..` to choose it)",
                    );
                }
                Stmt::Expr(e, None) if last => tail = Some(e),
                Stmt::Expr(e, _) => {
                    // Lower it anyway so that an unsupported construct is named; a supported one is
                    // still a statement without effect.
                    if self.expr(e, None).is_ok() {
                        self.error(
                            e,
                            "a statement without effect is not supported: a block is `let` bindings \
                             followed by its value",
                        );
                    }
                }
                Stmt::Item(item) => self.error(
                    item,
                    "items (nested `fn`, `use`, `const`, ...) are not supported inside an elementwise function",
                ),
                Stmt::Macro(m) => self.error(
                    m,
                    format!(
                        "macro invocations (`{}!`) are not supported in an elementwise function; {SUBSET}",
                        tokens_text(&m.mac.path)
                    ),
                ),
            }
        }
        let Some(tail) = tail else {
            if self.errors.len() == before {
                self.error(whole, "this block has no value: end it with an expression (without `;`)");
            }
            return Err(Failed);
        };
        let value = self.expr(tail, hint);
        if self.errors.len() > before {
            return Err(Failed);
        }
        let value = value?;
        Ok((BlockTyped(Block { lets, value: value.expr }, value.flexible), tail))
    }

    /// `let name[: T] = expr;` -> the binding (none for `let _ = ..`).
    fn local(&mut self, local: &syn::Local) -> LResult<Option<Let>> {
        let (pat, annotated) = match &local.pat {
            Pat::Type(pt) => (&*pt.pat, Some(&*pt.ty)),
            p => (p, None),
        };
        let (name, mut ok) = match pat {
            Pat::Ident(pi) if pi.by_ref.is_none() && pi.mutability.is_none() && pi.subpat.is_none() => {
                (Some(pi.ident.to_string()), true)
            }
            Pat::Ident(pi) => {
                let msg = if pi.mutability.is_some() {
                    "`let mut` is not supported: values are immutable (shadow with a new `let`)"
                } else {
                    "only `let name = ..;` and `let name: T = ..;` are supported (no patterns)"
                };
                self.error(pi, msg);
                (Some(pi.ident.to_string()), false)
            }
            Pat::Wild(_) => (None, true),
            other => {
                self.error(other, "only `let name = ..;` and `let name: T = ..;` are supported (no patterns)");
                (None, false)
            }
        };
        let declared = match annotated {
            Some(t) => {
                let s = scalar_type(t);
                if s.is_none() {
                    let msg =
                        format!("type `{}` is not supported: values are f32, f16, bf16 (or bool)", tokens_text(t));
                    self.error(t, msg);
                    ok = false;
                }
                s
            }
            None => None,
        };
        let value = match &local.init {
            None => self.fail(local, "`let` without a value is not supported: write `let name = value;`"),
            Some(init) if init.diverge.is_some() => self.fail(local, "`let .. else` is not supported"),
            Some(init) => self.expr(&init.expr, declared),
        };
        let value = match (value, declared, annotated) {
            (Ok(v), Some(t), Some(ann)) if v.expr.ty != t => {
                self.fail(ann, mismatch(t, v.expr.ty, "the binding is declared"))
            }
            (v, _, _) => v,
        };
        let value = match value {
            Ok(v) if ok => v.expr,
            _ => {
                if let Some(name) = name {
                    self.scope.push((name, Binding::Poisoned));
                }
                return Err(Failed);
            }
        };
        let Some(name) = name else {
            // `let _ = ..`: checked, then dropped.
            return Ok(None);
        };
        let local = self.next_local;
        self.next_local += 1;
        let ty = value.ty;
        self.scope.push((name.clone(), Binding::Value(Expr::new(ty, ExprKind::Local(local)))));
        Ok(Some(Let { local, name, value }))
    }

    /// Lowers `e`; `hint` is the type an untyped literal expression should take.
    fn expr(&mut self, e: &SynExpr, hint: Option<Scalar>) -> LResult<Typed> {
        match e {
            SynExpr::Lit(l) => self.literal(&l.lit, hint, false),
            SynExpr::Paren(p) => self.expr(&p.expr, hint),
            SynExpr::Group(g) => self.expr(&g.expr, hint),
            SynExpr::Path(p) => self.path(p),
            SynExpr::Unary(u) => self.unary(u, hint),
            SynExpr::Binary(b) => self.binary(b, hint),
            SynExpr::If(i) => self.if_expr(i, hint),
            SynExpr::Block(b) => {
                if let Some(label) = &b.label {
                    return self.fail(label, "block labels are not supported");
                }
                let (block, _) = self.block(&b.block.stmts, b, hint, false)?;
                let BlockTyped(block, flexible) = block;
                Ok(Typed { expr: Expr::new(block.value.ty, ExprKind::Block(Box::new(block))), flexible })
            }
            SynExpr::MethodCall(m) => self.method_call(m, hint),
            SynExpr::Call(c) => self.call(c, hint),
            SynExpr::Cast(c) => self.cast(c),
            other => {
                let what = match other {
                    SynExpr::Array(_) => "array expressions",
                    SynExpr::Assign(_) => "assignment (values are immutable; bind a new name with `let`)",
                    SynExpr::Async(_) => "`async` blocks",
                    SynExpr::Await(_) => "`.await`",
                    SynExpr::Break(_) => "`break`",
                    SynExpr::Closure(_) => "closures",
                    SynExpr::Const(_) => "`const` blocks",
                    SynExpr::Continue(_) => "`continue`",
                    SynExpr::Field(_) => "field access",
                    SynExpr::ForLoop(_) => "`for` loops",
                    SynExpr::Index(_) => "indexing",
                    SynExpr::Infer(_) => "`_` expressions",
                    SynExpr::Let(_) => "`let` expressions (`if let`)",
                    SynExpr::Loop(_) => "`loop`",
                    SynExpr::Macro(_) => "macro invocations",
                    SynExpr::Match(_) => "`match` expressions",
                    SynExpr::Range(_) => "ranges",
                    SynExpr::RawAddr(_) => "raw addresses",
                    SynExpr::Reference(_) => "references (`&`)",
                    SynExpr::Repeat(_) => "array repeat expressions",
                    SynExpr::Return(_) => "`return` inside an expression (only a final `return value;`)",
                    SynExpr::Struct(_) => "struct literals",
                    SynExpr::Try(_) => "the `?` operator",
                    SynExpr::TryBlock(_) => "`try` blocks",
                    SynExpr::Tuple(_) => "tuples",
                    SynExpr::Unsafe(_) => "`unsafe` blocks",
                    SynExpr::While(_) => "`while` loops",
                    SynExpr::Yield(_) => "`yield`",
                    _ => "this expression",
                };
                self.fail(other, format!("{what} cannot be used in an elementwise function; {SUBSET}"))
            }
        }
    }

    fn literal(&mut self, lit: &Lit, hint: Option<Scalar>, negate: bool) -> LResult<Typed> {
        let (text, suffix) =
            match lit {
                Lit::Float(f) => (f.base10_digits().to_string(), f.suffix().to_string()),
                Lit::Int(i) => (i.base10_digits().to_string(), i.suffix().to_string()),
                Lit::Bool(b) => {
                    return Ok(Typed { expr: Expr::new(Scalar::Bool, ExprKind::BoolConst(b.value)), flexible: false })
                }
                other => return self.fail(
                    other,
                    "this literal is not supported: elementwise functions use float literals (`1.0`, `2.5e-3`, `2`)",
                ),
            };
        let (ty, flexible) = match suffix.as_str() {
            "" => (hint.filter(|h| h.is_float()).unwrap_or(Scalar::F32), true),
            "f32" => (Scalar::F32, false),
            s => {
                return self
                    .fail(lit, format!("literal suffix `{s}` is not supported: write an unsuffixed literal or `f32`"))
            }
        };
        let Ok(value) = text.parse::<f64>() else {
            return self.fail(lit, "this literal cannot be read as a number");
        };
        let value = if negate { -value } else { value };
        match round_to(value, ty) {
            Some(v) => Ok(Typed { expr: Expr::new(ty, ExprKind::Const(v)), flexible }),
            None => self.fail(lit, format!("literal out of range for {}", ty.name())),
        }
    }

    fn path(&mut self, p: &syn::ExprPath) -> LResult<Typed> {
        let Some(ident) = p.path.get_ident().filter(|_| p.qself.is_none()) else {
            return self.fail(
                p,
                format!(
                    "the path `{}` is not supported: only parameters and `let` bindings can be named",
                    tokens_text(p)
                ),
            );
        };
        let name = ident.to_string();
        match self.scope.iter().rev().find(|(n, _)| *n == name) {
            Some((_, Binding::Value(atom))) => Ok(Typed { expr: atom.clone(), flexible: false }),
            Some((_, Binding::Poisoned)) => Err(Failed),
            // After a rejected parameter pattern its names are unknown: stay quiet.
            None if self.lenient_names => Err(Failed),
            None => self.fail(ident, format!("cannot find value `{name}` in this elementwise function")),
        }
    }

    fn unary(&mut self, u: &syn::ExprUnary, hint: Option<Scalar>) -> LResult<Typed> {
        match u.op {
            UnOp::Neg(_) => {
                if let SynExpr::Lit(l) = strip_parens(&u.expr) {
                    if matches!(l.lit, Lit::Float(_) | Lit::Int(_)) {
                        return self.literal(&l.lit, hint, true);
                    }
                }
                let a = self.expr(&u.expr, hint)?;
                if !a.expr.ty.is_float() {
                    return self.fail(u, "cannot negate a bool: use `!`");
                }
                Ok(Typed { expr: Expr::new(a.expr.ty, ExprKind::Neg(Box::new(a.expr))), flexible: a.flexible })
            }
            UnOp::Not(_) => {
                let a = self.expr(&u.expr, None)?;
                if a.expr.ty != Scalar::Bool {
                    return self.fail(u, format!("`!` needs a bool, found {}", a.expr.ty.name()));
                }
                Ok(Typed { expr: Expr::new(Scalar::Bool, ExprKind::Not(Box::new(a.expr))), flexible: false })
            }
            UnOp::Deref(_) => self.fail(u, format!("dereferencing (`*`) is not supported; {SUBSET}")),
            _ => self.fail(u, format!("this operator is not supported; {SUBSET}")),
        }
    }

    fn binary(&mut self, b: &syn::ExprBinary, hint: Option<Scalar>) -> LResult<Typed> {
        let op = &b.op;
        let arith = match op {
            SynBinOp::Add(_) => Some((BinOp::Add, "add")),
            SynBinOp::Sub(_) => Some((BinOp::Sub, "subtract")),
            SynBinOp::Mul(_) => Some((BinOp::Mul, "multiply")),
            SynBinOp::Div(_) => Some((BinOp::Div, "divide")),
            _ => None,
        };
        if let Some((bop, verb)) = arith {
            return self.float_binary(bop, verb, &b.left, &b.right, b, hint);
        }
        let cmp = match op {
            SynBinOp::Lt(_) => Some(CmpOp::Lt),
            SynBinOp::Le(_) => Some(CmpOp::Le),
            SynBinOp::Gt(_) => Some(CmpOp::Gt),
            SynBinOp::Ge(_) => Some(CmpOp::Ge),
            SynBinOp::Eq(_) => Some(CmpOp::Eq),
            SynBinOp::Ne(_) => Some(CmpOp::Ne),
            _ => None,
        };
        if let Some(cop) = cmp {
            let l = self.expr(&b.left, None);
            let r = self.expr(&b.right, None);
            let (l, r) = (l?, r?);
            let (l, r) = self.unify(l, &b.left, r, &b.right)?;
            let ty = l.ty;
            if ty == Scalar::Bool && !matches!(cop, CmpOp::Eq | CmpOp::Ne) {
                return self.fail(b, "bools can only be compared with `==` and `!=`");
            }
            if ty != r.ty {
                let msg = format!("cannot compare {} with {}: cast one side with `as`", ty.name(), r.ty.name());
                return self.fail(b, msg);
            }
            return Ok(Typed {
                expr: Expr::new(Scalar::Bool, ExprKind::Cmp(cop, Box::new(l), Box::new(r))),
                flexible: false,
            });
        }
        let logic = match op {
            SynBinOp::And(_) => Some(true),
            SynBinOp::Or(_) => Some(false),
            _ => None,
        };
        if let Some(is_and) = logic {
            let l = self.expr(&b.left, None);
            let r = self.expr(&b.right, None);
            let (l, r) = (l?, r?);
            for (side, node) in [(&l, &*b.left), (&r, &*b.right)] {
                if side.expr.ty != Scalar::Bool {
                    let msg = format!("`{}` needs bool operands, found {}", tokens_text(op), side.expr.ty.name());
                    return self.fail(node, msg);
                }
            }
            let (l, r) = (Box::new(l.expr), Box::new(r.expr));
            let kind = if is_and { ExprKind::And(l, r) } else { ExprKind::Or(l, r) };
            return Ok(Typed { expr: Expr::new(Scalar::Bool, kind), flexible: false });
        }
        let text = tokens_text(op);
        let msg = if text.ends_with('=') && !matches!(op, SynBinOp::Eq(_) | SynBinOp::Ne(_)) {
            format!("compound assignment `{text}` is not supported: values are immutable (bind a new name with `let`)")
        } else {
            format!("the operator `{text}` is not supported; {SUBSET}")
        };
        self.fail(op, msg)
    }

    /// A float operation on two operands of the same type (`+ - * / min max`).
    fn float_binary(
        &mut self,
        op: BinOp,
        verb: &str,
        left: &SynExpr,
        right: &SynExpr,
        whole: &dyn ToTokens,
        hint: Option<Scalar>,
    ) -> LResult<Typed> {
        let l = self.expr(left, hint);
        let r = self.expr(right, hint);
        let (l, r) = (l?, r?);
        let flexible = l.flexible && r.flexible;
        let (l, r) = self.unify(l, left, r, right)?;
        if l.ty == Scalar::Bool || r.ty == Scalar::Bool {
            return self.fail(whole, format!("cannot {verb} bools"));
        }
        if l.ty != r.ty {
            let (a, b) = (l.ty.name(), r.ty.name());
            let msg = match op {
                BinOp::Min | BinOp::Max => format!("cannot take the {verb} of {a} and {b}: cast one side with `as`"),
                _ => format!("cannot {verb} {a} and {b}: cast one side with `as`"),
            };
            return self.fail(whole, msg);
        }
        let ty = l.ty;
        Ok(Typed { expr: Expr::new(ty, ExprKind::Binary(op, Box::new(l), Box::new(r))), flexible })
    }

    /// Gives a flexible operand the other operand's type (lowering it again), so that
    /// `x_bf16 * 0.5` multiplies two bf16 values.
    fn unify(&mut self, l: Typed, ls: &SynExpr, r: Typed, rs: &SynExpr) -> LResult<(Expr, Expr)> {
        match (l.flexible, r.flexible) {
            (true, false) if l.expr.ty != r.expr.ty && r.expr.ty.is_float() => {
                let l = self.expr(ls, Some(r.expr.ty))?;
                Ok((l.expr, r.expr))
            }
            (false, true) if l.expr.ty != r.expr.ty && l.expr.ty.is_float() => {
                let r = self.expr(rs, Some(l.expr.ty))?;
                Ok((l.expr, r.expr))
            }
            _ => Ok((l.expr, r.expr)),
        }
    }

    fn if_expr(&mut self, i: &syn::ExprIf, hint: Option<Scalar>) -> LResult<Typed> {
        let cond = match &*i.cond {
            SynExpr::Let(l) => self.fail(l, "`if let` is not supported: conditions are bool expressions"),
            c => self.expr(c, None).and_then(|c| {
                if c.expr.ty == Scalar::Bool {
                    Ok(c.expr)
                } else {
                    let msg = format!("an `if` condition must be a bool, found {}", c.expr.ty.name());
                    self.fail(&i.cond, msg)
                }
            }),
        };
        let Some((_, else_branch)) = &i.else_branch else {
            let _ = self.block(&i.then_branch.stmts, &i.then_branch, hint, false);
            return self.fail(i, "`if` without `else` has no value: add an `else` branch");
        };
        let then_b = self.block(&i.then_branch.stmts, &i.then_branch, hint, false);
        let else_b = self.branch(else_branch, hint);
        let (cond, (BlockTyped(then_block, then_flexible), _), mut else_b) = (cond?, then_b?, else_b?);
        let mut then_b = (then_block, then_flexible);
        let (tt, et) = (then_b.0.value.ty, else_b.0.value.ty);
        if tt != et && tt.is_float() && et.is_float() {
            // Re-lower the flexible branch at the other's type.
            if then_b.1 && !else_b.1 {
                let (BlockTyped(block, flexible), _) =
                    self.block(&i.then_branch.stmts, &i.then_branch, Some(et), false)?;
                then_b = (block, flexible);
            } else if else_b.1 && !then_b.1 {
                else_b = self.branch(else_branch, Some(tt))?;
            }
        }
        let (tt, et) = (then_b.0.value.ty, else_b.0.value.ty);
        if tt != et {
            let msg =
                format!("`if` and `else` have different types ({} and {}): cast one with `as`", tt.name(), et.name());
            return self.fail(i, msg);
        }
        let flexible = then_b.1 && else_b.1;
        Ok(Typed {
            expr: Expr::new(tt, ExprKind::If(Box::new(cond), Box::new(then_b.0), Box::new(else_b.0))),
            flexible,
        })
    }

    /// The expression after `else`: a block or another `if`.
    fn branch(&mut self, e: &SynExpr, hint: Option<Scalar>) -> LResult<(Block, bool)> {
        match e {
            SynExpr::Block(b) if b.label.is_none() => {
                let (BlockTyped(block, flexible), _) = self.block(&b.block.stmts, b, hint, false)?;
                Ok((block, flexible))
            }
            other => {
                let t = self.expr(other, hint)?;
                Ok((Block { lets: Vec::new(), value: t.expr }, t.flexible))
            }
        }
    }

    fn method_call(&mut self, m: &syn::ExprMethodCall, hint: Option<Scalar>) -> LResult<Typed> {
        let name = m.method.to_string();
        if let Some(t) = &m.turbofish {
            return self.fail(t, "turbofish (`::<..>`) is not supported");
        }
        let args: Vec<&SynExpr> = m.args.iter().collect();
        self.method(&name, &m.method, &m.receiver, &args, m, hint, None)
    }

    /// `f32::max(a, b)` style calls of a supported method; any other call is an error.
    fn call(&mut self, c: &syn::ExprCall, hint: Option<Scalar>) -> LResult<Typed> {
        if let SynExpr::Path(p) = &*c.func {
            let segs: Vec<_> = p.path.segments.iter().collect();
            if p.qself.is_none()
                && segs.len() == 2
                && segs.iter().all(|s| s.arguments.is_none())
                && p.path.leading_colon.is_none()
            {
                let ty = match segs[0].ident.to_string().as_str() {
                    "f32" => Some(Scalar::F32),
                    "f16" => Some(Scalar::F16),
                    "bf16" => Some(Scalar::Bf16),
                    _ => None,
                };
                let method = segs[1].ident.to_string();
                if let (Some(ty), true) = (ty, is_method(&method)) {
                    let args: Vec<&SynExpr> = c.args.iter().collect();
                    let Some((recv, rest)) = args.split_first() else {
                        return self.fail(c, format!("`{}` needs arguments", tokens_text(p)));
                    };
                    return self.method(&method, &segs[1].ident, recv, rest, c, hint, Some(ty));
                }
            }
        }
        let callee = tokens_text(&c.func);
        let hint_text = if callee.ends_with("from_f32") || callee.ends_with("from") || callee.ends_with("to_f32") {
            " (convert between float types with `as f32`, `as f16`, `as bf16`)"
        } else {
            ""
        };
        self.fail(
            c,
            format!(
                "function calls (`{callee}(..)`) are not supported in an elementwise function{hint_text}; {SUBSET}"
            ),
        )
    }

    /// A supported method applied to `recv` with `args`; `forced` is the type of a `T::method(..)`
    /// call, which its operands must have.
    #[allow(clippy::too_many_arguments)]
    fn method(
        &mut self,
        name: &str,
        name_node: &syn::Ident,
        recv: &SynExpr,
        args: &[&SynExpr],
        whole: &dyn ToTokens,
        hint: Option<Scalar>,
        forced: Option<Scalar>,
    ) -> LResult<Typed> {
        let hint = forced.or(hint);
        let (binary, unary) = match name {
            "min" => (Some((BinOp::Min, "minimum")), None),
            "max" => (Some((BinOp::Max, "maximum")), None),
            "abs" => (None, Some(MathFn::Abs)),
            "exp" => (None, Some(MathFn::Exp)),
            "tanh" => (None, Some(MathFn::Tanh)),
            "sqrt" => (None, Some(MathFn::Sqrt)),
            "to_f32" | "to_f64" | "from_f32" | "into" => {
                return self.fail(
                    name_node,
                    format!(
                        "method `{name}` is not supported: convert with `as f32`, `as f16` or `as bf16`; \
                         supported methods: {METHODS}"
                    ),
                )
            }
            _ => {
                return self.fail(
                    name_node,
                    format!(
                        "method `{name}` is not supported in an elementwise function; supported methods: {METHODS}"
                    ),
                )
            }
        };
        let want = if binary.is_some() { 1 } else { 0 };
        if args.len() != want {
            return self.fail(whole, format!("`{name}` takes {want} argument(s) besides its receiver"));
        }
        let result = if let Some((op, verb)) = binary {
            self.float_binary(op, verb, recv, args[0], whole, hint)?
        } else {
            let a = self.expr(recv, hint)?;
            if !a.expr.ty.is_float() {
                return self.fail(recv, format!("`{name}` needs a float, found bool"));
            }
            let ty = a.expr.ty;
            Typed {
                expr: Expr::new(ty, ExprKind::Math(unary.unwrap_or(MathFn::Abs), Box::new(a.expr))),
                flexible: a.flexible,
            }
        };
        if let Some(f) = forced {
            if result.expr.ty != f {
                return self.fail(
                    whole,
                    format!("`{}::{name}` needs {} operands, found {}", f.name(), f.name(), result.expr.ty.name()),
                );
            }
            return Ok(Typed { expr: result.expr, flexible: false });
        }
        Ok(result)
    }

    fn cast(&mut self, c: &syn::ExprCast) -> LResult<Typed> {
        let target = match scalar_type(&c.ty) {
            Some(s) if s.is_float() => Some(s),
            _ => {
                self.error(
                    &c.ty,
                    format!("cast to `{}` is not supported: only casts between f32, f16 and bf16", tokens_text(&c.ty)),
                );
                None
            }
        };
        let inner = self.expr(&c.expr, None)?;
        let target = target.ok_or(Failed)?;
        if !inner.expr.ty.is_float() {
            return self.fail(c, format!("cannot cast a bool to {}: use `if .. else ..`", target.name()));
        }
        let expr =
            if inner.expr.ty == target { inner.expr } else { Expr::new(target, ExprKind::Cast(Box::new(inner.expr))) };
        Ok(Typed { expr, flexible: false })
    }
}

/// A block and whether its value is flexible.
struct BlockTyped(Block, bool);

fn is_method(name: &str) -> bool {
    matches!(name, "min" | "max" | "abs" | "exp" | "tanh" | "sqrt")
}

fn strip_parens(e: &SynExpr) -> &SynExpr {
    match e {
        SynExpr::Paren(p) => strip_parens(&p.expr),
        SynExpr::Group(g) => strip_parens(&g.expr),
        e => e,
    }
}

/// `f32`, `f16`, `bf16`, `bool`, or a path ending in one of them (no generic arguments).
fn scalar_type(ty: &Type) -> Option<Scalar> {
    match ty {
        Type::Paren(p) => scalar_type(&p.elem),
        Type::Group(g) => scalar_type(&g.elem),
        Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last()?;
            if !last.arguments.is_none() {
                return None;
            }
            match last.ident.to_string().as_str() {
                "f32" => Some(Scalar::F32),
                "f16" => Some(Scalar::F16),
                "bf16" => Some(Scalar::Bf16),
                "bool" if p.path.segments.len() == 1 => Some(Scalar::Bool),
                _ => None,
            }
        }
        _ => None,
    }
}

fn mismatch(expected: Scalar, found: Scalar, what: &str) -> String {
    if found.is_float() && expected.is_float() {
        format!(
            "mismatched types: {what} {}, this is {}: convert with `as {}`",
            expected.name(),
            found.name(),
            expected.name()
        )
    } else {
        format!("mismatched types: {what} {}, this is {}", expected.name(), found.name())
    }
}

/// A node's source text, roughly as written (for messages).
fn tokens_text(node: &dyn ToTokens) -> String {
    let s = node.to_token_stream().to_string();
    s.replace(" :: ", "::").replace(":: ", "::").replace(" ,", ",").replace("( ", "(").replace(" )", ")")
}
