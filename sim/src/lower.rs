//! Lowering: the parsed tree to [`Kernel`]s of pre-decoded instructions.
//!
//! This is where every opcode and modifier is checked: an instruction the interpreter cannot run
//! exactly as written is [`SimError::Unsupported`] here, with its PTX line, never a silently different
//! result at run time. Modifiers that only steer caching or memory ordering (`.nc`, `.L2::128B`,
//! `.relaxed.gpu`, ...) are accepted and ignored: the simulator is sequentially consistent per CTA.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::SimError;
use crate::ir::*;
use crate::lex::Literal;
use crate::memory::Allocation;
use crate::numerics;
use crate::parse::{AddrBase, Function, Operand, PtxModule, RawInst, ScalarType, Space, Stmt, VarDecl};

/// A lowered module: its kernels and the storage of its `.global` / `.const` variables.
#[derive(Debug)]
pub(crate) struct Lowered {
    pub kernels: Vec<Kernel>,
    pub globals: Vec<Arc<Allocation>>,
}

/// PTX types as they appear in opcode modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Pred,
    B(u8),
    U(u8),
    S(u8),
    F16,
    Bf16,
    F32,
    F64,
    F16x2,
    Bf16x2,
}

impl Ty {
    fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "pred" => Ty::Pred,
            "b8" => Ty::B(8),
            "b16" => Ty::B(16),
            "b32" => Ty::B(32),
            "b64" => Ty::B(64),
            "b128" => Ty::B(128),
            "u8" => Ty::U(8),
            "u16" => Ty::U(16),
            "u32" => Ty::U(32),
            "u64" => Ty::U(64),
            "s8" => Ty::S(8),
            "s16" => Ty::S(16),
            "s32" => Ty::S(32),
            "s64" => Ty::S(64),
            "f16" => Ty::F16,
            "bf16" => Ty::Bf16,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "f16x2" => Ty::F16x2,
            "bf16x2" => Ty::Bf16x2,
            _ => return None,
        })
    }

    pub(crate) fn bits(self) -> u8 {
        match self {
            Ty::Pred => 1,
            Ty::B(n) | Ty::U(n) | Ty::S(n) => n,
            Ty::F16 | Ty::Bf16 => 16,
            Ty::F32 | Ty::F16x2 | Ty::Bf16x2 => 32,
            Ty::F64 => 64,
        }
    }

    fn is_int(self) -> bool {
        matches!(self, Ty::B(_) | Ty::U(_) | Ty::S(_))
    }

    fn signed(self) -> bool {
        matches!(self, Ty::S(_))
    }

    fn num(self) -> Option<NumTy> {
        Some(match self {
            Ty::B(n) | Ty::U(n) if n <= 64 => NumTy::Int { bits: n, signed: false },
            Ty::S(n) => NumTy::Int { bits: n, signed: true },
            Ty::F16 => NumTy::F16,
            Ty::Bf16 => NumTy::Bf16,
            Ty::F32 => NumTy::F32,
            Ty::F64 => NumTy::F64,
            _ => return None,
        })
    }
}

fn mask(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Opcode modifiers, each of which must be consumed by the lowering of its instruction.
struct Mods<'s> {
    opcode: &'s str,
    parts: Vec<&'s str>,
    used: Vec<bool>,
    line: usize,
}

impl<'s> Mods<'s> {
    fn new(opcode: &'s str, line: usize) -> Mods<'s> {
        let parts: Vec<&str> = opcode.split('.').skip(1).collect();
        let used = vec![false; parts.len()];
        Mods { opcode, parts, used, line }
    }

    fn unsupported<T>(&self) -> Result<T, SimError> {
        Err(SimError::Unsupported { instruction: self.opcode.to_string(), line: self.line })
    }

    /// Consumes modifier `m` (every occurrence); whether it was there.
    fn has(&mut self, m: &str) -> bool {
        let mut found = false;
        for (p, u) in self.parts.iter().zip(self.used.iter_mut()) {
            if *p == m && !*u {
                *u = true;
                found = true;
            }
        }
        found
    }

    /// Consumes the first unused modifier from `set`.
    fn take(&mut self, set: &[&str]) -> Option<&'s str> {
        for (p, u) in self.parts.iter().zip(self.used.iter_mut()) {
            if !*u && set.contains(p) {
                *u = true;
                return Some(p);
            }
        }
        None
    }

    /// Consumes every unused modifier for which `f` holds.
    fn ignore(&mut self, f: impl Fn(&str) -> bool) {
        for (p, u) in self.parts.iter().zip(self.used.iter_mut()) {
            if !*u && f(p) {
                *u = true;
            }
        }
    }

    /// Consumes all type modifiers, in order.
    fn types(&mut self) -> Vec<Ty> {
        let mut out = Vec::new();
        for (p, u) in self.parts.iter().zip(self.used.iter_mut()) {
            if !*u {
                if let Some(t) = Ty::parse(p) {
                    *u = true;
                    out.push(t);
                }
            }
        }
        out
    }

    /// Exactly one type modifier.
    fn ty(&mut self) -> Result<Ty, SimError> {
        let t = self.types();
        if t.len() == 1 {
            Ok(t[0])
        } else {
            self.unsupported()
        }
    }

    fn rnd(&mut self) -> Rnd {
        match self.take(&["rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi", "rna"]) {
            Some("rn") => Rnd::Rn,
            Some("rz") => Rnd::Rz,
            Some("rm") => Rnd::Rm,
            Some("rp") => Rnd::Rp,
            Some("rni") => Rnd::Rni,
            Some("rzi") => Rnd::Rzi,
            Some("rmi") => Rnd::Rmi,
            Some("rpi") => Rnd::Rpi,
            Some("rna") => Rnd::Rna,
            _ => Rnd::Default,
        }
    }

    fn float_flags(&mut self) -> u8 {
        let mut f = 0;
        if self.has("ftz") {
            f |= FTZ;
        }
        if self.has("sat") {
            f |= SAT;
        }
        f
    }

    /// Memory-ordering, scope and cache modifiers: no effect in the simulator.
    fn ignore_memory_hints(&mut self) {
        self.ignore(|p| {
            matches!(
                p,
                "weak" | "volatile" | "relaxed" | "acquire" | "release" | "acq_rel" | "sc" | "cta" | "gpu"
                    | "sys" | "cluster" | "ca" | "cg" | "cs" | "lu" | "cv" | "wb" | "wt" | "nc" | "mmio"
            ) || p.starts_with("L1::")
                || (p.starts_with("L2::") && p != "L2::cache_hint")
        });
    }

    fn space(&mut self) -> Sp {
        match self.take(&["global", "shared", "shared::cta", "local", "param", "param::entry", "param::func", "const"]) {
            Some("global") => Sp::Global,
            Some("shared") | Some("shared::cta") => Sp::Shared,
            Some("local") => Sp::Local,
            Some("param") | Some("param::entry") | Some("param::func") => Sp::Param,
            Some("const") => Sp::Const,
            _ => Sp::Generic,
        }
    }

    /// Consumes the state-space modifiers among `global`, `shared{::cta,::cluster}` and returns
    /// them in the order written (a bulk copy names its destination first).
    fn spaces_in_order(&mut self) -> Vec<&'s str> {
        let mut out = Vec::new();
        for (p, u) in self.parts.iter().zip(self.used.iter_mut()) {
            if !*u && matches!(*p, "global" | "shared" | "shared::cta" | "shared::cluster") {
                *u = true;
                out.push(*p);
            }
        }
        out
    }

    /// An unsupported form with an explanation.
    fn unsupported_because<T>(&self, why: &str) -> Result<T, SimError> {
        Err(SimError::Unsupported { instruction: format!("{} ({why})", self.opcode), line: self.line })
    }

    fn finish(&self) -> Result<(), SimError> {
        if self.used.iter().all(|&u| u) {
            Ok(())
        } else {
            self.unsupported()
        }
    }
}

/// Lowers every `.entry` of the module.
pub(crate) fn lower_module(m: &PtxModule) -> Result<Lowered, SimError> {
    // Module-scope .global / .const variables: one allocation each in the module window.
    let mut globals = Vec::new();
    let mut syms: HashMap<String, u64> = HashMap::new();
    let mut next = window::MODULE << window::SHIFT;
    for v in m.vars.iter().filter(|v| matches!(v.space, Space::Global | Space::Const)) {
        if v.is_extern {
            return Err(SimError::Unsupported { instruction: format!(".extern .global {}", v.name), line: v.line });
        }
        let size = v.size().max(1);
        let base = next.div_ceil(256) * 256;
        next = base + size as u64 + 256;
        let alloc = Allocation::new(base, size, v.space == Space::Global);
        alloc.write(0, &init_bytes(v)?);
        globals.push(Arc::new(alloc));
        syms.insert(v.name.clone(), base);
    }
    let shared: Vec<&VarDecl> = m.vars.iter().filter(|v| v.space == Space::Shared).collect();
    if let Some(v) = m.vars.iter().find(|v| v.space == Space::Local) {
        return Err(SimError::Unsupported { instruction: format!(".local {} at module scope", v.name), line: v.line });
    }
    let mut kernels = Vec::new();
    for f in m.functions.iter().filter(|f| f.is_entry && f.has_body) {
        kernels.push(lower_function(f, &syms, &shared)?);
    }
    Ok(Lowered { kernels, globals })
}

/// The bytes of a variable's initializer (zero-padded to its size).
fn init_bytes(v: &VarDecl) -> Result<Vec<u8>, SimError> {
    let mut out = vec![0u8; v.size()];
    let elem = v.ty.size();
    for (i, lit) in v.init.iter().enumerate() {
        let bits = match v.ty {
            ScalarType::F32 => lit_bits(*lit, Ty::F32),
            ScalarType::F64 => lit_bits(*lit, Ty::F64),
            _ => lit_bits(*lit, Ty::B((elem * 8).min(64) as u8)),
        }
        .ok_or_else(|| SimError::Parse { line: v.line, message: format!("bad initializer of `{}`", v.name) })?;
        let start = i * elem;
        if start + elem.min(8) > out.len() {
            return Err(SimError::Parse { line: v.line, message: format!("too many initializers for `{}`", v.name) });
        }
        out[start..start + elem.min(8)].copy_from_slice(&bits.to_le_bytes()[..elem.min(8)]);
    }
    Ok(out)
}

