//! The typed IR of an elementwise function: what `parse` builds and both emitters walk.
//!
//! Every float value carries its type; the emitters keep all floats in `f32` registers and round
//! after each operation whose result type is `f16` / `bf16` (see the module docs of `super` for the
//! exact semantics). Constants are stored already rounded to their type.

/// The type of a value. `Bool` only arises inside a function (comparisons, `if` conditions): it is
/// never a parameter or result type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scalar {
    F32,
    F16,
    Bf16,
    Bool,
}

impl Scalar {
    /// The name a user writes (`f32`, `f16`, `bf16`, `bool`).
    pub fn name(self) -> &'static str {
        match self {
            Scalar::F32 => "f32",
            Scalar::F16 => "f16",
            Scalar::Bf16 => "bf16",
            Scalar::Bool => "bool",
        }
    }

    pub fn is_float(self) -> bool {
        self != Scalar::Bool
    }
}

/// A whole function: parameters (types only; values are `ExprKind::Param(index)`), the result type
/// and the body.
#[derive(Clone, Debug)]
pub struct Function {
    pub params: Vec<Scalar>,
    pub ret: Scalar,
    pub body: Block,
}

/// `{ let ..; let ..; value }`. The locals a block binds are visible in its later `let`s and its value
/// only.
#[derive(Clone, Debug)]
pub struct Block {
    pub lets: Vec<Let>,
    pub value: Expr,
}

/// `let name = value;` Every binding gets a fresh `local` id (shadowing makes a new one).
#[derive(Clone, Debug)]
pub struct Let {
    pub local: usize,
    /// The user's name (`_` for `let _ = ..`), for comments in the output.
    pub name: String,
    pub value: Expr,
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub ty: Scalar,
    pub kind: ExprKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `a.min(b)`: IEEE 754-2019 minimumNumber (a NaN operand yields the other; -0 < +0).
    Min,
    /// `a.max(b)`: IEEE 754-2019 maximumNumber.
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MathFn {
    Abs,
    Exp,
    Tanh,
    Sqrt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Clone, Debug)]
pub enum ExprKind {
    /// The function's parameter with this index.
    Param(usize),
    /// A `let`-bound value (`Let::local`).
    Local(usize),
    /// A float constant, exactly representable in the expression's type.
    Const(f32),
    BoolConst(bool),
    /// `-a`: flips the sign (exact at every type).
    Neg(Box<Expr>),
    /// Both operands have the expression's (float) type.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// The operand has the expression's (float) type.
    Math(MathFn, Box<Expr>),
    /// Both operands have the same type (a float, or `bool` for `==` / `!=`); the result is `bool`.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// Converts the operand's float type to the expression's.
    Cast(Box<Expr>),
    /// `if cond { then } else { otherwise }`; both branches have the expression's type.
    If(Box<Expr>, Box<Block>, Box<Block>),
    Block(Box<Block>),
}

impl Expr {
    pub fn new(ty: Scalar, kind: ExprKind) -> Expr {
        Expr { ty, kind }
    }
}

/// Rounds a finite `x` to the nearest value of the float type `ty` (ties to even), as `f32`; `None`
/// when the result overflows the type. Used for literals (parsed as `f64`, then rounded once to
/// their type) and, in tests, by the interpreter.
pub fn round_to(x: f64, ty: Scalar) -> Option<f32> {
    let r = match ty {
        Scalar::F32 => f64::from(x as f32),
        Scalar::F16 => round_binary(x, 11, -14),
        Scalar::Bf16 => round_binary(x, 8, -126),
        Scalar::Bool => return None,
    };
    let max = match ty {
        Scalar::F16 => 65504.0,
        Scalar::Bf16 => f64::from(f32::from_bits(0x7f7f_0000)),
        _ => f64::from(f32::MAX),
    };
    if x.is_nan() {
        return Some(f32::NAN);
    }
    (r.abs() <= max).then_some(r as f32)
}

