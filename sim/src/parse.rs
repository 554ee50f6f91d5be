//! Parser: PTX tokens to a light syntax tree ([`PtxModule`]).
//!
//! The tree keeps instructions close to the text (opcode string, operand list) and leaves their
//! meaning to the lowering pass; what this pass settles is structure: directives, declarations,
//! labels, guards, operand shapes, and register scoping. Inline-asm blocks open `{ }` scopes whose
//! `.reg` declarations shadow outer names (`{ .reg .u64 a; ... }` appears once per inlined call);
//! every declared register gets a function-unique id here, so the scopes vanish after parsing.

use std::collections::HashMap;

use crate::error::SimError;
use crate::lex::{parse_int, parse_literal, tokenize, Literal, Tok, Token};

/// The most bytes one parameter, and all of an entry's parameters together, may take: PTX's limit
/// for kernel parameters (sm_70 and newer).
pub(crate) const MAX_PARAM_BYTES: usize = 32764;
/// The most `.local` bytes per thread (CUDA's limit): the simulator allocates them for every
/// thread of a CTA, so a larger (malformed) size must be an error, not a failed allocation.
pub(crate) const MAX_LOCAL_BYTES: usize = 512 << 10;
/// The most bytes of one `.const` variable: the constant bank's size.
const MAX_CONST_BYTES: usize = 64 << 10;
/// The most bytes of one `.global` variable. The simulator allocates module variables while
/// lowering, so a malformed size must be an error rather than an allocation that aborts the
/// process; NVRTC's kernels declare a few bytes.
const MAX_GLOBAL_VARIABLE_BYTES: usize = 64 << 20;
/// The largest `.align`: far past any alignment PTX code asks for (TMA wants 1024), small enough
/// that aligned offsets cannot overflow.
const MAX_ALIGN: u64 = 1 << 20;

/// A scalar PTX type as used in declarations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScalarType {
    Pred,
    B8,
    U8,
    S8,
    B16,
    U16,
    S16,
    F16,
    Bf16,
    B32,
    U32,
    S32,
    F32,
    B64,
    U64,
    S64,
    F64,
    /// `.b128` (16 bytes; only for declarations).
    B128,
}

impl ScalarType {
    pub(crate) fn from_suffix(s: &str) -> Option<ScalarType> {
        use ScalarType::*;
        Some(match s {
            "pred" => Pred,
            "b8" => B8,
            "u8" => U8,
            "s8" => S8,
            "b16" => B16,
            "u16" => U16,
            "s16" => S16,
            "f16" => F16,
            "bf16" => Bf16,
            "b32" => B32,
            "u32" => U32,
            "s32" => S32,
            "f32" => F32,
            "f16x2" | "bf16x2" => B32,
            "b64" => B64,
            "u64" => U64,
            "s64" => S64,
            "f64" => F64,
            "b128" => B128,
            _ => return None,
        })
    }

    /// Size in bytes (a predicate counts as 1).
    pub(crate) fn size(self) -> usize {
        use ScalarType::*;
        match self {
            Pred | B8 | U8 | S8 => 1,
            B16 | U16 | S16 | F16 | Bf16 => 2,
            B32 | U32 | S32 | F32 => 4,
            B64 | U64 | S64 | F64 => 8,
            B128 => 16,
        }
    }
}

/// State spaces of variable declarations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    Global,
    Const,
    Shared,
    Local,
}

/// `.global` / `.const` / `.shared` / `.local` variable.
#[derive(Debug, Clone)]
pub(crate) struct VarDecl {
    pub space: Space,
    pub is_extern: bool,
    pub align: usize,
    pub ty: ScalarType,
    /// Element size in bytes (type size times vector width).
    pub elem_size: usize,
    /// Number of elements; `None` for an unsized extern array (`name[]`).
    pub len: Option<usize>,
    pub name: String,
    /// Initializer, one literal per element (possibly fewer: the rest is zero).
    pub init: Vec<Literal>,
    pub line: usize,
}

impl VarDecl {
    pub(crate) fn size(&self) -> usize {
        self.elem_size * self.len.unwrap_or(0)
    }
}

/// One `.param` of an entry.
#[derive(Debug, Clone)]
pub(crate) struct ParamDecl {
    pub name: String,
    pub size: usize,
    pub align: usize,
}