/// The bits of a literal used as an operand of type `ty` (None: not representable).
fn lit_bits(l: Literal, ty: Ty) -> Option<u64> {
    Some(match ty {
        Ty::F32 => match l {
            Literal::Int(v) => (v as i64 as f32).to_bits() as u64,
            Literal::F32Bits(b) => b as u64,
            Literal::F64Bits(b) => (f64::from_bits(b) as f32).to_bits() as u64,
            Literal::Float(x) => (x as f32).to_bits() as u64,
        },
        Ty::F64 => match l {
            Literal::Int(v) => (v as i64 as f64).to_bits(),
            Literal::F32Bits(b) => (f32::from_bits(b) as f64).to_bits(),
            Literal::F64Bits(b) => b,
            Literal::Float(x) => x.to_bits(),
        },
        Ty::F16 | Ty::Bf16 => {
            let x = match l {
                Literal::Int(v) => v as i64 as f64,
                Literal::F32Bits(b) => f32::from_bits(b) as f64,
                Literal::F64Bits(b) => f64::from_bits(b),
                Literal::Float(x) => x,
            };
            let bf = ty == Ty::Bf16;
            match l {
                // A hex literal of the register's width is its bits.
                Literal::Int(v) if v <= 0xffff => v,
                _ => numerics::round_to_format(x, if bf { 8 } else { 5 }, if bf { 7 } else { 10 }, Rnd::Rn, 0),
            }
        }
        Ty::Pred => match l {
            Literal::Int(v) => (v != 0) as u64,
            _ => return None,
        },
        _ => match l {
            Literal::Int(v) => v & mask(ty.bits()),
            Literal::F32Bits(b) => b as u64 & mask(ty.bits()),
            Literal::F64Bits(b) => b & mask(ty.bits()),
            Literal::Float(_) => return None,
        },
    })
}

/// Opcode families the lowering handles (some forms of them may still be unsupported).
const KNOWN: &[&str] = &[
    "mov", "add", "sub", "mul", "mad", "fma", "div", "rem", "min", "max", "abs", "neg", "addc", "subc", "and", "or",
    "xor", "not", "cnot", "shl", "shr", "bfe", "bfi", "brev", "popc", "clz", "bfind", "prmt", "shf", "setp", "set",
    "selp", "testp", "copysign", "rcp", "sqrt", "rsqrt", "ex2", "lg2", "sin", "cos", "tanh", "cvt", "cvta",
    "isspacep", "ld", "ldu", "st", "atom", "red", "cp", "ldmatrix", "mma", "shfl", "vote", "redux", "match",
    "activemask", "bar", "barrier", "membar", "fence", "nanosleep", "prefetch", "prefetchu", "pmevent",
    "griddepcontrol", "bra", "ret", "exit", "trap", "mbarrier", "elect", "setmaxnreg", "stmatrix",
    "wgmma",
];

struct Lx<'a> {
    f: &'a Function,
    code: Vec<Inst>,
    pool: Vec<u32>,
    offsets: Vec<i64>,
    consts: HashMap<u64, u32>,
    init: Vec<u64>,
    /// Symbol name -> the value `mov d, name` gives (its address in its own state space).
    syms: HashMap<String, u64>,
    labels: HashMap<String, usize>,
    fixups: Vec<(usize, String, usize)>,
    line: usize,
}

fn lower_function(f: &Function, module_syms: &HashMap<String, u64>, module_shared: &[&VarDecl]) -> Result<Kernel, SimError> {
    let mut syms = module_syms.clone();
    // Parameters: offsets in the parameter buffer, which is the param state space.
    let mut params = Vec::new();
    let mut off = 0usize;
    for p in &f.params {
        let align = p.align.max(1);
        off = off.div_ceil(align) * align;
        params.push(ParamInfo { name: p.name.clone(), size: p.size, align, offset: off });
        syms.insert(p.name.clone(), off as u64);
        off += p.size;
    }
    let param_bytes = off;
    if param_bytes > crate::parse::MAX_PARAM_BYTES {
        let limit = crate::parse::MAX_PARAM_BYTES;
        return Err(SimError::Parse { line: f.line, message: format!("the parameters take {param_bytes} bytes, more than {limit}") });
    }
    // Shared memory: static variables from offset 0, then the dynamic region, where every extern
    // array starts.
    let mut shared_off = 0usize;
    let mut dyn_align = 16usize;
    let mut externs = Vec::new();
    for v in module_shared.iter().copied().chain(f.vars.iter().filter(|v| v.space == Space::Shared)) {
        if v.is_extern || v.len.is_none() {
            dyn_align = dyn_align.max(v.align);
            externs.push(v.name.clone());
            continue;
        }
        let a = v.align.max(1);
        shared_off = shared_off.div_ceil(a) * a;
        syms.insert(v.name.clone(), shared_off as u64);
        shared_off += v.size();
    }
    let dynamic_base = shared_off.div_ceil(dyn_align) * dyn_align;
    for name in externs {
        syms.insert(name, dynamic_base as u64);
    }
    let mut local_off = 0usize;
    for v in f.vars.iter() {
        match v.space {
            Space::Local => {
                let a = v.align.max(1);
                local_off = local_off.div_ceil(a) * a;
                syms.insert(v.name.clone(), local_off as u64);
                local_off += v.size();
                if local_off > crate::parse::MAX_LOCAL_BYTES {
                    let limit = crate::parse::MAX_LOCAL_BYTES;
                    return Err(SimError::Parse { line: v.line, message: format!(".local variables take more than {limit} bytes") });
                }
            }
            Space::Shared => {}
            _ => {
                return Err(SimError::Unsupported { instruction: format!("function-scope variable `{}`", v.name), line: v.line })
            }
        }
    }

    let nregs = special::COUNT as usize + f.regs.len();
    let mut lx = Lx {
        f,
        code: Vec::with_capacity(f.body.len() + 1),
        pool: Vec::new(),
        offsets: Vec::new(),
        consts: HashMap::new(),
        init: vec![0; nregs],
        syms,
        labels: HashMap::new(),
        fixups: Vec::new(),
        line: f.line,
    };
    for stmt in &f.body {
        match stmt {
            Stmt::Label { name, line } => {
                if lx.labels.insert(name.clone(), lx.code.len()).is_some() {
                    return Err(SimError::Parse { line: *line, message: format!("label `{name}` defined twice") });
                }
            }
            Stmt::Inst(raw) => {
                lx.line = raw.line;
                lx.inst(raw)?;
            }
        }
    }
    // Falling off the end of the body returns.
    let end_line = f.body.last().map(|s| match s {
        Stmt::Inst(i) => i.line,
        Stmt::Label { line, .. } => *line,
    });
    lx.code.push(Inst::new(Op::Exit, end_line.unwrap_or(f.line)));
    for (at, label, line) in std::mem::take(&mut lx.fixups) {
        match lx.labels.get(&label) {
            Some(&target) => lx.code[at].imm = target as i64,
            None => return Err(SimError::Parse { line, message: format!("branch to undefined label `{label}`") }),
        }
    }
    let mut code = lx.code;
    let mut pool = lx.pool;
    crate::wgmma::link_waits(&mut code, &mut pool)
        .map_err(|why| SimError::Unsupported { instruction: format!("wgmma ({why})"), line: f.line })?;
    let init_regs = crate::regalloc::allocate(&mut code, &mut pool, f.regs.len(), &lx.init);
    Ok(Kernel {
        name: f.name.clone(),
        params,
        param_bytes,
        code,
        pool,
        offsets: lx.offsets,
        init_regs,
        static_shared_bytes: shared_off,
        dynamic_shared_base: dynamic_base,
        local_bytes: local_off,
        maxntid: f.maxntid,
        reqntid: f.reqntid,
    })
}

impl<'a> Lx<'a> {
    fn perr<T>(&self, message: impl Into<String>) -> Result<T, SimError> {
        Err(SimError::Parse { line: self.line, message: message.into() })
    }

    fn reg_slot(&self, id: u32) -> u32 {
        special::COUNT + id
    }

    fn reg_bits(&self, id: u32) -> u8 {
        match self.f.regs[id as usize].ty {
            ScalarType::Pred => 1,
            t => (t.size() * 8).min(64) as u8,
        }
    }

    fn constant(&mut self, v: u64) -> u32 {
        if let Some(&s) = self.consts.get(&v) {
            return s;
        }
        let s = self.init.len() as u32;
        self.init.push(v);
        self.consts.insert(v, s);
        s
    }

    fn special(&self, name: &str) -> Result<u32, SimError> {
        use special::*;
        let comp = |base: u32| -> u32 {
            match name.rsplit_once('.').map(|(_, c)| c) {
                Some("y") => base + 1,
                Some("z") => base + 2,
                _ => base,
            }
        };
        Ok(match name.split('.').next().unwrap_or("") {
            "%tid" => comp(TID),
            "%ntid" => comp(NTID),
            "%ctaid" => comp(CTAID),
            "%nctaid" => comp(NCTAID),
            "%laneid" => LANEID,
            "%warpid" => WARPID,
            "%nwarpid" => NWARPID,
            "%smid" => SMID,
            "%nsmid" => NSMID,
            "%gridid" => GRIDID,
            "%lanemask_eq" => LANEMASK_EQ,
            "%lanemask_le" => LANEMASK_LE,
            "%lanemask_lt" => LANEMASK_LT,
            "%lanemask_ge" => LANEMASK_GE,
            "%lanemask_gt" => LANEMASK_GT,
            "%dynamic_smem_size" => DYNAMIC_SMEM_SIZE,
            "%total_smem_size" => TOTAL_SMEM_SIZE,
            "%warpsize" | "WARP_SZ" => WARPSIZE,
            _ => return Err(SimError::Unsupported { instruction: name.to_string(), line: self.line }),
        })
    }

    /// A source operand of type `ty`.
    fn src(&mut self, op: &Operand, ty: Ty) -> Result<u32, SimError> {
        match op {
            Operand::Reg(id) => Ok(self.reg_slot(*id)),
            Operand::Special(name) => self.special(name),
            Operand::Lit(l) => match lit_bits(*l, ty) {
                Some(v) => Ok(self.constant(v)),
                None => self.perr(format!("literal {l:?} is not a valid {ty:?} operand")),
            },
            Operand::Symbol(name) => match self.syms.get(name) {
                Some(&addr) => Ok(self.constant(addr & mask(ty.bits()))),
                None => self.perr(format!("unknown symbol `{name}`")),
            },
            other => self.perr(format!("unexpected operand {other:?}")),
        }
    }

    /// A predicate source that may be negated (`!%p`): (slot, negated).
    fn pred_src(&mut self, op: &Operand) -> Result<(u32, bool), SimError> {
        match op {
            Operand::Not(id) => Ok((self.reg_slot(*id), true)),
            other => Ok((self.src(other, Ty::Pred)?, false)),
        }
    }

