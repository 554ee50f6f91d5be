use super::ir::interp::{eval, max_number, min_number, round};
use super::ir::{ExprKind, Scalar};
use super::{translate, Translated};

fn tr(src: &str) -> syn::Result<Translated> {
    translate(&syn::parse_str::<syn::ItemFn>(src).expect("test source parses as a fn"))
}

fn ok(src: &str) -> Translated {
    match tr(src) {
        Ok(t) => t,
        Err(e) => panic!("translation failed: {e}"),
    }
}

/// All error messages of a failed translation.
fn errors(src: &str) -> Vec<String> {
    match tr(src) {
        Ok(_) => panic!("expected an error for {src}"),
        Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn assert_error(src: &str, needles: &[&str]) {
    let errs = errors(src);
    let joined = errs.join("\n");
    for n in needles {
        assert!(joined.contains(n), "expected {n:?} in the errors of `{src}`:\n{joined}");
    }
}

/// Checks what a C++ compiler would trip on first: balanced brackets, every `vN` / `pN` declared
/// before use, only the allowed external names.
fn check_cuda_shape(t: &Translated) {
    let c = &t.cuda;
    for (open, close) in [('{', '}'), ('(', ')')] {
        let mut depth = 0i32;
        for ch in c.chars() {
            if ch == open {
                depth += 1;
            } else if ch == close {
                depth -= 1;
                assert!(depth >= 0, "unbalanced {open}{close} in\n{c}");
            }
        }
        assert_eq!(depth, 0, "unbalanced {open}{close} in\n{c}");
    }
    assert!(c.contains(&format!("__device__ __forceinline__ float {}(", t.cuda_name)), "{c}");
    let body: String = c.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut declared: Vec<String> = (0..t.params.len()).map(|i| format!("p{i}")).collect();
    let allowed = [
        "tessera",
        "add_rn",
        "sub_rn",
        "mul_rn",
        "div_rn",
        "sqrt_rn",
        "round_f16",
        "round_bf16",
        "fabsf",
        "expf",
        "tanhf",
        "const",
        "float",
        "bool",
        "return",
        "if",
        "else",
        "true",
        "false",
        "__device__",
        "__forceinline__",
        &t.cuda_name,
    ];
    let mut word = String::new();
    let mut prev_decl = false;
    for ch in body.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_alphanumeric() || ch == '_' || (ch == '.' && word.starts_with(|c: char| c.is_ascii_digit())) {
            word.push(ch);
            continue;
        }
        if word.is_empty() {
            continue;
        }
        let w = std::mem::take(&mut word);
        if w.starts_with(|c: char| c.is_ascii_digit()) {
            continue; // a literal such as 5e-1f (the sign of an exponent splits it; digits remain)
        }
        if prev_decl {
            declared.push(w);
            prev_decl = false;
        } else if w == "float" || w == "bool" {
            prev_decl = true;
        } else if !allowed.contains(&w.as_str()) && !declared.contains(&w) {
            panic!("`{w}` used before declaration or not allowed in\n{c}");
        }
    }
}

fn bf16_round(v: f32) -> f32 {
    round(v, Scalar::Bf16)
}

fn sample_inputs() -> Vec<f32> {
    let mut v = vec![0.0, -0.0, 1.0, -1.0, 0.5, 3.0, -6.5, 1e-3, 100.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push((x as f32 / u32::MAX as f32) * 16.0 - 8.0);
    }
    v
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

const GELU: &str = "
/// GELU (tanh approximation), rounded to bf16.
pub fn gelu_bf16(x: f32) -> bf16 {
    let u = 0.7978846 * (x + 0.044715 * x * x * x);
    (0.5 * x * (1.0 + u.tanh())) as bf16
}";

#[test]
fn gelu_tanh_with_cast() {
    let t = ok(GELU);
    assert_eq!(t.name.to_string(), "gelu_bf16");
    assert_eq!(t.cuda_name, "tessera_user_gelu_bf16");
    assert_eq!(t.params.len(), 1);
    assert_eq!((t.params[0].0.to_string(), t.params[0].1), ("x".to_string(), Scalar::F32));
    assert_eq!(t.ret, Scalar::Bf16);
    assert!(matches!(t.vis, syn::Visibility::Public(_)));
    for piece in ["float p0", "tessera::mul_rn(", "tessera::add_rn(", "tanhf(", "tessera::round_bf16(", "return v"] {
        assert!(t.cuda.contains(piece), "missing {piece} in\n{}", t.cuda);
    }
    assert!(!t.cuda.contains("round_f16"), "{}", t.cuda);
    check_cuda_shape(&t);

    // The IR computes exactly the f32 reference, then one rounding to bf16.
    for x in sample_inputs() {
        let u = 0.7978846f32 * (x + 0.044715f32 * x * x * x);
        let want = bf16_round(0.5f32 * x * (1.0 + u.tanh()));
        let got = eval(&t.ir, &[x]);
        assert!(same(got, want), "x = {x:e}: {got:e} != {want:e}");
    }

    // The Rust replacement: valid syntax, same name and signature, doc kept, rounding through half.
    let f: syn::ItemFn = syn::parse2(t.rust.clone()).expect("the emitted Rust parses");
    assert_eq!(f.sig.ident, "gelu_bf16");
    assert!(matches!(f.vis, syn::Visibility::Public(_)));
    assert!(f.attrs.iter().any(|a| a.path().is_ident("doc")));
    let text = t.rust.to_string();
    assert!(text.contains(":: tessera :: half :: bf16 :: from_f32"), "{text}");
    assert!(text.contains("f32 :: tanh"), "{text}");
    assert!(text.contains("0.7978846f32"), "{text}");
}

#[test]
fn clamp_with_if_else() {
    let t = ok("
        fn clamp6(x: bf16, lo: f32) -> bf16 {
            if (x as f32) < lo { lo as bf16 } else if x > 6.0 { 6.0 } else { x }
        }");
    assert_eq!(t.params.iter().map(|p| p.1).collect::<Vec<_>>(), vec![Scalar::Bf16, Scalar::F32]);
    assert!(t.cuda.contains("if (v"), "{}", t.cuda);
    assert!(t.cuda.contains("6e0f"), "{}", t.cuda);
    check_cuda_shape(&t);
    for x in sample_inputs() {
        let x = bf16_round(x);
        let lo = -1.3f32;
        let want = if x < lo {
            bf16_round(lo)
        } else if x > 6.0 {
            6.0
        } else {
            x
        };
        assert!(same(eval(&t.ir, &[x, lo]), want), "x = {x}");
    }
    syn::parse2::<syn::ItemFn>(t.rust).expect("the emitted Rust parses");
}

#[test]
fn literals_take_the_other_operands_type() {
    let t = ok("fn scale(x: half::bf16) -> half::bf16 { x * 0.1 + 1 }");
    // 0.1 rounded to bf16 is 0x3dcd.
    let mut consts = Vec::new();
    fn walk(e: &super::ir::Expr, out: &mut Vec<(Scalar, f32)>) {
        match &e.kind {
            ExprKind::Const(v) => out.push((e.ty, *v)),
            ExprKind::Binary(_, a, b) => {
                walk(a, out);
                walk(b, out);
            }
            _ => {}
        }
    }
    walk(&t.ir.body.value, &mut consts);
    assert_eq!(consts, vec![(Scalar::Bf16, f32::from_bits(0x3dcd_0000)), (Scalar::Bf16, 1.0)]);
    let x = bf16_round(2.75);
    assert_eq!(eval(&t.ir, &[x]), bf16_round(bf16_round(x * f32::from_bits(0x3dcd_0000)) + 1.0));
    // Untyped on both sides: f32, then the annotation decides.
    let t = ok("fn f(x: f16) -> f16 { let a: f16 = 0.5 * 3.0; let b = 0.1; x * a + (b as f16) }");
    let expect_a = round(0.5 * 3.0, Scalar::F16);
    let expect_b = round(0.1f32, Scalar::F16);
    let x = round(1.7, Scalar::F16);
    let want = round(round(x * expect_a, Scalar::F16) + expect_b, Scalar::F16);
    assert_eq!(eval(&t.ir, &[x]), want);
    // A literal alone as the result takes the result type; a negative literal folds.
    let t = ok("fn g(x: f16) -> f16 { if x < -0.5 { -65504.0 } else { x } }");
    assert_eq!(eval(&t.ir, &[-1.0]), -65504.0);
    assert!(t.cuda.contains("(-6.5504e4f)"), "{}", t.cuda);
    // f32-suffixed literals are f32.
    assert_error("fn h(x: bf16) -> bf16 { x * 2.0f32 }", &["cannot multiply bf16 and f32", "as"]);
    assert_error("fn h(x: f16) -> f16 { x + 70000.0 }", &["literal out of range for f16"]);
    assert_error("fn h(x: f32) -> f32 { x + 1e39 }", &["literal out of range for f32"]);
}

#[test]
fn methods_casts_and_logic() {
    let t = ok("
        fn mix(a: f16, b: bf16, c: f32) -> f32 {
            let m = a.max(0.0).min(4.0);           // f16
            let s = ((b as f32).abs() + 1.0).sqrt(); // f32
            let e = f32::max(c, -1.0).exp();
            let flag = !(c > 0.0 && a != 1.0) || c <= -2.0;
            let r = if flag { (m as f32) * s } else { e / s };
            r.tanh() - (r as bf16 as f16 as f32)
        }");
    check_cuda_shape(&t);
    for piece in
        ["fabsf(", "expf(", "tanhf(", "tessera::sqrt_rn(", "tessera::div_rn(", "tessera::sub_rn(", "&&", "||", "!v"]
    {
        assert!(t.cuda.contains(piece), "missing {piece} in\n{}", t.cuda);
    }
    let f16r = |v: f32| round(v, Scalar::F16);
    for (i, c) in sample_inputs().into_iter().enumerate().take(400) {
        let a = f16r(c * 0.37 + (i as f32) * 0.01);
        let b = bf16_round(c * -1.1);
        let m = min_number(max_number(a, 0.0), 4.0);
        let s = ((b).abs() + 1.0).sqrt();
        let e = max_number(c, -1.0).exp();
        let flag = !(c > 0.0 && a != 1.0) || c <= -2.0;
        let r = if flag { m * s } else { e / s };
        let want = r.tanh() - f16r(bf16_round(r));
        assert!(same(eval(&t.ir, &[a, b, c]), want), "inputs {a} {b} {c}");
    }
    syn::parse2::<syn::ItemFn>(t.rust).expect("the emitted Rust parses");
}

#[test]
fn min_max_follow_minimum_number() {
    assert_eq!(min_number(f32::NAN, 2.0), 2.0);
    assert_eq!(min_number(2.0, f32::NAN), 2.0);
    assert_eq!(max_number(f32::NAN, -2.0), -2.0);
    assert_eq!(min_number(0.0, -0.0).to_bits(), (-0.0f32).to_bits());
    assert_eq!(min_number(-0.0, 0.0).to_bits(), (-0.0f32).to_bits());
    assert_eq!(max_number(0.0, -0.0).to_bits(), 0);
    assert_eq!(max_number(-0.0, -0.0).to_bits(), (-0.0f32).to_bits());
    // The zero trick the emitters use: -(-a - b) for min, a + b for max.
    for (a, b) in [(0.0f32, -0.0f32), (-0.0, 0.0), (0.0, 0.0), (-0.0, -0.0)] {
        assert_eq!((-(-a - b)).to_bits(), min_number(a, b).to_bits());
        assert_eq!((a + b).to_bits(), max_number(a, b).to_bits());
    }
}

#[test]
fn blocks_shadowing_and_return() {
    let t = ok("
        fn f(x: f32) -> f32 {
            let x = x * 2.0;
            let y = { let x = x + 1.0; x * x };
            return y - x;
        }");
    assert_eq!(eval(&t.ir, &[3.0]), 49.0 - 6.0);
    check_cuda_shape(&t);
    let t = ok("fn g(x: f32) -> f16 { let _ = x * 2.0; let t: bool = x > 1.0; if t { 1 } else { 2 } }");
    assert_eq!(eval(&t.ir, &[3.0]), 1.0);
    assert_eq!(eval(&t.ir, &[0.0]), 2.0);
    check_cuda_shape(&t);
}

#[test]
fn mixed_types_are_errors() {
    assert_error("fn f(x: f16, y: f32) -> f32 { x + y }", &["cannot add f16 and f32", "`as`"]);
    assert_error("fn f(x: f16, y: bf16) -> f16 { x.min(y) }", &["minimum of f16 and bf16"]);
    assert_error("fn f(x: f16, y: f32) -> f32 { if x < y { x } else { y } }", &["cannot compare f16 with f32"]);
    assert_error("fn f(x: f16, y: f32) -> f32 { if y > 0.0 { x } else { y } }", &["different types (f16 and f32)"]);
    assert_error("fn f(x: f32) -> bf16 { x * 2.0 }", &["function returns bf16", "this is f32", "as bf16"]);
    assert_error("fn f(x: f32) -> f32 { let y: f16 = x; y as f32 }", &["declared f16", "this is f32"]);
    assert_error("fn f(x: f32) -> f32 { if x { x } else { 0.0 } }", &["condition must be a bool, found f32"]);
    assert_error("fn f(x: f32) -> f32 { (x > 0.0) + 1.0 }", &["cannot add bools"]);
    assert_error("fn f(x: f32) -> f32 { (x > 0.0) as f32 }", &["cannot cast a bool"]);
    assert_error("fn f(x: f32) -> f32 { bf16::max(x, 1.0) }", &["`bf16::max` needs bf16 operands, found f32"]);
}

#[test]
fn unsupported_constructs_are_named() {
    assert_error("fn f(x: f32) -> f32 { loop { } }", &["`loop` cannot be used"]);
    assert_error("fn f(x: f32) -> f32 { for i in 0..3 { } x }", &["`for` loops cannot be used"]);
    assert_error("fn f(x: f32) -> f32 { while x > 0.0 { } x }", &["`while` loops cannot be used"]);
    assert_error("fn f(x: f32) -> f32 { foo(x) }", &["function calls (`foo(..)`) are not supported"]);
    assert_error("fn f(x: f32) -> f32 { x.sin() }", &["method `sin` is not supported", "min`, `max`, `abs`"]);
    assert_error("fn f(x: i32) -> f32 { 1.0 }", &["parameter type `i32` is not supported", "f32, f16 and bf16"]);
    assert_error("fn f(x: f32) { }", &["must declare its return type"]);
    assert_error("fn f(x: f32) -> f64 { x }", &["return type `f64` is not supported"]);
    assert_error("fn f() -> f32 { 1.0 }", &["at least one parameter"]);
    assert_error("fn f<T>(x: f32) -> f32 { x }", &["generic parameters are not supported"]);
    assert_error("async fn f(x: f32) -> f32 { x }", &["`async fn` is not supported"]);
    assert_error("unsafe fn f(x: f32) -> f32 { x }", &["`unsafe fn` is not supported"]);
    assert_error("const fn f(x: f32) -> f32 { x }", &["`const fn` is not supported"]);
    assert_error("fn f((a, b): (f32, f32)) -> f32 { a }", &["parameter type `(f32, f32)`", "plain parameter names"]);
    assert_eq!(errors("fn f(mut x: f32) -> f32 { x }").len(), 1);
    assert_error("fn f(mut x: f32) -> f32 { x }", &["`mut` parameters are not supported"]);
    assert_error("fn f(x: f32, x: f32) -> f32 { x }", &["parameter name is used twice"]);
    assert_error("fn f(self, x: f32) -> f32 { x }", &["`self` is not supported"]);
    assert_error(
        "fn f(x: f32) -> f32 { let mut y = x; y += 1.0; y }",
        &["`let mut` is not supported", "compound assignment `+=`"],
    );
    assert_error("fn f(x: f32) -> f32 { let y = x; y = 1.0; y }", &["assignment"]);
    assert_error("fn f(x: f32) -> f32 { let c = |v: f32| v; x }", &["closures cannot be used"]);
    assert_error("fn f(x: f32) -> f32 { println!(\"hi\"); x }", &["macro invocations (`println!`)"]);
    assert_error("fn f(x: f32) -> f32 { x % 2.0 }", &["operator `%` is not supported"]);
    assert_error("fn f(x: f32) -> f32 { if x > 0.0 { return x; } x }", &["early `return`"]);
    assert_error("fn f(x: f32) -> f32 { if x > 0.0 { x } }", &["`if` without `else`"]);
    assert_error("fn f(x: f32) -> f32 { match x { _ => x } }", &["`match`"]);
    assert_error("fn f(x: f32) -> f32 { x as i32 as f32 }", &["cast to `i32` is not supported"]);
    assert_error("fn f(x: f32) -> f32 { f32::INFINITY }", &["path `f32::INFINITY` is not supported"]);
    assert_error("fn f(x: f32) -> f32 { y }", &["cannot find value `y`"]);
    assert_error("fn f(x: f32) -> f32 { x.to_f32() }", &["method `to_f32` is not supported", "as f32"]);
    assert_error("fn f(x: f32) -> f32 { x + 1.0f64 }", &["suffix `f64`"]);
    assert_error("fn f(x: f32) -> f32 { let y = x; }", &["no value"]);
    assert_error("fn f(x: f32) -> f32 { x; x }", &["statement without effect"]);
}

#[test]
fn errors_are_collected_and_not_repeated() {
    // Three independent problems, each reported once; the failed `let` does not cascade.
    let errs = errors("fn f(x: i32) -> f32 { let a = x.sin(); let b = a * 2.0; loop {} }");
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].contains("i32"));
    assert!(errs[1].contains("sin"));
    assert!(errs[2].contains("loop"));
}

#[test]
fn emitted_rust_keeps_the_signature_and_attributes() {
    let t = ok("
        #[doc = \"hello\"]
        #[inline]
        pub(crate) fn act(x: half::f16, y: half::bf16) -> half::f16 { (x.abs() as bf16).max(y) as f16 }");
    let f: syn::ItemFn = syn::parse2(t.rust.clone()).expect("parses");
    let sig = &f.sig;
    assert_eq!(quote::quote!(#sig).to_string(), "fn act (x : half :: f16 , y : half :: bf16) -> half :: f16");
    assert!(f.attrs.iter().any(|a| a.path().is_ident("inline")));
    assert!(f.attrs.iter().any(|a| a.path().is_ident("doc")));
    assert!(matches!(f.vis, syn::Visibility::Restricted(_)));
    let text = t.rust.to_string();
    assert!(text.contains("x . to_f32 ()"), "{text}");
    assert!(text.contains("< half :: f16 > :: from_f32"), "{text}");
    check_cuda_shape(&t);
    // max of two bf16 values is one of them: no rounding after it.
    assert_eq!(t.cuda.matches("round_bf16").count(), 1, "{}", t.cuda);
    assert_eq!(t.cuda.matches("round_f16").count(), 1, "{}", t.cuda);
}