/// Rounds `x` to a binary float format with `precision` significand bits and minimum normal
/// exponent `emin` (unbounded above), ties to even. Exact: scaling by powers of two is exact in
/// `f64` for the formats used here.
fn round_binary(x: f64, precision: i32, emin: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let biased = ((x.to_bits() >> 52) & 0x7ff) as i32;
    let exponent = if biased == 0 { emin } else { (biased - 1023).max(emin) };
    let ulp = pow2(exponent - (precision - 1));
    (x / ulp).round_ties_even() * ulp
}

fn pow2(k: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&k));
    f64::from_bits(((k + 1023) as u64) << 52)
}

#[cfg(test)]
pub mod interp {
    //! A reference interpreter of the IR with the documented semantics, for tests.

    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    pub enum Value {
        F(f32),
        B(bool),
    }

    impl Value {
        fn f(self) -> f32 {
            match self {
                Value::F(v) => v,
                Value::B(_) => panic!("expected a float"),
            }
        }
        fn b(self) -> bool {
            match self {
                Value::B(v) => v,
                Value::F(_) => panic!("expected a bool"),
            }
        }
    }

    /// Rounds an `f32` to `ty` at run time (overflow gives a signed infinity).
    pub fn round(v: f32, ty: Scalar) -> f32 {
        if ty == Scalar::F32 || v.is_nan() {
            return v;
        }
        round_to(f64::from(v), ty).unwrap_or(f32::INFINITY.copysign(v))
    }

    pub fn min_number(a: f32, b: f32) -> f32 {
        if a.is_nan() {
            b
        } else if b.is_nan() || a < b {
            a
        } else if b < a {
            b
        } else {
            f32::from_bits(a.to_bits() | b.to_bits())
        }
    }

    pub fn max_number(a: f32, b: f32) -> f32 {
        if a.is_nan() {
            b
        } else if b.is_nan() || a > b {
            a
        } else if b > a {
            b
        } else {
            f32::from_bits(a.to_bits() & b.to_bits())
        }
    }

    /// Evaluates `f` on arguments already rounded to their parameter types.
    pub fn eval(f: &Function, args: &[f32]) -> f32 {
        assert_eq!(args.len(), f.params.len());
        let mut locals = std::collections::HashMap::new();
        block(&f.body, args, &mut locals).f()
    }

    fn block(b: &Block, args: &[f32], locals: &mut std::collections::HashMap<usize, Value>) -> Value {
        for l in &b.lets {
            let v = expr(&l.value, args, locals);
            locals.insert(l.local, v);
        }
        expr(&b.value, args, locals)
    }