    fn dst(&self, op: &Operand) -> Result<u32, SimError> {
        match op {
            Operand::Reg(id) => Ok(self.reg_slot(*id)),
            Operand::Sink => Ok(special::SINK),
            other => self.perr(format!("expected a destination register, found {other:?}")),
        }
    }

    /// `[base+offset]` -> (base slot, offset).
    fn addr(&mut self, op: &Operand) -> Result<(u32, i64), SimError> {
        match op {
            Operand::Address { base, offset } => {
                let slot = match base {
                    Some(AddrBase::Reg(id)) => self.reg_slot(*id),
                    Some(AddrBase::Symbol(name)) => match self.syms.get(name) {
                        Some(&a) => self.constant(a),
                        None => return self.perr(format!("unknown symbol `{name}`")),
                    },
                    None => self.constant(0),
                };
                Ok((slot, *offset))
            }
            other => self.perr(format!("expected an address operand, found {other:?}")),
        }
    }

    /// Elements of a vector operand (a scalar counts as a vector of one).
    fn elems<'o>(&self, op: &'o Operand) -> Vec<&'o Operand> {
        match op {
            Operand::Vector(v) => v.iter().collect(),
            other => vec![other],
        }
    }

    fn push_pool(&mut self, slots: &[u32]) -> u32 {
        let at = self.pool.len() as u32;
        self.pool.extend_from_slice(slots);
        at
    }

    fn emit(&mut self, raw: &RawInst, mut inst: Inst) {
        if let Some((id, neg)) = raw.guard {
            inst.guard = self.reg_slot(id) | if neg { GUARD_NEG } else { 0 };
        }
        self.code.push(inst);
    }

    fn new_inst(&self, op: Op) -> Inst {
        Inst::new(op, self.line)
    }

    fn nops(&self, raw: &RawInst, n: &[usize]) -> Result<(), SimError> {
        if n.contains(&raw.operands.len()) {
            Ok(())
        } else {
            self.perr(format!("`{}` takes {:?} operands, found {}", raw.opcode, n, raw.operands.len()))
        }
    }

    /// d = op(a, b[, c]) with all operands of type `ty`.
    fn simple(&mut self, raw: &RawInst, op: Op, ty: Ty, n: usize) -> Result<(), SimError> {
        self.nops(raw, &[n + 1])?;
        let mut inst = self.new_inst(op);
        inst.d = self.dst(&raw.operands[0])?;
        inst.a = self.src(&raw.operands[1], ty)?;
        if n > 1 {
            inst.b = self.src(&raw.operands[2], ty)?;
        }
        if n > 2 {
            inst.c = self.src(&raw.operands[3], ty)?;
        }
        self.emit(raw, inst);
        Ok(())
    }

    fn inst(&mut self, raw: &RawInst) -> Result<(), SimError> {
        let opcode = raw.opcode.as_str();
        let base = opcode.split('.').next().unwrap_or("");
        let mut m = Mods::new(opcode, raw.line);
        if let Some(message) = &raw.bad_operands {
            return if KNOWN.contains(&base) { self.perr(message.clone()) } else { m.unsupported() };
        }
        match base {
            "mov" => self.mov(raw, &mut m),
            "add" | "sub" | "mul" | "mad" | "fma" | "div" | "rem" | "min" | "max" | "abs" | "neg" | "addc"
            | "subc" => self.arith(raw, base, &mut m),
            "and" | "or" | "xor" | "not" | "cnot" | "shl" | "shr" | "bfe" | "bfi" | "brev" | "popc" | "clz"
            | "bfind" | "prmt" | "shf" => self.bits(raw, base, &mut m),
            "setp" | "set" => self.setp(raw, base == "set", &mut m),
            "selp" => {
                let ty = m.ty()?;
                m.finish()?;
                self.nops(raw, &[4])?;
                let mut inst = self.new_inst(Op::Selp);
                inst.d = self.dst(&raw.operands[0])?;
                inst.a = self.src(&raw.operands[1], ty)?;
                inst.b = self.src(&raw.operands[2], ty)?;
                inst.c = self.src(&raw.operands[3], Ty::Pred)?;
                self.emit(raw, inst);
                Ok(())
            }
            "testp" => {
                let what = match m.take(&["finite", "infinite", "number", "notanumber", "normal", "subnormal"]) {
                    Some("finite") => 0,
                    Some("infinite") => 1,
                    Some("number") => 2,
                    Some("notanumber") => 3,
                    Some("normal") => 4,
                    Some("subnormal") => 5,
                    _ => return m.unsupported(),
                };
                let ty = m.ty()?;
                m.finish()?;
                if !matches!(ty, Ty::F32 | Ty::F64) {
                    return m.unsupported();
                }
                self.simple(raw, Op::Testp { f64: ty == Ty::F64, what }, ty, 1)
            }
            "copysign" => {
                let ty = m.ty()?;
                m.finish()?;
                match ty {
                    Ty::F32 => self.simple(raw, Op::CopysignF32, ty, 2),
                    Ty::F64 => self.simple(raw, Op::CopysignF64, ty, 2),
                    _ => m.unsupported(),
                }
            }
            "rcp" | "sqrt" | "rsqrt" | "ex2" | "lg2" | "sin" | "cos" | "tanh" => self.fun(raw, base, &mut m),
            "cvt" => self.cvt(raw, &mut m),
            "cvta" => {
                let to = m.has("to");
                let space = m.space();
                let ty = m.ty()?;
                m.finish()?;
                if space == Sp::Generic || !matches!(ty, Ty::U(32) | Ty::U(64)) {
                    return m.unsupported();
                }
                self.simple(raw, Op::Cvta { to, space }, ty, 1)
            }
            "isspacep" => {
                let space = m.space();
                m.finish()?;
                if space == Sp::Generic {
                    return m.unsupported();
                }
                self.simple(raw, Op::IsSpace { space }, Ty::U(64), 1)
            }
            "ld" | "ldu" => self.ld(raw, base == "ldu", &mut m),
            "st" => self.st(raw, &mut m),
            "atom" | "red" => self.atom(raw, base == "atom", &mut m),
            "cp" => self.cp_async(raw, &mut m),
            "ldmatrix" => self.ldmatrix(raw, &mut m),
            "mma" => self.mma(raw, &mut m),
            "wgmma" => self.wgmma(raw, &mut m),
            "shfl" | "vote" | "redux" | "match" | "activemask" => self.warp(raw, base, &mut m),
            "bar" | "barrier" => self.bar(raw, &mut m),
            "membar" | "fence" => {
                // fence.proxy.async{.shared::cta|.shared::cluster} (and the generic->async
                // direction of the uni-directional forms) orders generic-proxy writes before
                // async-proxy reads of shared memory; `.global` alone does not concern shared
                // memory. Every other fence is a no-op: execution is sequentially consistent.
                let proxy = m.has("proxy");
                let async_kind = m.take(&["async", "async::generic"]).is_some();
                let global_only = m.has("global") && !m.has("shared::cta") && !m.has("shared::cluster");
                m.ignore(|_| true);
                let op = if proxy && async_kind && !global_only { Op::FenceProxyAsync } else { Op::Nop };
                self.emit(raw, self.new_inst(op));
                Ok(())
            }
            "mbarrier" => self.mbarrier(raw, &mut m),
            "elect" => {
                let ok = m.has("sync");
                m.finish()?;
                if !ok {
                    return m.unsupported();
                }
                self.nops(raw, &[2])?;
                let (d, p) = match &raw.operands[0] {
                    Operand::Pair(d, p) => (self.reg_slot(*d), self.reg_slot(*p)),
                    Operand::SinkPair(p) => (special::SINK, self.reg_slot(*p)),
                    other => (self.dst(other)?, special::SINK),
                };
                let mut inst = self.new_inst(Op::Coll(Coll::Elect));
                inst.d = d;
                inst.b = p;
                inst.c = self.src(&raw.operands[1], Ty::B(32))?;
                self.emit(raw, inst);
                Ok(())
            }
            "setmaxnreg" => {
                let inc = match m.take(&["inc", "dec"]) {
                    Some("inc") => true,
                    Some(_) => false,
                    None => return m.unsupported(),
                };
                let ok = m.has("sync") & m.has("aligned");
                let ty = m.ty()?;
                m.finish()?;
                if !ok || ty != Ty::U(32) {
                    return m.unsupported();
                }
                self.nops(raw, &[1])?;
                let n = match raw.operands[0] {
                    Operand::Lit(Literal::Int(n)) => n,
                    _ => return self.perr("setmaxnreg takes an integer constant register count"),
                };
                // PTX ISA "setmaxnreg": imm-reg-count in 24..=256, a multiple of 8.
                if !(24..=256).contains(&n) || n % 8 != 0 {
                    return self.perr(format!("setmaxnreg register count {n} is not a multiple of 8 in 24..=256"));
                }
                self.emit(raw, self.new_inst(Op::Coll(Coll::SetMaxNReg { inc, n: n as u16 })));
                Ok(())
            }
            "stmatrix" => self.stmatrix(raw, &mut m),
            "nanosleep" | "prefetch" | "prefetchu" | "pmevent" | "griddepcontrol" => {
                m.ignore(|_| true);
                self.emit(raw, self.new_inst(Op::Nop));
                Ok(())
            }
            "bra" => {
                m.has("uni");
                m.finish()?;
                self.nops(raw, &[1])?;
                let Operand::Symbol(label) = &raw.operands[0] else {
                    return m.unsupported();
                };
                self.fixups.push((self.code.len(), label.clone(), raw.line));
                self.emit(raw, self.new_inst(Op::Bra));
                Ok(())
            }
            "ret" | "exit" => {
                m.has("uni");
                m.finish()?;
                self.emit(raw, self.new_inst(Op::Exit));
                Ok(())
            }
            "trap" => {
                m.finish()?;
                self.emit(raw, self.new_inst(Op::Trap));
                Ok(())
            }
            _ => m.unsupported(),
        }
    }

    fn mov(&mut self, raw: &RawInst, m: &mut Mods) -> Result<(), SimError> {
        let ty = m.ty()?;
        m.finish()?;
        self.nops(raw, &[2])?;
        match (&raw.operands[0], &raw.operands[1]) {
            (Operand::Vector(parts), src) => {
                let n = parts.len();
                if !matches!(n, 2 | 4) || ty.bits() as usize % n != 0 {
                    return m.unsupported();
                }
                let bits = ty.bits() / n as u8;
                let dsts = parts.iter().map(|p| self.dst(p)).collect::<Result<Vec<_>, _>>()?;
                let mut inst = self.new_inst(Op::Unpack { n: n as u8, bits });
                inst.a = self.src(src, ty)?;
                inst.aux = self.push_pool(&dsts);
                self.emit(raw, inst);
            }
            (d, Operand::Vector(parts)) => {
                let n = parts.len();
                if !matches!(n, 2 | 4) || ty.bits() as usize % n != 0 {
                    return m.unsupported();
                }
                let bits = ty.bits() / n as u8;
                let piece = Ty::B(bits);
                let srcs = parts.iter().map(|p| self.src(p, piece)).collect::<Result<Vec<_>, _>>()?;
                let mut inst = self.new_inst(Op::Pack { n: n as u8, bits });
                inst.d = self.dst(d)?;
                inst.aux = self.push_pool(&srcs);
                self.emit(raw, inst);
            }
            (d, Operand::Special(s)) if s == "%clock" || s == "%clock64" => {
                let mut inst = self.new_inst(Op::Clock);
                inst.d = self.dst(d)?;
                inst.imm = if s == "%clock" { 32 } else { 64 };
                self.emit(raw, inst);
            }
            (d, src) => {
                let mut inst = self.new_inst(Op::Mov);
                inst.d = self.dst(d)?;
                inst.a = self.src(src, ty)?;
                // A register wider than the move's type: keep only the low bits.
                if let Operand::Reg(id) = src {
                    if self.reg_bits(*id) > ty.bits() && ty != Ty::Pred {
                        inst.op = Op::MovMask { w: ty.bits() };
                    }
                }
                self.emit(raw, inst);
            }
        }
        Ok(())
    }

    fn arith(&mut self, raw: &RawInst, base: &str, m: &mut Mods) -> Result<(), SimError> {
        let mode = m.take(&["lo", "hi", "wide"]);
        let cc = m.has("cc");
        let rnd = m.rnd();
        let flags = m.float_flags();
        let nan = m.has("NaN");
        let approx = m.has("approx");
        let full = m.has("full");
        let relu = m.has("relu");
        let ty = m.ty()?;
        m.finish()?;
        if relu && !matches!(ty, Ty::F16 | Ty::Bf16 | Ty::F16x2 | Ty::Bf16x2) {
            return m.unsupported();
        }
        if ty.is_int() {
            let w = ty.bits();
            let signed = ty.signed();
            if !(16..=64).contains(&w) || rnd != Rnd::Default || approx || full || nan || relu {
                return m.unsupported();
            }
            let sat = flags & SAT != 0;
            if flags & FTZ != 0 || (sat && !(matches!(base, "add" | "sub") && ty == Ty::S(32))) {
                return m.unsupported();
            }
            if (cc || base == "addc" || base == "subc") && !matches!(w, 32 | 64) {
                return m.unsupported();
            }
            let (op, n) = match (base, mode) {
                ("add", None) if cc => (Op::AddCarry { w, flags: 2 }, 2),
                ("sub", None) if cc => (Op::AddCarry { w, flags: 2 | 4 }, 2),
                ("addc", None) => (Op::AddCarry { w, flags: 1 | if cc { 2 } else { 0 } }, 2),
                ("subc", None) => (Op::AddCarry { w, flags: 1 | 4 | if cc { 2 } else { 0 } }, 2),
                (_, _) if cc => return m.unsupported(),
                ("add", None) if sat => (Op::AddSatS32, 2),
                ("sub", None) if sat => (Op::SubSatS32, 2),
                ("add", None) => (Op::Add { w }, 2),
                ("sub", None) => (Op::Sub { w }, 2),
                ("mul", Some("lo")) => (Op::MulLo { w }, 2),
                ("mul", Some("hi")) => (Op::MulHi { w, signed }, 2),
                ("mul", Some("wide")) if w <= 32 => (Op::MulWide { w, signed }, 2),
                ("mad", Some("lo")) => (Op::MadLo { w }, 3),
                ("mad", Some("hi")) => (Op::MadHi { w, signed }, 3),
                ("mad", Some("wide")) if w <= 32 => (Op::MadWide { w, signed }, 3),
                ("div", None) => (Op::Div { w, signed }, 2),
                ("rem", None) => (Op::Rem { w, signed }, 2),
                ("min", None) => (Op::Min { w, signed }, 2),
                ("max", None) => (Op::Max { w, signed }, 2),
                ("abs", None) if signed => (Op::Abs { w }, 1),
                ("neg", None) if signed => (Op::Neg { w }, 1),
                _ => return m.unsupported(),
            };
            // mul.wide / mad.wide: sources are `w` bits, the destination (and mad's c) twice that.
            if let Op::MadWide { .. } = op {
                self.nops(raw, &[4])?;
                let mut inst = self.new_inst(op);
                inst.d = self.dst(&raw.operands[0])?;
                inst.a = self.src(&raw.operands[1], ty)?;
                inst.b = self.src(&raw.operands[2], ty)?;
                inst.c = self.src(&raw.operands[3], Ty::B(2 * w))?;
                self.emit(raw, inst);
                return Ok(());
            }
            return self.simple(raw, op, ty, n);
        }
        if mode.is_some() || cc {
            return m.unsupported();
        }
        let directed = matches!(rnd, Rnd::Rz | Rnd::Rm | Rnd::Rp);
        if !matches!(rnd, Rnd::Default | Rnd::Rn) && !directed {
            return m.unsupported();
        }
        match ty {
            Ty::F32 => {
                let f = flags;
                if nan && !matches!(base, "min" | "max") || relu {
                    return m.unsupported();
                }
                let (op, n) = match base {
                    "add" | "sub" | "mul" if directed => {
                        let op = match base {
                            "add" => FBin::Add,
                            "sub" => FBin::Sub,
                            _ => FBin::Mul,
                        };
                        (Op::RoundF32 { op, rnd, f }, 2)
                    }
                    "add" => (Op::AddF32 { f }, 2),
                    "sub" => (Op::SubF32 { f }, 2),
                    "mul" => (Op::MulF32 { f }, 2),
                    // mad.f32 on sm_20+ is fused, exactly fma.rn.f32.
                    "fma" | "mad" if !directed => (Op::FmaF32 { f }, 3),
                    "fma" if directed => (Op::FmaDirectedF32 { rnd, f }, 3),
                    "div" if !directed && (approx || full || rnd == Rnd::Rn) => (Op::DivF32 { f, approx: approx || full }, 2),
                    "min" if rnd == Rnd::Default && f & SAT == 0 => (Op::MinF32 { f, nan }, 2),
                    "max" if rnd == Rnd::Default && f & SAT == 0 => (Op::MaxF32 { f, nan }, 2),
                    "neg" if rnd == Rnd::Default && f & SAT == 0 => (Op::NegF32 { f }, 1),
                    "abs" if rnd == Rnd::Default && f & SAT == 0 => (Op::AbsF32 { f }, 1),
                    _ => return m.unsupported(),
                };
                if (approx || full) && base != "div" {
                    return m.unsupported();
                }
                self.simple(raw, op, ty, n)
            }
            Ty::F64 => {
                if flags != 0 || approx || full || relu || (nan && !matches!(base, "min" | "max")) {
                    return m.unsupported();
                }
                let (op, n) = match base {
                    "add" | "sub" | "mul" if directed => {
                        let op = match base {
                            "add" => FBin::Add,
                            "sub" => FBin::Sub,
                            _ => FBin::Mul,
                        };
                        (Op::RoundF64 { op, rnd }, 2)
                    }
                    "add" => (Op::AddF64, 2),
                    "sub" => (Op::SubF64, 2),
                    "mul" => (Op::MulF64, 2),
                    "fma" | "mad" if !directed => (Op::FmaF64, 3),
                    "div" if rnd == Rnd::Rn => (Op::DivF64, 2),
                    "min" if rnd == Rnd::Default => (Op::MinF64 { nan }, 2),
                    "max" if rnd == Rnd::Default => (Op::MaxF64 { nan }, 2),
                    "neg" if rnd == Rnd::Default => (Op::NegF64, 1),
                    "abs" if rnd == Rnd::Default => (Op::AbsF64, 1),
                    _ => return m.unsupported(),
                };
                self.simple(raw, op, ty, n)
            }
            Ty::F16 | Ty::Bf16 | Ty::F16x2 | Ty::Bf16x2 => {
                if directed || approx || full || nan {
                    return m.unsupported();
                }
                let bf16 = matches!(ty, Ty::Bf16 | Ty::Bf16x2);
                let x2 = matches!(ty, Ty::F16x2 | Ty::Bf16x2);
                let (op, n) = match base {
                    "add" => (HOp::Add, 2),
                    "sub" => (HOp::Sub, 2),
                    "mul" => (HOp::Mul, 2),
                    "fma" => (HOp::Fma, 3),
                    "neg" => (HOp::Neg, 1),
                    "abs" => (HOp::Abs, 1),
                    "min" => (HOp::Min, 2),
                    "max" => (HOp::Max, 2),
                    _ => return m.unsupported(),
                };
                // .relu only on fma; bf16 has no .ftz/.sat.
                if relu && op != HOp::Fma || bf16 && flags != 0 {
                    return m.unsupported();
                }
                let f = flags | if relu { 4 } else { 0 };
                self.simple(raw, Op::Half { op, bf16, x2, f }, Ty::B(ty.bits()), n)
            }
            _ => m.unsupported(),
        }
    }

    fn bits(&mut self, raw: &RawInst, base: &str, m: &mut Mods) -> Result<(), SimError> {
        if base == "prmt" {
            let mode = match m.take(&["f4e", "b4e", "rc8", "ecl", "ecr", "rc16"]) {
                None => 0,
                Some("f4e") => 1,
                Some("b4e") => 2,
                Some("rc8") => 3,
                Some("ecl") => 4,
                Some("ecr") => 5,
                _ => 6,
            };
            let ty = m.ty()?;
            m.finish()?;
            if ty != Ty::B(32) {
                return m.unsupported();
            }
            return self.simple(raw, Op::Prmt { mode }, ty, 3);
        }
        if base == "shf" {
            let right = match m.take(&["l", "r"]) {
                Some("r") => true,
                Some(_) => false,
                None => return m.unsupported(),
            };
            let clamp = match m.take(&["wrap", "clamp"]) {
                Some("clamp") => true,
                Some(_) => false,
                None => return m.unsupported(),
            };
            let ty = m.ty()?;
            m.finish()?;
            if ty != Ty::B(32) {
                return m.unsupported();
            }
            return self.simple(raw, Op::Shf { right, clamp }, ty, 3);
        }
        let shiftamt = base == "bfind" && m.has("shiftamt");
        let ty = m.ty()?;
        m.finish()?;
        let w = ty.bits();
        let signed = ty.signed();
        if ty == Ty::Pred {
            return match base {
                "and" => self.simple(raw, Op::And, ty, 2),
                "or" => self.simple(raw, Op::Or, ty, 2),
                "xor" => self.simple(raw, Op::Xor, ty, 2),
                "not" => self.simple(raw, Op::PNot, ty, 1),
                _ => m.unsupported(),
            };
        }
        if !ty.is_int() || !(16..=64).contains(&w) {
            return m.unsupported();
        }
        let u32ty = Ty::U(32);
        match base {
            "and" => self.simple(raw, Op::And, ty, 2),
            "or" => self.simple(raw, Op::Or, ty, 2),
            "xor" => self.simple(raw, Op::Xor, ty, 2),
            "not" => self.simple(raw, Op::Not { w }, ty, 1),
            "cnot" => self.simple(raw, Op::Cnot, ty, 1),
            "shl" | "shr" => {
                self.nops(raw, &[3])?;
                let op = if base == "shl" { Op::Shl { w } } else { Op::Shr { w, signed } };
                let mut inst = self.new_inst(op);
                inst.d = self.dst(&raw.operands[0])?;
                inst.a = self.src(&raw.operands[1], ty)?;
                inst.b = self.src(&raw.operands[2], u32ty)?;
                self.emit(raw, inst);
                Ok(())
            }
            "bfe" if matches!(w, 32 | 64) => {
                self.nops(raw, &[4])?;
                let mut inst = self.new_inst(Op::Bfe { w, signed });
                inst.d = self.dst(&raw.operands[0])?;
                inst.a = self.src(&raw.operands[1], ty)?;
                inst.b = self.src(&raw.operands[2], u32ty)?;
                inst.c = self.src(&raw.operands[3], u32ty)?;
                self.emit(raw, inst);
                Ok(())
            }
            "bfi" if matches!(w, 32 | 64) => {
                self.nops(raw, &[5])?;
                let mut inst = self.new_inst(Op::Bfi { w });
                inst.d = self.dst(&raw.operands[0])?;
                let srcs = [
                    self.src(&raw.operands[1], ty)?,
                    self.src(&raw.operands[2], ty)?,
                    self.src(&raw.operands[3], u32ty)?,
                    self.src(&raw.operands[4], u32ty)?,
                ];
                inst.aux = self.push_pool(&srcs);
                self.emit(raw, inst);
                Ok(())
            }
            "brev" if matches!(w, 32 | 64) => self.simple(raw, Op::Brev { w }, ty, 1),
            "popc" if matches!(w, 32 | 64) => self.simple(raw, Op::Popc { w }, ty, 1),
            "clz" if matches!(w, 32 | 64) => self.simple(raw, Op::Clz { w }, ty, 1),
            "bfind" if matches!(w, 32 | 64) => self.simple(raw, Op::Bfind { w, signed, shiftamt }, ty, 1),
            _ => m.unsupported(),
        }
    }

    fn setp(&mut self, raw: &RawInst, is_set: bool, m: &mut Mods) -> Result<(), SimError> {
        let cmp = match m.take(&[
            "eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan",
        ]) {
            Some("eq") => Cmp::Eq,
            Some("ne") => Cmp::Ne,
            Some("lt") => Cmp::Lt,
            Some("le") => Cmp::Le,
            Some("gt") => Cmp::Gt,
            Some("ge") => Cmp::Ge,
            Some("lo") => Cmp::Lo,
            Some("ls") => Cmp::Ls,
            Some("hi") => Cmp::Hi,
            Some("hs") => Cmp::Hs,
            Some("equ") => Cmp::Equ,
            Some("neu") => Cmp::Neu,
            Some("ltu") => Cmp::Ltu,
            Some("leu") => Cmp::Leu,
            Some("gtu") => Cmp::Gtu,
            Some("geu") => Cmp::Geu,
            Some("num") => Cmp::Num,
            Some("nan") => Cmp::Nan,
            _ => return m.unsupported(),
        };
        let bop = match m.take(&["and", "or", "xor"]) {
            Some("and") => BoolOp::And,
            Some("or") => BoolOp::Or,
            Some("xor") => BoolOp::Xor,
            _ => BoolOp::None,
        };
        let ftz = m.has("ftz");
        let types = m.types();
        m.finish()?;
        let (dty, sty) = match (is_set, types.as_slice()) {
            (false, [t]) => (Ty::Pred, *t),
            (true, [d, s]) => (*d, *s),
            _ => return m.unsupported(),
        };
        let ty = match sty {
            Ty::B(n) | Ty::U(n) if (16..=64).contains(&n) => CmpTy::Int { bits: n, signed: false },
            Ty::S(n) if n >= 16 => CmpTy::Int { bits: n, signed: true },
            Ty::F16 => CmpTy::F16,
            Ty::Bf16 => CmpTy::Bf16,
            Ty::F32 => CmpTy::F32,
            Ty::F64 => CmpTy::F64,
            _ => return m.unsupported(),
        };
        let is_float = !matches!(ty, CmpTy::Int { .. });
        let float_only = matches!(cmp, Cmp::Equ | Cmp::Neu | Cmp::Ltu | Cmp::Leu | Cmp::Gtu | Cmp::Geu | Cmp::Num | Cmp::Nan);
        let int_only = matches!(cmp, Cmp::Lo | Cmp::Ls | Cmp::Hi | Cmp::Hs);
        if (is_float && int_only) || (!is_float && (float_only || ftz)) {
            return m.unsupported();
        }
        if matches!(sty, Ty::B(_)) && !matches!(cmp, Cmp::Eq | Cmp::Ne) {
            return m.unsupported();
        }
        let n = if bop == BoolOp::None { 3 } else { 4 };
        self.nops(raw, &[n])?;
        let (d, second) = match &raw.operands[0] {
            Operand::Pair(p, q) if !is_set => (self.reg_slot(*p), self.reg_slot(*q)),
            other => (self.dst(other)?, NONE),
        };
        let (c, negc) = if bop == BoolOp::None { (NONE, false) } else { self.pred_src(&raw.operands[3])? };
        let op = if is_set {
            let float_dst = match dty {
                Ty::F32 => true,
                Ty::U(32) | Ty::S(32) | Ty::B(32) => false,
                _ => return m.unsupported(),
            };
            Op::Set { cmp, ty, bop, negc, ftz, float_dst }
        } else {
            Op::SetP { cmp, ty, bop, negc, ftz }
        };
        let mut inst = self.new_inst(op);
        inst.d = d;
        inst.a = self.src(&raw.operands[1], sty)?;
        inst.b = self.src(&raw.operands[2], sty)?;
        inst.c = c;
        inst.imm = second as i64;
        self.emit(raw, inst);
        Ok(())
    }

    fn fun(&mut self, raw: &RawInst, base: &str, m: &mut Mods) -> Result<(), SimError> {
        let approx = m.has("approx");
        let rnd = m.rnd();
        let ftz = m.has("ftz");
        let ty = m.ty()?;
        m.finish()?;
        let fun = match (base, approx, rnd) {
            ("rcp", false, Rnd::Rn) => Fun::RcpRn,
            ("rcp", true, Rnd::Default) => Fun::RcpApprox,
            ("sqrt", false, Rnd::Rn) => Fun::SqrtRn,
            ("sqrt", true, Rnd::Default) => Fun::SqrtApprox,
            ("rsqrt", true, Rnd::Default) => Fun::RsqrtApprox,
            ("ex2", true, Rnd::Default) => Fun::Ex2Approx,
            ("lg2", true, Rnd::Default) => Fun::Lg2Approx,
            ("sin", true, Rnd::Default) => Fun::SinApprox,
            ("cos", true, Rnd::Default) => Fun::CosApprox,
            ("tanh", true, Rnd::Default) => Fun::TanhApprox,
            _ => return m.unsupported(),
        };
        match ty {
            Ty::F32 => self.simple(raw, Op::FunF32 { f: if ftz { FTZ } else { 0 }, fun }, ty, 1),
            Ty::F64 if matches!(fun, Fun::RcpRn | Fun::RcpApprox | Fun::SqrtRn | Fun::RsqrtApprox) => {
                // rcp.approx.ftz.f64 / rsqrt.approx.ftz.f64 exist; only those take .ftz.
                if ftz && !matches!(fun, Fun::RcpApprox | Fun::RsqrtApprox) {
                    return m.unsupported();
                }
                self.simple(raw, Op::FunF64 { fun }, ty, 1)
            }
            _ => m.unsupported(),
        }
    }

    fn cvt(&mut self, raw: &RawInst, m: &mut Mods) -> Result<(), SimError> {
        let rnd = m.rnd();
        let flags = m.float_flags();
        let relu = m.has("relu");
        let satfinite = m.has("satfinite");
        let types = m.types();
        m.finish()?;
        let [to, from] = types.as_slice() else {
            return m.unsupported();
        };
        if matches!(to, Ty::F16x2 | Ty::Bf16x2) {
            if *from != Ty::F32 || rnd != Rnd::Rn || flags != 0 {
                return m.unsupported();
            }
            self.nops(raw, &[3])?;
            let mut inst = self.new_inst(Op::CvtPack { bf16: *to == Ty::Bf16x2, relu, satfinite });
            inst.d = self.dst(&raw.operands[0])?;
            inst.a = self.src(&raw.operands[1], Ty::F32)?;
            inst.b = self.src(&raw.operands[2], Ty::F32)?;
            self.emit(raw, inst);
            return Ok(());
        }
        let (Some(tn), Some(fnum)) = (to.num(), from.num()) else {
            return m.unsupported();
        };
        if relu || satfinite {
            return m.unsupported();
        }
        let to_float = !matches!(tn, NumTy::Int { .. });
        let from_float = !matches!(fnum, NumTy::Int { .. });
        let int_rnd = matches!(rnd, Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi);
        let float_rnd = matches!(rnd, Rnd::Rn | Rnd::Rz | Rnd::Rm | Rnd::Rp);
        let fbits = |t: NumTy| match t {
            NumTy::F16 | NumTy::Bf16 => 16,
            NumTy::F32 => 32,
            NumTy::F64 => 64,
            NumTy::Int { bits, .. } => bits,
        };
        let ok = match (from_float, to_float) {
            (false, false) => rnd == Rnd::Default && flags & FTZ == 0,
            (true, false) => int_rnd,
            (false, true) => float_rnd,
            (true, true) => {
                let narrowing = fbits(tn) < fbits(fnum) || (tn == NumTy::Bf16 && fnum == NumTy::F16) || (tn == NumTy::F16 && fnum == NumTy::Bf16);
                if tn == fnum {
                    rnd == Rnd::Default || int_rnd
                } else if narrowing {
                    float_rnd
                } else {
                    rnd == Rnd::Default || int_rnd
                }
            }
        };
        if !ok || rnd == Rnd::Rna {
            return m.unsupported();
        }
        self.nops(raw, &[2])?;
        let mut inst = self.new_inst(Op::Cvt { to: tn, from: fnum, rnd, f: flags });
        inst.d = self.dst(&raw.operands[0])?;
        inst.a = self.src(&raw.operands[1], *from)?;
        self.emit(raw, inst);
        Ok(())
    }

    fn ld(&mut self, raw: &RawInst, ldu: bool, m: &mut Mods) -> Result<(), SimError> {
        m.ignore_memory_hints();
        let hint = m.has("L2::cache_hint");
        let mut space = m.space();
        if ldu && space == Sp::Generic {
            space = Sp::Global;
        }
        let Some((n, ty, size)) = access_shape(m)? else {
            return m.unsupported();
        };
        self.nops(raw, if hint { &[3] } else { &[2] })?;
        let dsts = self.elems(&raw.operands[0]);
        if dsts.len() != n {
            return self.perr(format!("`{}` needs {n} destination registers", raw.opcode));
        }
        let dst_slots = dsts.iter().map(|d| self.dst(d)).collect::<Result<Vec<_>, _>>()?;
        let reg_bits = match dsts[0] {
            Operand::Reg(id) => self.reg_bits(*id).max(ty.bits()),
            _ => ty.bits(),
        };
        let (a, off) = self.addr(&raw.operands[1])?;
        let mut inst = self.new_inst(Op::Ld { space, size, n: n as u8, sext: ty.signed(), reg_bits });
        inst.a = a;
        inst.imm = off;
        if n == 1 {
            inst.d = dst_slots[0];
        } else {
            inst.aux = self.push_pool(&dst_slots);
        }
        self.emit(raw, inst);
        Ok(())
    }

    fn st(&mut self, raw: &RawInst, m: &mut Mods) -> Result<(), SimError> {
        m.ignore_memory_hints();
        let hint = m.has("L2::cache_hint");
        let space = m.space();
        if space == Sp::Param || space == Sp::Const {
            return m.unsupported();
        }
        let Some((n, ty, size)) = access_shape(m)? else {
            return m.unsupported();
        };
        self.nops(raw, if hint { &[3] } else { &[2] })?;
        let (a, off) = self.addr(&raw.operands[0])?;
        let vals = self.elems(&raw.operands[1]);
        if vals.len() != n {
            return self.perr(format!("`{}` needs {n} source values", raw.opcode));
        }
        let slots = vals.iter().map(|v| self.src(v, ty)).collect::<Result<Vec<_>, _>>()?;
        let mut inst = self.new_inst(Op::St { space, size, n: n as u8 });
        inst.a = a;
        inst.imm = off;
        if n == 1 {
            inst.b = slots[0];
        } else {
            inst.aux = self.push_pool(&slots);
        }
        self.emit(raw, inst);
        Ok(())
    }

    fn atom(&mut self, raw: &RawInst, ret: bool, m: &mut Mods) -> Result<(), SimError> {
        m.ignore_memory_hints();
        let space = m.space();
        if !matches!(space, Sp::Global | Sp::Shared | Sp::Generic) {
            return m.unsupported();
        }
        let op = match m.take(&["add", "min", "max", "inc", "dec", "exch", "cas", "and", "or", "xor"]) {
            Some("add") => AtomOp::Add,
            Some("min") => AtomOp::Min,
            Some("max") => AtomOp::Max,
            Some("inc") => AtomOp::Inc,
            Some("dec") => AtomOp::Dec,
            Some("exch") => AtomOp::Exch,
            Some("cas") => AtomOp::Cas,
            Some("and") => AtomOp::And,
            Some("or") => AtomOp::Or,
            Some("xor") => AtomOp::Xor,
            _ => return m.unsupported(),
        };
        let noftz = m.has("noftz");
        let ty = m.ty()?;
        m.finish()?;
        let aty = match ty {
            Ty::B(n) | Ty::U(n) if n == 32 || n == 64 => AtomTy::Int { bits: n, signed: false },
            Ty::S(n) if n == 32 || n == 64 => AtomTy::Int { bits: n, signed: true },
            Ty::F32 if matches!(op, AtomOp::Add | AtomOp::Exch) => AtomTy::F32,
            Ty::F64 if op == AtomOp::Add => AtomTy::F64,
            _ => return m.unsupported(),
        };
        if noftz && aty != AtomTy::F32 || (matches!(op, AtomOp::Inc | AtomOp::Dec) && ty != Ty::U(32)) {
            return m.unsupported();
        }
        let nsrc = if op == AtomOp::Cas { 2 } else { 1 };
        let first = if ret { 1 } else { 0 };
        self.nops(raw, &[first + 1 + nsrc])?;
        let mut inst = self.new_inst(Op::Atom { space, op, ty: aty, ret });
        if ret {
            inst.d = self.dst(&raw.operands[0])?;
        }
        let (a, off) = self.addr(&raw.operands[first])?;
        inst.a = a;
        inst.imm = off;
        inst.b = self.src(&raw.operands[first + 1], ty)?;
        if op == AtomOp::Cas {
            inst.c = self.src(&raw.operands[first + 2], ty)?;
        }
        // atom.add.f32 flushes subnormals unless .noftz; remember in aux.
        inst.aux = (aty == AtomTy::F32 && op == AtomOp::Add && !noftz) as u32;
        self.emit(raw, inst);
        Ok(())
    }

    fn cp_async(&mut self, raw: &RawInst, m: &mut Mods) -> Result<(), SimError> {
        if !m.has("async") {
            return m.unsupported();
        }
        if m.has("bulk") {
            return self.bulk(raw, m);
        }
        if m.has("commit_group") {
            m.finish()?;
            self.emit(raw, self.new_inst(Op::CpAsyncCommit));
            return Ok(());
        }
        if m.has("wait_group") {
            m.finish()?;
            self.nops(raw, &[1])?;
            let Operand::Lit(Literal::Int(n)) = raw.operands[0] else {
                return self.perr("cp.async.wait_group takes an integer constant");
            };
            let mut inst = self.new_inst(Op::CpAsyncWait);
            inst.imm = n as i64;
            self.emit(raw, inst);
            return Ok(());
        }
        if m.has("wait_all") {
            m.finish()?;
            self.emit(raw, self.new_inst(Op::CpAsyncWaitAll));
            return Ok(());
        }
        let ca = m.has("ca");
        let cg = m.has("cg");
        if ca == cg || !m.has("shared") && !m.has("shared::cta") || !m.has("global") {
            return m.unsupported();
        }
        let hint = m.has("L2::cache_hint");
        m.ignore(|p| matches!(p, "L2::64B" | "L2::128B" | "L2::256B"));
        m.finish()?;
        let ops = &raw.operands;
        let max = 3 + 1 + hint as usize;
        if ops.len() < 3 || ops.len() > max {
            return self.perr(format!("`{}` takes 3 to {max} operands", raw.opcode));
        }
        let size = match ops[2] {
            Operand::Lit(Literal::Int(n)) if n == 4 || n == 8 || n == 16 => n as u8,
            _ => return self.perr("cp.async copy size must be 4, 8 or 16"),
        };
        if cg && size != 16 {
            return m.unsupported();
        }
        let (d, doff) = self.addr(&ops[0])?;
        let (a, aoff) = self.addr(&ops[1])?;
        let extra = ops.len() - 3 - hint as usize;
        let mut ignore_pred = false;
        let mut b = NONE;
        if extra == 1 {
            match &ops[3] {
                Operand::Reg(id) if self.f.regs[*id as usize].ty == ScalarType::Pred => {
                    ignore_pred = true;
                    b = self.reg_slot(*id);
                }
                other => b = self.src(other, Ty::U(32))?,
            }
        }
        let mut inst = self.new_inst(Op::CpAsync { size, ignore_pred });
        inst.d = d;
        inst.imm = doff;
        inst.a = a;
        inst.b = b;
        inst.c = self.offsets.len() as u32;
        self.offsets.push(aoff);
        self.emit(raw, inst);
        Ok(())
    }

    /// An mbarrier address operand's state space: `.shared{::cta}` (and `.shared::cluster`, which
    /// for a cluster of one CTA is the same window) or generic.
    fn mbar_space(m: &mut Mods) -> Sp {
        match m.take(&["shared", "shared::cta", "shared::cluster"]) {
            Some(_) => Sp::Shared,
            None => Sp::Generic,
        }
    }

    /// PTX ISA "mbarrier": init, inval, arrive{.expect_tx,.noComplete}, arrive_drop, expect_tx,
    /// complete_tx, test_wait{.parity}, try_wait{.parity}.
    fn mbarrier(&mut self, raw: &RawInst, m: &mut Mods) -> Result<(), SimError> {
        // .sem and .scope order memory; execution here is sequentially consistent.
        m.ignore(|p| matches!(p, "release" | "acquire" | "relaxed" | "cta" | "cluster"));
        let space = Self::mbar_space(m);
        let what = m.take(&["init", "inval", "arrive", "arrive_drop", "expect_tx", "complete_tx", "test_wait", "try_wait"]);
        let expect_tx = what != Some("expect_tx") && m.has("expect_tx");
        let no_complete = m.has("noComplete");
        let parity = m.has("parity");
        let ty = m.ty()?;
        m.finish()?;
        if ty != Ty::B(64) || (parity && !matches!(what, Some("test_wait" | "try_wait"))) {
            return m.unsupported();
        }
        let ops = &raw.operands;
        let mut inst;
        match what {
            Some("init") => {
                self.nops(raw, &[2])?;
                inst = self.new_inst(Op::MbarInit { space });
                (inst.a, inst.imm) = self.addr(&ops[0])?;
                inst.b = self.src(&ops[1], Ty::U(32))?;
            }
            Some("inval") => {
                self.nops(raw, &[1])?;
                inst = self.new_inst(Op::MbarInval { space });
                (inst.a, inst.imm) = self.addr(&ops[0])?;
            }
            Some(w @ ("arrive" | "arrive_drop")) => {
                let drop = w == "arrive_drop";
                let kind = match (drop, expect_tx, no_complete) {
                    (false, false, false) => ArriveKind::Arrive,
                    (false, true, false) => ArriveKind::ExpectTx,
                    (false, false, true) => ArriveKind::NoComplete,
                    (true, false, false) => ArriveKind::Drop,
                    (true, true, false) => ArriveKind::DropExpectTx,
                    _ => return m.unsupported(),
                };
                let needs_count = matches!(kind, ArriveKind::ExpectTx | ArriveKind::NoComplete | ArriveKind::DropExpectTx);
                self.nops(raw, if needs_count { &[3] } else { &[2, 3] })?;
                inst = self.new_inst(Op::MbarArrive { space, kind });
                inst.d = self.dst(&ops[0])?;
                (inst.a, inst.imm) = self.addr(&ops[1])?;
                if ops.len() == 3 {
                    inst.b = self.src(&ops[2], Ty::U(32))?;
                }
            }
            Some(w @ ("expect_tx" | "complete_tx")) => {
                self.nops(raw, &[2])?;
                inst = self.new_inst(Op::MbarTx { space, complete: w == "complete_tx" });
                (inst.a, inst.imm) = self.addr(&ops[0])?;
                inst.b = self.src(&ops[1], Ty::U(32))?;
            }
            Some(w @ ("test_wait" | "try_wait")) => {
                // try_wait's optional suspendTimeHint is only a hint.
                self.nops(raw, if w == "try_wait" { &[3, 4] } else { &[3] })?;
                inst = self.new_inst(Op::MbarWait { space, parity });
                inst.d = self.dst(&ops[0])?;
                (inst.a, inst.imm) = self.addr(&ops[1])?;
                inst.b = self.src(&ops[2], if parity { Ty::U(32) } else { Ty::B(64) })?;
                if ops.len() == 4 {
                    self.src(&ops[3], Ty::U(32))?;
                }
            }
            _ => return m.unsupported(),
        }
        self.emit(raw, inst);
        Ok(())
    }

    /// `[base+offset, {coords}]` of a tensor copy: (tensor-map address slot, offset, coordinate
    /// slots). The tensor map is a generic address: a register, or a `.global` variable's name.
    fn tensor_addr(&mut self, op: &Operand, dim: usize) -> Result<(u32, i64, Vec<u32>), SimError> {
        let Operand::TensorAddr { base, offset, coords } = op else {
            return self.perr(format!("expected a `[tensorMap, {{coordinates}}]` operand, found {op:?}"));
        };
        if coords.len() != dim {
            return self.perr(format!("a {dim}d tensor copy takes {dim} coordinates, found {}", coords.len()));
        }
        let slot = match base {
            Some(AddrBase::Reg(id)) => self.reg_slot(*id),
            Some(AddrBase::Symbol(name)) => match self.syms.get(name) {
                Some(_) if self.f.params.iter().any(|p| &p.name == name) => {
                    return self.perr(format!(
                        "the tensor map operand must be a generic address; take parameter `{name}`'s with `mov` and `cvta.param`"
                    ));
                }
                Some(&a) => self.constant(a),
                None => return self.perr(format!("unknown symbol `{name}`")),
            },
            None => self.constant(0),
        };
        let coords = coords.iter().map(|c| self.src(c, Ty::S(32))).collect::<Result<Vec<_>, _>>()?;
        Ok((slot, *offset, coords))
    }

    /// PTX ISA "cp.async.bulk", "cp.async.bulk.tensor", "cp.async.bulk.commit_group",
    /// "cp.async.bulk.wait_group", "cp.async.bulk.prefetch{.tensor}" (after `cp.async.bulk`).
    fn bulk(&mut self, raw: &RawInst, m: &mut Mods) -> Result<(), SimError> {
        if m.has("commit_group") {
            m.finish()?;
            self.nops(raw, &[0])?;
            self.emit(raw, self.new_inst(Op::BulkCommit));
            return Ok(());
        }
        if m.has("wait_group") {
            let read = m.has("read");
            m.finish()?;
            self.nops(raw, &[1])?;
            let Operand::Lit(Literal::Int(n)) = raw.operands[0] else {
                return self.perr("cp.async.bulk.wait_group takes an integer constant");
            };
            let mut inst = self.new_inst(Op::BulkWait { read });
            inst.imm = n as i64;
            self.emit(raw, inst);
            return Ok(());
        }
        if m.has("prefetch") {
            // A prefetch into L2: no effect on results.
            m.ignore(|_| true);
            self.emit(raw, self.new_inst(Op::Nop));
            return Ok(());
        }
        let tensor = m.has("tensor");
        let dim = match m.take(&["1d", "2d", "3d", "4d", "5d"]) {
            Some(d) => d.as_bytes()[0] - b'0',
            None if tensor => return m.unsupported(),
            None => 0,
        };
        if m.has("multicast::cluster") {
            return m.unsupported_because("multicast needs a thread-block cluster, which the simulator does not model");
        }
        if let Some(mode) = m.take(&["im2col", "im2col::w", "im2col::w::128", "im2col_no_offs", "tile::gather4", "tile::scatter4"]) {
            return m.unsupported_because(&format!("`.{mode}` load mode; only `.tile` is supported"));
        }
        if m.take(&["cta_group::1", "cta_group::2"]).is_some() || m.has("cp_mask") {
            return m.unsupported_because("sm_100 qualifier");
        }
        m.has("tile");
        let hint = m.has("L2::cache_hint");
        let spaces = m.spaces_in_order();
        let to_shared = match spaces.as_slice() {
            [dst, "global"] if dst.starts_with("shared") => true,
            ["global", "shared" | "shared::cta"] => false,
            [_, _] => return m.unsupported_because("shared::cta -> shared::cluster copies need a cluster"),
            _ => return m.unsupported(),
        };
        let mbar = m.has("mbarrier::complete_tx::bytes");
        let group = m.has("bulk_group");
        m.finish()?;
        if to_shared != mbar || to_shared == group {
            return m.unsupported();
        }
        let ops = &raw.operands;
        let want = match (tensor, to_shared) {
            (false, true) => 4,
            (false, false) => 3,
            (true, true) => 3,
            (true, false) => 2,
        } + hint as usize;
        self.nops(raw, &[want])?;
        let c = self.offsets.len() as u32;
        let mut inst;
        match (tensor, to_shared) {
            (false, _) => {
                inst = self.new_inst(if to_shared { Op::BulkLoad } else { Op::BulkStore });
                (inst.d, inst.imm) = self.addr(&ops[0])?;
                let (a, aoff) = self.addr(&ops[1])?;
                inst.a = a;
                self.offsets.push(aoff);
                inst.b = self.src(&ops[2], Ty::U(32))?;
                if to_shared {
                    let (mb, moff) = self.addr(&ops[3])?;
                    self.offsets.push(moff);
                    inst.aux = self.push_pool(&[mb]);
                }
            }
            (true, true) => {
                inst = self.new_inst(Op::TensorLoad { dim });
                (inst.d, inst.imm) = self.addr(&ops[0])?;
                let (tm, toff, mut coords) = self.tensor_addr(&ops[1], dim as usize)?;
                inst.a = tm;
                self.offsets.push(toff);
                let (mb, moff) = self.addr(&ops[2])?;
                self.offsets.push(moff);
                coords.push(mb);
                inst.aux = self.push_pool(&coords);
            }
            (true, false) => {
                inst = self.new_inst(Op::TensorStore { dim });
                let (tm, toff, coords) = self.tensor_addr(&ops[0], dim as usize)?;
                inst.a = tm;
                self.offsets.push(toff);
                inst.aux = self.push_pool(&coords);
                (inst.b, inst.imm) = self.addr(&ops[1])?;
            }
        }
        if hint {
            // The cache-policy operand is only a hint; still a valid 64-bit source.
            self.src(&ops[want - 1], Ty::B(64))?;
        }
        inst.c = c;
        self.emit(raw, inst);
        Ok(())
    }

    /// PTX ISA "stmatrix": m8n8, .b16, x1/x2/x4, optional .trans, shared or generic address.
    fn stmatrix(&mut self, raw: &RawInst, m: &mut Mods) -> Result<(), SimError> {
        let ok = m.has("sync") & m.has("aligned") & m.has("m8n8");
        let num = match m.take(&["x1", "x2", "x4"]) {
            Some("x1") => 1,
            Some("x2") => 2,
            Some("x4") => 4,
            _ => return m.unsupported(),
        };
        let trans = m.has("trans");
        let space = m.space();
        let ty = m.ty()?;
        m.finish()?;
        if !ok || ty != Ty::B(16) || !matches!(space, Sp::Shared | Sp::Generic) {
            return m.unsupported();
        }
        self.nops(raw, &[2])?;
        let srcs = self.elems(&raw.operands[1]);
        if srcs.len() != num {
            return self.perr(format!("`{}` needs {num} source registers", raw.opcode));
        }
        let slots = srcs.iter().map(|v| self.src(v, Ty::B(32))).collect::<Result<Vec<_>, _>>()?;
        let (a, off) = self.addr(&raw.operands[0])?;
        let generic = space == Sp::Generic;
        let mut inst = self.new_inst(Op::Coll(Coll::StMatrix { num: num as u8, trans, generic }));
        inst.a = a;
        inst.imm = off;
        inst.aux = self.push_pool(&slots);
        self.emit(raw, inst);
        Ok(())
    }

    /// `wgmma.*`: the operands resolved to slots here, the forms checked by `crate::wgmma`.
    fn wgmma(&mut self, raw: &RawInst, m: &mut Mods) -> Result<(), SimError> {
        use crate::wgmma::{WgArg, WgLowerError};
        m.ignore(|_| true);
        let mut args = Vec::with_capacity(raw.operands.len());
        for op in &raw.operands {
            args.push(match op {
                Operand::Vector(v) if v.iter().all(|e| matches!(e, Operand::Reg(_))) => {
                    WgArg::Regs(v.iter().map(|e| if let Operand::Reg(id) = e { self.reg_slot(*id) } else { NONE }).collect())
                }
                Operand::Reg(id) => WgArg::Reg { slot: self.reg_slot(*id), pred: self.reg_bits(*id) == 1 },
                Operand::Lit(Literal::Int(v)) => WgArg::Imm { value: *v as i64, slot: self.constant(*v) },
                _ => WgArg::Other,
            });
        }
        let low = match crate::wgmma::lower(&raw.opcode, &args) {
            Ok(low) => low,
            Err(WgLowerError::Unsupported(why)) => return m.unsupported_because(&why),
            Err(WgLowerError::Malformed(why)) => return self.perr(why),
        };
        let mut inst = self.new_inst(Op::Coll(Coll::Wgmma(low.op)));
        (inst.a, inst.b, inst.c, inst.imm) = (low.a, low.b, low.c, low.imm);
        inst.aux = self.push_pool(&low.pool);
        self.emit(raw, inst);
        Ok(())
    }

    fn ldmatrix(&mut self, raw: &RawInst, m: &mut Mods) -> Result<(), SimError> {
        let ok = m.has("sync") & m.has("aligned") & m.has("m8n8") & (m.has("shared") | m.has("shared::cta"));
        let num = match m.take(&["x1", "x2", "x4"]) {
            Some("x1") => 1,
            Some("x2") => 2,
            Some("x4") => 4,
            _ => return m.unsupported(),
        };
        let trans = m.has("trans");
        let ty = m.ty()?;
        m.finish()?;
        if !ok || ty != Ty::B(16) {
            return m.unsupported();
        }
        self.nops(raw, &[2])?;
        let dsts = self.elems(&raw.operands[0]);
        if dsts.len() != num {
            return self.perr(format!("`{}` needs {num} destination registers", raw.opcode));
        }
        let slots = dsts.iter().map(|d| self.dst(d)).collect::<Result<Vec<_>, _>>()?;
        let (a, off) = self.addr(&raw.operands[1])?;
        let mut inst = self.new_inst(Op::Coll(Coll::LdMatrix { num: num as u8, trans }));
        inst.a = a;
        inst.imm = off;
        inst.aux = self.push_pool(&slots);
        self.emit(raw, inst);
        Ok(())
    }

    fn mma(&mut self, raw: &RawInst, m: &mut Mods) -> Result<(), SimError> {
        let ok = m.has("sync") & m.has("aligned") & m.has("row") & m.has("col");
        let k = match m.take(&["m16n8k16", "m16n8k8"]) {
            Some("m16n8k16") => 16,
            Some("m16n8k8") => 8,
            _ => return m.unsupported(),
        };
        let types = m.types();
        m.finish()?;
        let [dt, at, bt, ct] = types.as_slice() else {
            return m.unsupported();
        };
        if !ok || at != bt || !matches!(at, Ty::F16 | Ty::Bf16) || !matches!(dt, Ty::F32 | Ty::F16) || !matches!(ct, Ty::F32 | Ty::F16) {
            return m.unsupported();
        }
        let bf16 = *at == Ty::Bf16;
        if bf16 && (*dt != Ty::F32 || *ct != Ty::F32) {
            return m.unsupported();
        }
        let shape = MmaShape { k, bf16, f32_acc_c: *ct == Ty::F32, f32_acc_d: *dt == Ty::F32 };
        self.nops(raw, &[4])?;
        let want = [
            if shape.f32_acc_d { 4 } else { 2 },
            if k == 16 { 4 } else { 2 },
            if k == 16 { 2 } else { 1 },
            if shape.f32_acc_c { 4 } else { 2 },
        ];
        let mut slots = Vec::new();
        for (i, (op, n)) in raw.operands.iter().zip(want).enumerate() {
            let e = self.elems(op);
            if e.len() != n {
                return self.perr(format!("`{}` operand {} needs {n} registers", raw.opcode, i + 1));
            }
            for x in e {
                let s = if i == 0 {
                    self.dst(x)?
                } else {
                    let t = if i == 3 && shape.f32_acc_c { Ty::F32 } else { Ty::B(32) };
                    self.src(x, t)?
                };
                slots.push(s);
            }
        }
        let mut inst = self.new_inst(Op::Coll(Coll::Mma(shape)));
        inst.aux = self.push_pool(&slots);
        self.emit(raw, inst);
        Ok(())
    }

    fn warp(&mut self, raw: &RawInst, base: &str, m: &mut Mods) -> Result<(), SimError> {
        if base == "activemask" {
            let ty = m.ty()?;
            m.finish()?;
            if ty != Ty::B(32) {
                return m.unsupported();
            }
            self.nops(raw, &[1])?;
            let mut inst = self.new_inst(Op::Coll(Coll::ActiveMask));
            inst.d = self.dst(&raw.operands[0])?;
            self.emit(raw, inst);
            return Ok(());
        }
        if !m.has("sync") {
            return m.unsupported();
        }
        let u32ty = Ty::B(32);
        match base {
            "shfl" => {
                let mode = match m.take(&["up", "down", "bfly", "idx"]) {
                    Some("up") => ShflMode::Up,
                    Some("down") => ShflMode::Down,
                    Some("bfly") => ShflMode::Bfly,
                    Some("idx") => ShflMode::Idx,
                    _ => return m.unsupported(),
                };
                let ty = m.ty()?;
                m.finish()?;
                if ty != Ty::B(32) {
                    return m.unsupported();
                }
                self.nops(raw, &[5])?;
                let (d, p) = match &raw.operands[0] {
                    Operand::Pair(d, p) => (self.reg_slot(*d), self.reg_slot(*p)),
                    other => (self.dst(other)?, NONE),
                };
                let mut inst = self.new_inst(Op::Coll(Coll::Shfl(mode)));
                inst.d = d;
                inst.aux = p;
                inst.a = self.src(&raw.operands[1], u32ty)?;
                inst.b = self.src(&raw.operands[2], u32ty)?;
                inst.c = self.src(&raw.operands[3], u32ty)?;
                inst.imm = self.src(&raw.operands[4], u32ty)? as i64;
                self.emit(raw, inst);
                Ok(())
            }
            "vote" => {
                let mode = match m.take(&["all", "any", "uni", "ballot"]) {
                    Some("all") => VoteMode::All,
                    Some("any") => VoteMode::Any,
                    Some("uni") => VoteMode::Uni,
                    Some("ballot") => VoteMode::Ballot,
                    _ => return m.unsupported(),
                };
                let ty = m.ty()?;
                m.finish()?;
                if (mode == VoteMode::Ballot) != (ty == Ty::B(32)) || (mode != VoteMode::Ballot && ty != Ty::Pred) {
                    return m.unsupported();
                }
                self.nops(raw, &[3])?;
                let mut inst = self.new_inst(Op::Coll(Coll::Vote(mode)));
                inst.d = self.dst(&raw.operands[0])?;
                let (a, neg) = self.pred_src(&raw.operands[1])?;
                inst.a = a;
                inst.imm = neg as i64;
                inst.c = self.src(&raw.operands[2], u32ty)?;
                self.emit(raw, inst);
                Ok(())
            }
            "redux" => {
                let op = m.take(&["add", "min", "max", "and", "or", "xor"]);
                let ty = m.ty()?;
                m.finish()?;
                let op = match (op, ty) {
                    (Some("add"), Ty::U(32) | Ty::S(32)) => ReduxOp::Add,
                    (Some("min"), Ty::U(32)) => ReduxOp::MinU,
                    (Some("min"), Ty::S(32)) => ReduxOp::MinS,
                    (Some("max"), Ty::U(32)) => ReduxOp::MaxU,
                    (Some("max"), Ty::S(32)) => ReduxOp::MaxS,
                    (Some("and"), Ty::B(32)) => ReduxOp::And,
                    (Some("or"), Ty::B(32)) => ReduxOp::Or,
                    (Some("xor"), Ty::B(32)) => ReduxOp::Xor,
                    _ => return m.unsupported(),
                };
                self.nops(raw, &[3])?;
                let mut inst = self.new_inst(Op::Coll(Coll::Redux(op)));
                inst.d = self.dst(&raw.operands[0])?;
                inst.a = self.src(&raw.operands[1], ty)?;
                inst.c = self.src(&raw.operands[2], u32ty)?;
                self.emit(raw, inst);
                Ok(())
            }
            "match" => {
                let all = match m.take(&["any", "all"]) {
                    Some("all") => true,
                    Some(_) => false,
                    None => return m.unsupported(),
                };
                let ty = m.ty()?;
                m.finish()?;
                if !matches!(ty, Ty::B(32) | Ty::B(64)) {
                    return m.unsupported();
                }
                self.nops(raw, &[3])?;
                let (d, p) = match &raw.operands[0] {
                    Operand::Pair(d, p) if all => (self.reg_slot(*d), self.reg_slot(*p)),
                    other => (self.dst(other)?, NONE),
                };
                let mut inst = self.new_inst(Op::Coll(if all { Coll::MatchAll } else { Coll::MatchAny }));
                inst.d = d;
                inst.b = p;
                inst.a = self.src(&raw.operands[1], ty)?;
                inst.c = self.src(&raw.operands[2], u32ty)?;
                self.emit(raw, inst);
                Ok(())
            }
            _ => m.unsupported(),
        }
    }

    fn bar(&mut self, raw: &RawInst, m: &mut Mods) -> Result<(), SimError> {
        if m.has("warp") {
            if !m.has("sync") {
                return m.unsupported();
            }
            m.finish()?;
            self.nops(raw, &[1])?;
            let mut inst = self.new_inst(Op::Coll(Coll::WarpSync));
            inst.c = self.src(&raw.operands[0], Ty::B(32))?;
            self.emit(raw, inst);
            return Ok(());
        }
        m.has("cta");
        m.has("aligned");
        let arrive = match m.take(&["sync", "arrive"]) {
            Some("sync") => false,
            Some(_) => true,
            // `bar 0;` is bar.sync.
            None => false,
        };
        m.finish()?;
        self.nops(raw, if arrive { &[2] } else { &[1, 2] })?;
        let mut inst = self.new_inst(Op::Bar { arrive });
        inst.a = self.src(&raw.operands[0], Ty::U(32))?;
        if raw.operands.len() == 2 {
            inst.b = self.src(&raw.operands[1], Ty::U(32))?;
        }
        self.emit(raw, inst);
        Ok(())
    }
}

/// The vector width (`.v2`/`.v4`, else 1), element type and element size in bytes of an `ld`/`st`,
/// taking the remaining modifiers; `None` for element types no load or store moves.
fn access_shape(m: &mut Mods) -> Result<Option<(usize, Ty, u8)>, SimError> {
    let n = match m.take(&["v2", "v4"]) {
        Some("v2") => 2,
        Some("v4") => 4,
        _ => 1,
    };
    let ty = m.ty()?;
    m.finish()?;
    let size = ty.bits() / 8;
    if !matches!(size, 1 | 2 | 4 | 8) || ty == Ty::Pred {
        return Ok(None);
    }
    Ok(Some((n, ty, size)))
}