/// A register as declared (unique within its function: scoped names get their own id).
#[derive(Debug, Clone)]
pub(crate) struct RegDecl {
    pub ty: ScalarType,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AddrBase {
    Reg(u32),
    Symbol(String),
}

/// An instruction operand, shaped but not yet typed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    /// A declared register, by function-unique id.
    Reg(u32),
    /// A special register (`%tid.x`, `%laneid`, ...).
    Special(String),
    /// A literal, its sign applied.
    Lit(Literal),
    /// A variable, parameter or label name.
    Symbol(String),
    /// `{a, b, ...}`.
    Vector(Vec<Operand>),
    /// `[base+offset]`, `[base]`, `[offset]`.
    Address { base: Option<AddrBase>, offset: i64 },
    /// `%p|%q` (setp's second, complemented, destination).
    Pair(u32, u32),
    /// `_|%p` (elect.sync with a discarded lane number).
    SinkPair(u32),
    /// `[base+offset, {c0, c1, ...}]`: a tensor map and its coordinates (cp.async.bulk.tensor).
    TensorAddr { base: Option<AddrBase>, offset: i64, coords: Vec<Operand> },
    /// `_`: a destination whose value is discarded.
    Sink,
    /// `!%p`: a negated predicate source.
    Not(u32),
}

/// An instruction as written.
#[derive(Debug, Clone)]
pub(crate) struct RawInst {
    pub line: usize,
    /// Guard predicate register id and whether it is negated (`@!%p`).
    pub guard: Option<(u32, bool)>,
    pub opcode: String,
    pub operands: Vec<Operand>,
    /// Why the operands did not parse, if they did not: an error for an instruction the lowering
    /// knows, "unsupported" for one it does not (`tex` and its `[a, {b, c}]` operands, ...).
    pub bad_operands: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum Stmt {
    Label { name: String, line: usize },
    Inst(RawInst),
}

/// A `.entry` or `.func`.
#[derive(Debug, Clone)]
pub(crate) struct Function {
    pub name: String,
    pub is_entry: bool,
    pub line: usize,
    pub params: Vec<ParamDecl>,
    pub maxntid: Option<[u32; 3]>,
    pub reqntid: Option<[u32; 3]>,
    pub regs: Vec<RegDecl>,
    /// `.local` / `.shared` declarations inside the body.
    pub vars: Vec<VarDecl>,
    pub body: Vec<Stmt>,
    /// False for a prototype (`.func f(...);`).
    pub has_body: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PtxModule {
    pub version: Option<String>,
    pub target: Vec<String>,
    pub address_size: Option<u32>,
    pub functions: Vec<Function>,
    /// Module-scope variables.
    pub vars: Vec<VarDecl>,
}

/// Special registers the simulator knows (with `.x/.y/.z` where they have components).
pub(crate) fn is_special_register(name: &str) -> bool {
    const VECTOR: [&str; 4] = ["%tid", "%ntid", "%ctaid", "%nctaid"];
    const SCALAR: [&str; 16] = [
        "%laneid",
        "%warpid",
        "%nwarpid",
        "%smid",
        "%nsmid",
        "%gridid",
        "%lanemask_eq",
        "%lanemask_le",
        "%lanemask_lt",
        "%lanemask_ge",
        "%lanemask_gt",
        "%dynamic_smem_size",
        "%total_smem_size",
        "%clock",
        "%clock64",
        "%warpsize",
    ];
    if SCALAR.contains(&name) || name == "WARP_SZ" {
        return true;
    }
    match name.rsplit_once('.') {
        Some((base, comp)) => VECTOR.contains(&base) && matches!(comp, "x" | "y" | "z"),
        None => false,
    }
}

/// Register scopes of a function body: the function scope and one per open `{`.
#[derive(Default)]
struct Scope {
    names: HashMap<String, u32>,
    /// `%r<N>`: (prefix, first id, count).
    ranges: Vec<(String, u32, u32)>,
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, SimError> {
    Err(SimError::Parse { line, message: message.into() })
}

/// Parses PTX text into a module tree.
pub(crate) fn parse_module(text: &str) -> Result<PtxModule, SimError> {
    let toks = tokenize(text)?;
    let mut p = Parser { toks, pos: 0 };
    p.module()
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    /// Line of the current token (or of the last one at the end).
    fn line(&self) -> usize {
        self.toks.get(self.pos).or_else(|| self.toks.last()).map_or(1, |t| t.line)
    }

    fn next(&mut self) -> Result<Token, SimError> {
        match self.toks.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                Ok(t.clone())
            }
            None => err(self.line(), "unexpected end of input"),
        }
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> Result<(), SimError> {
        let line = self.line();
        match self.next()?.tok {
            Tok::Punct(p) if p == c => Ok(()),
            other => err(line, format!("expected `{c}`, found {}", describe(&other))),
        }
    }