    fn expr(e: &Expr, args: &[f32], locals: &mut std::collections::HashMap<usize, Value>) -> Value {
        let ty = e.ty;
        match &e.kind {
            ExprKind::Param(i) => Value::F(args[*i]),
            ExprKind::Local(id) => locals[id],
            ExprKind::Const(v) => Value::F(*v),
            ExprKind::BoolConst(v) => Value::B(*v),
            ExprKind::Neg(a) => Value::F(-expr(a, args, locals).f()),
            ExprKind::Binary(op, a, b) => {
                let (a, b) = (expr(a, args, locals).f(), expr(b, args, locals).f());
                let r = match op {
                    BinOp::Add => a + b,
                    BinOp::Sub => a - b,
                    BinOp::Mul => a * b,
                    BinOp::Div => a / b,
                    BinOp::Min => min_number(a, b),
                    BinOp::Max => max_number(a, b),
                };
                Value::F(round(r, ty))
            }
            ExprKind::Math(m, a) => {
                let a = expr(a, args, locals).f();
                let r = match m {
                    MathFn::Abs => a.abs(),
                    MathFn::Exp => a.exp(),
                    MathFn::Tanh => a.tanh(),
                    MathFn::Sqrt => a.sqrt(),
                };
                Value::F(round(r, ty))
            }
            ExprKind::Cmp(op, a, b) => {
                let (a, b) = (expr(a, args, locals), expr(b, args, locals));
                Value::B(match (a, b) {
                    (Value::F(a), Value::F(b)) => match op {
                        CmpOp::Lt => a < b,
                        CmpOp::Le => a <= b,
                        CmpOp::Gt => a > b,
                        CmpOp::Ge => a >= b,
                        CmpOp::Eq => a == b,
                        CmpOp::Ne => a != b,
                    },
                    (Value::B(a), Value::B(b)) => match op {
                        CmpOp::Eq => a == b,
                        CmpOp::Ne => a != b,
                        _ => panic!("ordering on bool"),
                    },
                    _ => panic!("mixed comparison"),
                })
            }
            ExprKind::And(a, b) => Value::B(expr(a, args, locals).b() && expr(b, args, locals).b()),
            ExprKind::Or(a, b) => Value::B(expr(a, args, locals).b() || expr(b, args, locals).b()),
            ExprKind::Not(a) => Value::B(!expr(a, args, locals).b()),
            ExprKind::Cast(a) => Value::F(round(expr(a, args, locals).f(), ty)),
            ExprKind::If(c, t, f) => {
                if expr(c, args, locals).b() {
                    block(t, args, locals)
                } else {
                    block(f, args, locals)
                }
            }
            ExprKind::Block(b) => block(b, args, locals),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_known_values() {
        // f16: 1 + 2^-11 is a tie between 1 and 1 + 2^-10 -> even (1); 1 + 3 * 2^-11 -> 1 + 2^-9.
        assert_eq!(round_to(1.0 + 2f64.powi(-11), Scalar::F16), Some(1.0));
        assert_eq!(round_to(1.0 + 3.0 * 2f64.powi(-11), Scalar::F16), Some(1.0 + 2f32.powi(-9)));
        assert_eq!(round_to(65504.0, Scalar::F16), Some(65504.0));
        assert_eq!(round_to(65519.0, Scalar::F16), Some(65504.0));
        assert_eq!(round_to(65520.0, Scalar::F16), None);
        // f16 subnormals: 2^-24 is the smallest; half of it ties to 0.
        assert_eq!(round_to(2f64.powi(-24), Scalar::F16), Some(2f32.powi(-24)));
        assert_eq!(round_to(2f64.powi(-25), Scalar::F16), Some(0.0));
        assert_eq!(round_to(1.5 * 2f64.powi(-25), Scalar::F16), Some(2f32.powi(-24)));
        // bf16: 8 significant bits.
        assert_eq!(round_to(0.1, Scalar::Bf16), Some(f32::from_bits(0x3dcd_0000)));
        assert_eq!(round_to(1.0 + 2f64.powi(-8), Scalar::Bf16), Some(1.0));
        assert_eq!(round_to(1.0 + 3.0 * 2f64.powi(-8), Scalar::Bf16), Some(1.0 + 2f32.powi(-6)));
        assert_eq!(round_to(3.4e38, Scalar::Bf16), None);
        assert_eq!(round_to(-2.5, Scalar::Bf16), Some(-2.5));
        assert_eq!(round_to(0.1, Scalar::F32), Some(0.1f32));
        assert_eq!(round_to(1e39, Scalar::F32), None);
    }

    #[test]
    fn runtime_rounding_agrees_with_bit_level_rne() {
        // Reference f32 -> bf16 by bit manipulation (round to nearest even on the low 16 bits).
        fn bf16_ref(v: f32) -> f32 {
            let b = v.to_bits();
            let r = b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000;
            f32::from_bits(r)
        }
        let mut x: u32 = 0x1234_5678;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = f32::from_bits(x);
            if !v.is_finite() || v.abs() > 3.0e38 {
                continue;
            }
            assert_eq!(interp::round(v, Scalar::Bf16).to_bits(), bf16_ref(v).to_bits(), "{v:e}");
        }
    }
}