    fn word(&mut self) -> Result<String, SimError> {
        let line = self.line();
        match self.next()?.tok {
            Tok::Word(w) => Ok(w),
            other => err(line, format!("expected a name, found {}", describe(&other))),
        }
    }

    fn number(&mut self) -> Result<u64, SimError> {
        let line = self.line();
        match self.next()?.tok {
            Tok::Number(n) => parse_int(&n).map_or_else(|| err(line, format!("bad integer `{n}`")), Ok),
            other => err(line, format!("expected a number, found {}", describe(&other))),
        }
    }

    /// The value of `.align N`: a power of two no larger than [`MAX_ALIGN`].
    fn alignment(&mut self) -> Result<usize, SimError> {
        let line = self.line();
        let a = self.number()?;
        if !a.is_power_of_two() || a > MAX_ALIGN {
            return err(line, format!("`.align {a}` is not a power of two up to {MAX_ALIGN}"));
        }
        Ok(a as usize)
    }

    /// An array length `[N]`, multiplied into `len` (elements so far), with the product bounded.
    fn array_len(&mut self, len: usize, name: &str) -> Result<usize, SimError> {
        let line = self.line();
        let n = self.number()?;
        usize::try_from(n)
            .ok()
            .and_then(|n| len.checked_mul(n))
            .map_or_else(|| err(line, format!("the length of `{name}` overflows")), Ok)
    }

    /// Drops the rest of the current token's line (for `.loc` / `.file`).
    fn skip_line(&mut self, line: usize) {
        while self.toks.get(self.pos).is_some_and(|t| t.line == line) {
            self.pos += 1;
        }
    }

    fn skip_to_semicolon(&mut self) -> Result<(), SimError> {
        loop {
            if let Tok::Punct(';') = self.next()?.tok {
                return Ok(());
            }
        }
    }

    /// Skips a balanced `{ ... }` block (for `.section`).
    fn skip_block(&mut self) -> Result<(), SimError> {
        self.expect_punct('{')?;
        let mut depth = 1;
        while depth > 0 {
            match self.next()?.tok {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }

    fn module(&mut self) -> Result<PtxModule, SimError> {
        let mut m = PtxModule::default();
        while let Some(tok) = self.peek().cloned() {
            let line = self.line();
            let Tok::Word(w) = tok else {
                return err(line, format!("unexpected {} at module scope", describe(&tok)));
            };
            match w.as_str() {
                ".version" => {
                    self.pos += 1;
                    match self.next()?.tok {
                        Tok::Number(v) => m.version = Some(v),
                        other => return err(line, format!("bad .version {}", describe(&other))),
                    }
                }
                ".target" => {
                    self.pos += 1;
                    loop {
                        m.target.push(self.word()?);
                        if !self.eat_punct(',') {
                            break;
                        }
                    }
                }
                ".address_size" => {
                    self.pos += 1;
                    m.address_size = Some(self.number()? as u32);
                }
                ".loc" | ".file" => self.skip_line(line),
                ".section" => {
                    self.pos += 1;
                    self.word()?;
                    self.skip_block()?;
                }
                ".pragma" => {
                    self.pos += 1;
                    self.skip_to_semicolon()?;
                }
                _ => self.module_item(&mut m)?,
            }
        }
        Ok(m)
    }

    /// A function or variable declaration, with its linkage qualifiers.
    fn module_item(&mut self, m: &mut PtxModule) -> Result<(), SimError> {
        let line = self.line();
        let mut is_extern = false;
        loop {
            match self.peek() {
                Some(Tok::Word(w)) if matches!(w.as_str(), ".visible" | ".weak" | ".common") => self.pos += 1,
                Some(Tok::Word(w)) if w == ".extern" => {
                    is_extern = true;
                    self.pos += 1;
                }
                _ => break,
            }
        }
        let w = self.word()?;
        match w.as_str() {
            ".entry" | ".func" => {
                let f = self.function(w == ".entry", line)?;
                m.functions.push(f);
                Ok(())
            }
            ".global" | ".const" | ".shared" | ".local" => {
                let v = self.var_decl(&w, is_extern, line)?;
                m.vars.push(v);
                Ok(())
            }
            other if other.starts_with('.') => Err(SimError::Unsupported { instruction: other.to_string(), line }),
            other => err(line, format!("unexpected `{other}` at module scope")),
        }
    }

    /// After `.global` etc.: `[.align N] [.vN] .type name[[N]]* [= init];`
    fn var_decl(&mut self, space_word: &str, is_extern: bool, line: usize) -> Result<VarDecl, SimError> {
        let space = match space_word {
            ".global" => Space::Global,
            ".const" => Space::Const,
            ".shared" | ".shared::cta" => Space::Shared,
            ".local" => Space::Local,
            other => return Err(SimError::Unsupported { instruction: other.to_string(), line }),
        };
        let mut align = 0;
        let mut vec = 1;
        let mut ty = None;
        let name = loop {
            let w = self.word()?;
            match w.as_str() {
                ".align" => align = self.alignment()?,
                ".v2" => vec = 2,
                ".v4" => vec = 4,
                ".v8" => vec = 8,
                _ if w.starts_with('.') => match ScalarType::from_suffix(&w[1..]) {
                    Some(t) => ty = Some(t),
                    None => return Err(SimError::Unsupported { instruction: format!("{space_word} {w}"), line }),
                },
                _ => break w,
            }
        };
        let Some(ty) = ty else {
            return err(line, format!("declaration of `{name}` has no type"));
        };
        let elem_size = ty.size() * vec;
        let mut len = Some(1usize);
        while self.eat_punct('[') {
            if self.eat_punct(']') {
                len = None;
            } else {
                let n = self.array_len(len.unwrap_or(1), &name)?;
                self.expect_punct(']')?;
                len = len.map(|_| n);
            }
        }
        let limit = match space {
            Space::Global => MAX_GLOBAL_VARIABLE_BYTES,
            Space::Const => MAX_CONST_BYTES,
            // A larger static variable could never be launched.
            Space::Shared => crate::MAX_SHARED_BYTES,
            Space::Local => MAX_LOCAL_BYTES,
        };
        if let Some(len) = len {
            if !matches!(len.checked_mul(elem_size), Some(bytes) if bytes <= limit) {
                return err(line, format!("`{name}` ({len} elements of {elem_size} bytes) exceeds {limit} bytes of {space_word}"));
            }
        }
        let mut init = Vec::new();
        if self.eat_punct('=') {
            self.initializer(&mut init)?;
        }
        self.expect_punct(';')?;
        Ok(VarDecl {
            space,
            is_extern,
            align: if align == 0 { elem_size } else { align },
            ty,
            elem_size,
            len,
            name,
            init,
            line,
        })
    }

    fn initializer(&mut self, out: &mut Vec<Literal>) -> Result<(), SimError> {
        let line = self.line();
        if self.eat_punct('{') {
            loop {
                self.initializer(out)?;
                if self.eat_punct('}') {
                    return Ok(());
                }
                self.expect_punct(',')?;
            }
        }
        let neg = self.eat_punct('-');
        match self.next()?.tok {
            Tok::Number(n) => match parse_literal(&n) {
                Some(l) => {
                    out.push(if neg { negate(l) } else { l });
                    Ok(())
                }
                None => err(line, format!("bad literal `{n}`")),
            },
            Tok::Word(w) => Err(SimError::Unsupported { instruction: format!("initializer `{w}`"), line }),
            other => err(line, format!("bad initializer {}", describe(&other))),
        }
    }

    fn function(&mut self, is_entry: bool, line: usize) -> Result<Function, SimError> {
        // .func (.param .b32 ret) name (params)
        if !is_entry && self.is_punct('(') {
            self.param_list()?;
        }
        let name = self.word()?;
        let params = if self.is_punct('(') { self.param_list()? } else { Vec::new() };
        let mut f = Function {
            name,
            is_entry,
            line,
            params,
            maxntid: None,
            reqntid: None,
            regs: Vec::new(),
            vars: Vec::new(),
            body: Vec::new(),
            has_body: false,
        };
        // Performance directives up to the body.
        loop {
            match self.peek().cloned() {
                Some(Tok::Punct('{')) => break,
                Some(Tok::Punct(';')) => {
                    self.pos += 1;
                    return Ok(f);
                }
                Some(Tok::Word(w)) if w == ".loc" || w == ".file" => {
                    let l = self.line();
                    self.skip_line(l);
                }
                Some(Tok::Word(w)) if w.starts_with('.') => {
                    self.pos += 1;
                    let mut nums = Vec::new();
                    while let Some(Tok::Number(_)) = self.peek() {
                        let line = self.line();
                        let n = self.number()?;
                        nums.push(u32::try_from(n).map_or_else(|_| err(line, format!("`{w} {n}` is out of range")), Ok)?);
                        if !self.eat_punct(',') {
                            break;
                        }
                    }
                    let dims = [
                        nums.first().copied().unwrap_or(1),
                        nums.get(1).copied().unwrap_or(1),
                        nums.get(2).copied().unwrap_or(1),
                    ];
                    match w.as_str() {
                        ".maxntid" => f.maxntid = Some(dims),
                        ".reqntid" => f.reqntid = Some(dims),
                        _ => {}
                    }
                }
                Some(other) => return err(self.line(), format!("unexpected {} in function header", describe(&other))),
                None => return err(self.line(), "unexpected end of input in function header"),
            }
        }
        self.body(&mut f)?;
        f.has_body = true;
        Ok(f)
    }

    fn param_list(&mut self) -> Result<Vec<ParamDecl>, SimError> {
        self.expect_punct('(')?;
        let mut params = Vec::new();
        if self.eat_punct(')') {
            return Ok(params);
        }
        loop {
            let line = self.line();
            let space = self.word()?;
            if space != ".param" && space != ".reg" {
                return err(line, format!("expected .param, found `{space}`"));
            }
            let mut align = 0;
            let mut ty = None;
            let name = loop {
                let w = self.word()?;
                match w.as_str() {
                    ".align" => {
                        let a = self.alignment()?;
                        // `.ptr .global .align 16` qualifies the pointee, not the parameter.
                        if ty.is_none() {
                            align = a;
                        }
                    }
                    ".ptr" | ".global" | ".const" | ".shared" | ".local" => {}
                    _ if w.starts_with('.') => match ScalarType::from_suffix(&w[1..]) {
                        Some(t) => ty = Some(t),
                        None => return Err(SimError::Unsupported { instruction: format!(".param {w}"), line }),
                    },
                    _ => break w,
                }
            };
            let Some(ty) = ty else {
                return err(line, format!("parameter `{name}` has no type"));
            };
            let mut count = 1;
            if self.eat_punct('[') {
                count = self.array_len(1, &name)?;
                self.expect_punct(']')?;
            }
            let size = match count.checked_mul(ty.size()) {
                Some(size) if size <= MAX_PARAM_BYTES => size,
                _ => return err(line, format!("parameter `{name}` ({count} x {} bytes) exceeds {MAX_PARAM_BYTES} bytes", ty.size())),
            };
            params.push(ParamDecl { name, size, align: if align == 0 { ty.size() } else { align } });
            if self.eat_punct(')') {
                return Ok(params);
            }
            self.expect_punct(',')?;
        }
    }

    fn body(&mut self, f: &mut Function) -> Result<(), SimError> {
        self.expect_punct('{')?;
        let mut scopes = vec![Scope::default()];
        // Label scoping: `{ }` blocks (inline asm) may declare labels that shadow outer ones and
        // repeat in every inlined copy. Every statement remembers its block; nested labels are
        // renamed apart once the body is read (references may come before the label).
        let mut block_stack = vec![0u32];
        let mut parents = vec![0u32];
        let mut stmt_block = Vec::new();
        while !scopes.is_empty() {
            let line = self.line();
            let tok = self.next()?.tok;
            let block = *block_stack.last().unwrap_or(&0);
            while stmt_block.len() < f.body.len() {
                stmt_block.push(block);
            }
            match tok {
                Tok::Punct('{') => {
                    scopes.push(Scope::default());
                    parents.push(block);
                    block_stack.push(parents.len() as u32 - 1);
                }
                Tok::Punct('}') => {
                    scopes.pop();
                    block_stack.pop();
                }
                Tok::Punct('@') => {
                    let neg = self.eat_punct('!');
                    let pline = self.line();
                    let pname = self.word()?;
                    let Some(id) = lookup(&scopes, &pname) else {
                        return err(pline, format!("undeclared guard predicate `{pname}`"));
                    };
                    let opcode = self.word()?;
                    let inst = self.instruction(&scopes, opcode, Some((id, neg)), line)?;
                    f.body.push(Stmt::Inst(inst));
                }
                Tok::Word(w) => match w.as_str() {
                    ".loc" | ".file" => self.skip_line(line),
                    ".pragma" => self.skip_to_semicolon()?,
                    ".reg" => self.reg_decl(f, &mut scopes, line)?,
                    ".local" | ".shared" | ".shared::cta" | ".const" | ".global" => {
                        let v = self.var_decl(&w, false, line)?;
                        f.vars.push(v);
                    }
                    _ if self.is_punct(':') => {
                        self.pos += 1;
                        f.body.push(Stmt::Label { name: w, line });
                    }
                    _ if w.starts_with('.') => {
                        return Err(SimError::Unsupported { instruction: w, line });
                    }
                    _ => {
                        let inst = self.instruction(&scopes, w, None, line)?;
                        f.body.push(Stmt::Inst(inst));
                    }
                },
                other => return err(line, format!("unexpected {} in function body", describe(&other))),
            }
        }
        stmt_block.resize(f.body.len(), 0);
        scope_labels(&mut f.body, &stmt_block, &parents);
        Ok(())
    }

    fn reg_decl(&mut self, f: &mut Function, scopes: &mut [Scope], line: usize) -> Result<(), SimError> {
        let mut ty = None;
        loop {
            let w = self.word()?;
            if let Some(t) = w.strip_prefix('.').and_then(ScalarType::from_suffix) {
                ty = Some(t);
                continue;
            }
            if w.starts_with('.') {
                return Err(SimError::Unsupported { instruction: format!(".reg {w}"), line });
            }
            let Some(ty) = ty else {
                return err(line, format!("register `{w}` declared without a type"));
            };
            let depth = scopes.len();
            let scope = &mut scopes[depth - 1];
            if self.eat_punct('<') {
                let n = self.number()?;
                self.expect_punct('>')?;
                // NVRTC declares a few thousand; far more is a malformed (or hostile) file.
                if n > 1 << 22 || f.regs.len() as u64 + n > 1 << 24 {
                    return err(line, format!("`.reg {w}<{n}>` declares too many registers"));
                }
                let n = n as u32;
                let base = f.regs.len() as u32;
                for _ in 0..n {
                    f.regs.push(RegDecl { ty });
                }
                scope.ranges.push((w, base, n));
            } else {
                let id = f.regs.len() as u32;
                f.regs.push(RegDecl { ty });
                scope.names.insert(w, id);
            }
            if self.eat_punct(';') {
                return Ok(());
            }
            self.expect_punct(',')?;
        }
    }

    fn instruction(
        &mut self,
        scopes: &[Scope],
        opcode: String,
        guard: Option<(u32, bool)>,
        line: usize,
    ) -> Result<RawInst, SimError> {
        let mut operands = Vec::new();
        let start = self.pos;
        match self.operand_list(scopes, &mut operands) {
            Ok(()) => Ok(RawInst { line, guard, opcode, operands, bad_operands: None }),
            Err(SimError::Parse { message, .. }) => {
                // Resynchronise at the end of the statement; the lowering decides what to report.
                self.pos = start;
                self.skip_to_semicolon()?;
                Ok(RawInst { line, guard, opcode, operands: Vec::new(), bad_operands: Some(message) })
            }
            Err(e) => Err(e),
        }
    }

    fn operand_list(&mut self, scopes: &[Scope], operands: &mut Vec<Operand>) -> Result<(), SimError> {
        if self.eat_punct(';') {
            return Ok(());
        }
        loop {
            operands.push(self.operand(scopes)?);
            if self.eat_punct(';') {
                return Ok(());
            }
            let l = self.line();
            match self.next()?.tok {
                Tok::Punct(',') => {}
                other => return err(l, format!("expected `,` or `;` after operand, found {}", describe(&other))),
            }
        }
    }

    fn operand(&mut self, scopes: &[Scope]) -> Result<Operand, SimError> {
        let line = self.line();
        match self.next()?.tok {
            Tok::Punct('{') => {
                let mut items = Vec::new();
                loop {
                    items.push(self.operand(scopes)?);
                    if self.eat_punct('}') {
                        return Ok(Operand::Vector(items));
                    }
                    self.expect_punct(',')?;
                }
            }
            Tok::Punct('[') => self.address(scopes, line),
            Tok::Punct('!') => {
                let name = self.word()?;
                match lookup(scopes, &name) {
                    Some(id) => Ok(Operand::Not(id)),
                    None => err(line, format!("`!` applied to `{name}`, which is not a declared register")),
                }
            }
            Tok::Punct('-') => {
                let n = match self.next()?.tok {
                    Tok::Number(n) => n,
                    other => return err(line, format!("expected a number after `-`, found {}", describe(&other))),
                };
                match parse_literal(&n) {
                    Some(l) => Ok(Operand::Lit(negate(l))),
                    None => err(line, format!("bad literal `{n}`")),
                }
            }
            Tok::Number(n) => match parse_literal(&n) {
                Some(l) => Ok(Operand::Lit(l)),
                None => err(line, format!("bad literal `{n}`")),
            },
            Tok::Word(w) => {
                if w == "_" {
                    if self.eat_punct('|') {
                        let second = self.word()?;
                        return match lookup(scopes, &second) {
                            Some(id) => Ok(Operand::SinkPair(id)),
                            None => err(line, format!("undeclared register `{second}`")),
                        };
                    }
                    return Ok(Operand::Sink);
                }
                if let Some(id) = lookup(scopes, &w) {
                    if self.eat_punct('|') {
                        let second = self.word()?;
                        return match lookup(scopes, &second) {
                            Some(id2) => Ok(Operand::Pair(id, id2)),
                            None => err(line, format!("undeclared register `{second}`")),
                        };
                    }
                    return Ok(Operand::Reg(id));
                }
                if is_special_register(&w) {
                    return Ok(Operand::Special(w));
                }
                if w.starts_with('%') {
                    return err(line, format!("undeclared register `{w}`"));
                }
                Ok(Operand::Symbol(w))
            }
            other => err(line, format!("unexpected {} as operand", describe(&other))),
        }
    }

    /// After `[`: `reg`, `symbol`, `reg+imm`, `reg+-imm`, `reg-imm`, `imm`.
    fn address(&mut self, scopes: &[Scope], line: usize) -> Result<Operand, SimError> {
        let mut base = None;
        let mut offset: i64 = 0;
        match self.peek().cloned() {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                base = Some(match lookup(scopes, &w) {
                    Some(id) => AddrBase::Reg(id),
                    None if w.starts_with('%') => return err(line, format!("undeclared register `{w}`")),
                    None => AddrBase::Symbol(w),
                });
                if self.eat_punct('+') {
                    offset = self.signed_int()?;
                } else if self.eat_punct('-') {
                    offset = self.signed_int()?.wrapping_neg();
                }
            }
            Some(Tok::Number(_)) | Some(Tok::Punct('-')) => offset = self.signed_int()?,
            _ => {}
        }
        let l = self.line();
        match self.next()?.tok {
            Tok::Punct(']') => Ok(Operand::Address { base, offset }),
            // `[tensorMap, {c0, ...}]`
            Tok::Punct(',') if self.is_punct('{') => {
                let coords = match self.operand(scopes)? {
                    Operand::Vector(v) => v,
                    other => vec![other],
                };
                self.expect_punct(']')?;
                Ok(Operand::TensorAddr { base, offset, coords })
            }
            other => err(l, format!("expected `]`, found {}", describe(&other))),
        }
    }

    fn signed_int(&mut self) -> Result<i64, SimError> {
        let neg = self.eat_punct('-');
        let v = self.number()? as i64;
        Ok(if neg { v.wrapping_neg() } else { v })
    }
}

/// Renames labels declared inside nested `{ }` blocks apart (`name%block`), and every reference
/// to them: a name refers to the label of the innermost enclosing block that declares it, as in
/// PTX. Labels of the function's own block keep their names.
fn scope_labels(body: &mut [Stmt], stmt_block: &[u32], parents: &[u32]) {
    let mut nested: HashMap<(u32, String), String> = HashMap::new();
    for (stmt, &b) in body.iter_mut().zip(stmt_block) {
        if let Stmt::Label { name, .. } = stmt {
            if b != 0 {
                let unique = format!("{name}%{b}");
                nested.insert((b, std::mem::replace(name, unique.clone())), unique);
            }
        }
    }
    if nested.is_empty() {
        return;
    }
    for (stmt, &b) in body.iter_mut().zip(stmt_block) {
        let Stmt::Inst(inst) = stmt else { continue };
        for op in inst.operands.iter_mut() {
            let Operand::Symbol(name) = op else { continue };
            let mut block = b;
            loop {
                if let Some(unique) = nested.get(&(block, name.clone())) {
                    *name = unique.clone();
                    break;
                }
                if block == 0 {
                    break;
                }
                block = parents[block as usize];
            }
        }
    }
}

/// Finds a register by name, innermost scope first.
fn lookup(scopes: &[Scope], name: &str) -> Option<u32> {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (prefix, index) = name.split_at(name.len() - digits);
    let index: Option<u32> = if digits > 0 { index.parse().ok() } else { None };
    for scope in scopes.iter().rev() {
        if let Some(&id) = scope.names.get(name) {
            return Some(id);
        }
        if let Some(i) = index {
            for (p, base, n) in &scope.ranges {
                if p == prefix && i < *n {
                    return Some(base + i);
                }
            }
        }
    }
    None
}

fn negate(l: Literal) -> Literal {
    match l {
        Literal::Int(v) => Literal::Int(v.wrapping_neg()),
        Literal::F32Bits(b) => Literal::F32Bits(b ^ 0x8000_0000),
        Literal::F64Bits(b) => Literal::F64Bits(b ^ (1 << 63)),
        Literal::Float(f) => Literal::Float(-f),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("`{w}`"),
        Tok::Number(n) => format!("number `{n}`"),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::Punct(c) => format!("`{c}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
.version 9.0
.target sm_80
.address_size 64
.global .align 4 .u32 counter = 16;
.extern .shared .align 128 .b8 smem[];
.visible .entry k(
	.param .align 8 .b8 k_param_0[152],
	.param .u32 k_param_1
)
.maxntid 256, 1, 1
{
	.reg .pred 	%p<3>;
	.reg .b32 	%r<10>;
	.reg .b64 	%rd<4>;
	.loc	1 465 0
	mov.u32 	%r1, %tid.x;
	{ .reg .u64 a; cvta.to.shared.u64 a, %rd1; cvt.u32.u64 %r2, a; }
	{ .reg .u64 a; cvta.to.shared.u64 a, %rd2; cvt.u32.u64 %r3, a; }
	setp.lt.s32 	%p1|%p2, %r1, -3;
	@!%p1 bra 	$L__BB0_2;
	ld.param.v2.u32 	{%r4, %r5}, [k_param_0+136];
	ld.param.u64 	%rd3, [%rd1+-88];
$L__BB0_2:
	ret;
}
	.section	.debug_str
	{
$L__info_string0:
.b8 95,90,0
	}
"#;

    #[test]
    fn parses_structure() {
        let m = parse_module(SMALL).unwrap();
        assert_eq!(m.version.as_deref(), Some("9.0"));
        assert_eq!(m.target, vec!["sm_80".to_string()]);
        assert_eq!(m.vars.len(), 2);
        assert!(m.vars[1].is_extern && m.vars[1].len.is_none() && m.vars[1].align == 128);
        let f = &m.functions[0];
        assert_eq!(f.name, "k");
        assert_eq!(f.params.len(), 2);
        assert_eq!((f.params[0].size, f.params[0].align), (152, 8));
        assert_eq!(f.maxntid, Some([256, 1, 1]));
        // 3 + 10 + 4 declared, plus two scoped `a`.
        assert_eq!(f.regs.len(), 19);
        let insts: Vec<&RawInst> = f
            .body
            .iter()
            .filter_map(|s| match s {
                Stmt::Inst(i) => Some(i),
                _ => None,
            })
            .collect();
        // The two inline-asm `a`s are different registers.
        assert_ne!(insts[1].operands[0], insts[3].operands[0]);
        assert_eq!(insts[1].operands[0], insts[2].operands[1]);
        assert_eq!(insts[5].operands[0], Operand::Pair(1, 2));
        assert_eq!(insts[5].operands[2], Operand::Lit(Literal::Int((-3i64) as u64)));
        assert_eq!(insts[6].guard, Some((1, true)));
        assert_eq!(
            insts[7].operands[1],
            Operand::Address { base: Some(AddrBase::Symbol("k_param_0".into())), offset: 136 }
        );
        assert_eq!(insts[8].operands[1], Operand::Address { base: Some(AddrBase::Reg(14)), offset: -88 });
        assert_eq!(insts[8].line, 23);
    }

    #[test]
    fn errors_name_the_line() {
        // Operand errors surface when the instruction is lowered (an unknown opcode with odd
        // operands is "unsupported", a known one a parse error).
        let bad = ".version 9.0\n.target sm_80\n.entry k()\n{\n .reg .b32 %r<2>;\n mov.u32 %r5, 1;\n}\n";
        match crate::Module::parse(bad) {
            Err(SimError::Parse { line, message }) => {
                assert_eq!(line, 6);
                assert!(message.contains("%r5"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let bad = ".entry k()\n{\n mov.u32 %r1 1;\n}\n";
        assert!(matches!(crate::Module::parse(bad), Err(SimError::Parse { line: 3, .. })));
        let bad = ".entry k()\n{\n ret;\n";
        assert!(matches!(parse_module(bad), Err(SimError::Parse { .. })));
    }
}
