//! The lowered form the interpreter runs: a flat array of pre-decoded instructions per entry.
//!
//! Every operand is a *slot*: an index into the thread's register file, a `Vec<u64>`. Declared
//! registers, special registers (`%tid.x`, ... filled in when a thread starts) and immediates
//! (constant slots, filled once per thread from a template) all live there, so an instruction never
//! asks "register or immediate?". Values narrower than 64 bits are kept zero-extended; predicates
//! are 0 or 1. Branch targets are instruction indices. Vector operands (`{%r1, %r2}`), the operands
//! of `mma`, `bfi` and friends live in the kernel's operand pool, `Inst::aux` pointing at the first.

/// No slot (an absent optional operand).
pub(crate) const NONE: u32 = u32::MAX;
/// `Inst::guard` when the instruction has no guard predicate.
pub(crate) const NO_GUARD: u32 = u32::MAX;
/// Set in `Inst::guard` for `@!%p`.
pub(crate) const GUARD_NEG: u32 = 1 << 31;

/// Special-register slots, at the start of every register file.
pub(crate) mod special {
    pub const TID: u32 = 0; // .x .y .z = 0, 1, 2
    pub const NTID: u32 = 3;
    pub const CTAID: u32 = 6;
    pub const NCTAID: u32 = 9;
    pub const LANEID: u32 = 12;
    pub const WARPID: u32 = 13;
    pub const NWARPID: u32 = 14;
    pub const SMID: u32 = 15;
    pub const NSMID: u32 = 16;
    pub const GRIDID: u32 = 17;
    pub const LANEMASK_EQ: u32 = 18;
    pub const LANEMASK_LE: u32 = 19;
    pub const LANEMASK_LT: u32 = 20;
    pub const LANEMASK_GE: u32 = 21;
    pub const LANEMASK_GT: u32 = 22;
    pub const DYNAMIC_SMEM_SIZE: u32 = 23;
    pub const TOTAL_SMEM_SIZE: u32 = 24;
    pub const WARPSIZE: u32 = 25;
    /// The carry flag of `add.cc` / `addc`.
    pub const CARRY: u32 = 26;
    /// Destination of `_` operands.
    pub const SINK: u32 = 27;
    pub const COUNT: u32 = 28;
}

/// Generic-address windows (bits 40..48 of a generic address select the state space).
pub(crate) mod window {
    pub const SHIFT: u32 = 40;
    pub const MASK: u64 = (1 << SHIFT) - 1;
    pub const LOCAL: u64 = 1;
    pub const SHARED: u64 = 2;
    pub const PARAM: u64 = 3;
    /// Module-scope `.global` / `.const` variables (ordinary global allocations, just placed here).
    pub const MODULE: u64 = 4;
}

/// State space of a memory instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sp {
    Generic,
    Global,
    Shared,
    Local,
    Param,
    Const,
}

/// Comparison of `setp` / `set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

/// Operand type of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpTy {
    /// Integer of `bits` bits, signed or not.
    Int { bits: u8, signed: bool },
    F16,
    Bf16,
    F32,
    F64,
}

/// Boolean combination of `setp.cmp.bop` and `set.cmp.bop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BoolOp {
    None,
    And,
    Or,
    Xor,
}

/// Rounding modes of `cvt` and the float arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rnd {
    /// No modifier (only where the operation is exact or the type implies one).
    Default,
    Rn,
    Rz,
    Rm,
    Rp,
    /// Round to nearest even integer / toward zero / down / up (`.rni` ...), result integral.
    Rni,
    Rzi,
    Rmi,
    Rpi,
    /// `.rna` (nearest, ties away from zero; cvt to tf32 only).
    Rna,
}

/// A numeric type of `cvt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumTy {
    Int { bits: u8, signed: bool },
    F16,
    Bf16,
    F32,
    F64,
}

/// f32 unary functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fun {
    /// `rcp.rn` (IEEE division).
    RcpRn,
    RcpApprox,
    SqrtRn,
    SqrtApprox,
    RsqrtApprox,
    Ex2Approx,
    Lg2Approx,
    SinApprox,
    CosApprox,
    TanhApprox,
}

/// Binary operations of the f32/f64 arithmetic with a directed rounding mode (the rare path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FBin {
    Add,
    Sub,
    Mul,
}

/// f16/bf16 (packed or scalar) arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HOp {
    Add,
    Sub,
    Mul,
    Fma,
    Neg,
    Abs,
    Min,
    Max,
}

/// Atomic operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtomOp {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    Exch,
    Cas,
    And,
    Or,
    Xor,
}

/// Operand type of an atomic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtomTy {
    Int { bits: u8, signed: bool },
    F32,
    F64,
}

/// `shfl.sync` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

/// `vote.sync` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

/// `redux.sync` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReduxOp {
    Add,
    MinU,
    MinS,
    MaxU,
    MaxS,
    And,
    Or,
    Xor,
}

/// The shape and types of an `mma.sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MmaShape {
    /// 8 or 16.
    pub k: u8,
    /// A/B are bf16 (else f16).
    pub bf16: bool,
    /// C/D are f32 (else packed f16 pairs).
    pub f32_acc_c: bool,
    pub f32_acc_d: bool,
}

/// A wgmma instruction (`Coll::Wgmma`; the instructions are documented in `crate::wgmma`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WgOp {
    Fence,
    Commit,
    /// `wait_group N` with N in `Inst::imm`; pool[aux..aux + uses] lists every D and A register of
    /// the kernel's `mma_async`s as *uses*, so that the register allocator keeps them live (and
    /// unshared) up to every wait, where in-flight results land.
    Wait { uses: u16 },
    /// `mma_async`: pool[aux..aux + N/2] = D (written), pool[aux + N/2..aux + N] = D again (read:
    /// the input accumulator), then the 4 A registers when A comes from registers. a = A
    /// descriptor slot (NONE with A in registers), b = B descriptor slot, c = scale-d predicate slot
    /// (NONE when scale-d is an immediate, see [`WgShape`]).
    Mma(WgShape),
}

/// Shape and immediates of an `mma_async`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WgShape {
    /// N of `.m64nNk16`.
    pub n: u16,
    /// The [`wgflag`] bits.
    pub flags: u8,
}

/// The flag bits of [`WgShape::flags`].
pub(crate) mod wgflag {
    pub const BF16: u8 = 1;
    pub const A_REGS: u8 = 2;
    pub const NEG_A: u8 = 4;
    pub const NEG_B: u8 = 8;
    pub const TRANS_A: u8 = 16;
    pub const TRANS_B: u8 = 32;
    pub const SCALE_D_IMM: u8 = 64;
    pub const SCALE_D_ONE: u8 = 128;
}

impl WgShape {
    pub(crate) fn has(self, f: u8) -> bool {
        self.flags & f != 0
    }
    /// Whether A comes from registers (else from shared memory).
    pub(crate) fn a_regs(self) -> bool {
        self.has(wgflag::A_REGS)
    }
    /// D registers per thread.
    pub(crate) fn nd(self) -> usize {
        self.n as usize / 2
    }
}

/// Warp collectives: a lane stops at one and the warp scheduler runs it once every lane of its
/// member mask has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coll {
    /// d = value, a = src, b = lane/offset operand, c = clamp operand, imm = mask slot, aux = pred
    /// destination slot (or NONE).
    Shfl(ShflMode),
    /// d = dest, a = pred source, b = negate (0/1 in imm), mask in c.
    Vote(VoteMode),
    /// d = dest, a = source, c = mask.
    Redux(ReduxOp),
    /// `match.any`: d = dest, a = source, c = mask, imm = 32 or 64 bits.
    MatchAny,
    /// `match.all`: d = dest, a = source, c = mask, b = predicate destination (or NONE).
    MatchAll,
    /// `bar.warp.sync`: c = mask.
    WarpSync,
    /// `activemask.b32 d`.
    ActiveMask,
    /// `ldmatrix`: pool[aux..aux+num] = destinations, a = address slot, imm = offset.
    LdMatrix { num: u8, trans: bool },
    /// `mma.sync`: pool[aux..] = d, a, b, c registers.
    Mma(MmaShape),
    /// `elect.sync d|p, mask`: d = lane-number destination (or SINK), b = predicate destination
    /// (or SINK), c = mask.
    Elect,
    /// `setmaxnreg.{inc,dec}.sync.aligned.u32 n` (`.aligned` over the warpgroup; no effect on data).
    SetMaxNReg { inc: bool, n: u16 },
    /// `stmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}{.shared}.b16 [a + imm], {pool[aux..aux+num]}`
    /// (`generic`: the address is a generic one).
    StMatrix { num: u8, trans: bool, generic: bool },
    /// `wgmma.*`: a warpgroup collective (all 128 threads), run by `crate::warpgroup`; the
    /// operands are documented at [`WgOp`], the instructions in `crate::wgmma`.
    Wgmma(WgOp),
}

/// Which `mbarrier.arrive` (PTX ISA "mbarrier.arrive", "mbarrier.arrive_drop").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArriveKind {
    /// Arrive-on with count b (1 when b is NONE).
    Arrive,
    /// `.expect_tx`: expect-tx of b bytes, then arrive-on with count 1.
    ExpectTx,
    /// `.noComplete`: arrive-on with count b that must not complete the phase.
    NoComplete,
    /// `arrive_drop`: the expected count drops by b (1 when NONE), then arrive-on with count b.
    Drop,
    /// `arrive_drop.expect_tx`: expect-tx of b bytes, expected count drops by 1, arrive-on 1.
    DropExpectTx,
}

/// The opcode. Integer widths (`w`) are in bits; `f` holds float flags ([`FTZ`], [`SAT`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Nop,
    // ---- moves
    /// d = a.
    Mov,
    /// d = a with only the low `w` bits (mov between registers of different declared width).
    MovMask { w: u8 },
    /// d = pool[aux..aux+n] packed, `bits` bits each, element 0 lowest.
    Pack { n: u8, bits: u8 },
    /// pool[aux..aux+n] = pieces of a.
    Unpack { n: u8, bits: u8 },
    /// d = c ? a : b.
    Selp,
    /// d = this thread's step count (`%clock`, `%clock64`).
    Clock,
    // ---- integer
    Add { w: u8 },
    Sub { w: u8 },
    /// add.cc / addc / sub.cc / subc: imm bit 0 = carry in, bit 1 = carry out, bit 2 = subtract.
    AddCarry { w: u8, flags: u8 },
    AddSatS32,
    SubSatS32,
    MulLo { w: u8 },
    MulHi { w: u8, signed: bool },
    MulWide { w: u8, signed: bool },
    MadLo { w: u8 },
    MadHi { w: u8, signed: bool },
    MadWide { w: u8, signed: bool },
    Div { w: u8, signed: bool },
    Rem { w: u8, signed: bool },
    Min { w: u8, signed: bool },
    Max { w: u8, signed: bool },
    Abs { w: u8 },
    Neg { w: u8 },
    And,
    Or,
    Xor,
    Not { w: u8 },
    /// cnot: d = (a == 0).
    Cnot,
    Shl { w: u8 },
    Shr { w: u8, signed: bool },
    /// shf.l / shf.r: d = funnel shift of b:a by c; imm bit 0 = right, bit 1 = clamp.
    Shf { right: bool, clamp: bool },
    Bfe { w: u8, signed: bool },
    /// pool[aux..aux+4] = a (field), b (base), pos, len.
    Bfi { w: u8 },
    Brev { w: u8 },
    Popc { w: u8 },
    Clz { w: u8 },
    Bfind { w: u8, signed: bool, shiftamt: bool },
    /// prmt with mode 0 (default), 1 f4e, 2 b4e, 3 rc8, 4 ecl, 5 ecr, 6 rc16.
    Prmt { mode: u8 },
    // ---- predicates (0/1)
    PNot,
    // ---- comparisons
    /// d = bop(cmp(a, b), c ^ negc); second destination (slot in imm, or NONE) = bop(!cmp, c ^ negc).
    SetP { cmp: Cmp, ty: CmpTy, bop: BoolOp, negc: bool, ftz: bool },
    /// set: d = result ? (float ? 1.0 : 0xffffffff) : 0; imm holds nothing.
    Set { cmp: Cmp, ty: CmpTy, bop: BoolOp, negc: bool, ftz: bool, float_dst: bool },
    /// testp: d = property of a (imm: 0 finite, 1 infinite, 2 number, 3 notanumber, 4 normal, 5 subnormal).
    Testp { f64: bool, what: u8 },
    // ---- f32
    AddF32 { f: u8 },
    SubF32 { f: u8 },
    MulF32 { f: u8 },
    FmaF32 { f: u8 },
    DivF32 { f: u8, approx: bool },
    MinF32 { f: u8, nan: bool },
    MaxF32 { f: u8, nan: bool },
    NegF32 { f: u8 },
    AbsF32 { f: u8 },
    FunF32 { f: u8, fun: Fun },
    CopysignF32,
    /// add/sub/mul with .rz/.rm/.rp.
    RoundF32 { op: FBin, rnd: Rnd, f: u8 },
    /// fma.{rz,rm,rp}.f32: the exact a * b + c rounded in a directed mode (libdevice's expf and
    /// tanhf use them).
    FmaDirectedF32 { rnd: Rnd, f: u8 },
    // ---- f64
    AddF64,
    SubF64,
    MulF64,
    FmaF64,
    DivF64,
    MinF64 { nan: bool },
    MaxF64 { nan: bool },
    NegF64,
    AbsF64,
    /// rcp / sqrt / rsqrt (f64; the approximate forms computed exactly).
    FunF64 { fun: Fun },
    CopysignF64,
    RoundF64 { op: FBin, rnd: Rnd },
    // ---- f16 / bf16: `bf16` picks the format, `x2` a packed pair. Fma's c is in c.
    Half { op: HOp, bf16: bool, x2: bool, f: u8 },
    // ---- conversions
    Cvt { to: NumTy, from: NumTy, rnd: Rnd, f: u8 },
    /// cvt.rn{.relu}{.satfinite}.{f16x2,bf16x2}.f32 d, a, b: a to the upper half, b to the lower.
    CvtPack { bf16: bool, relu: bool, satfinite: bool },
    /// cvta (to generic: `to == false`) for a state space.
    Cvta { to: bool, space: Sp },
    /// isspacep: d = whether generic address a is in the space.
    IsSpace { space: Sp },
    // ---- memory
    /// d (or pool[aux..aux+n] when n > 1) = load of n elements of `size` bytes at [a + imm];
    /// `sext` sign-extends each element to `reg_bits`.
    Ld { space: Sp, size: u8, n: u8, sext: bool, reg_bits: u8 },
    /// Store b (or pool[aux..aux+n]) at [a + imm].
    St { space: Sp, size: u8, n: u8 },
    /// d = old value; [a + imm] op= b (c: compare value of cas). `ret == false` for red.
    Atom { space: Sp, op: AtomOp, ty: AtomTy, ret: bool },
    /// cp.async: [d + imm] <- [a + ext offset in c]; b = src-size slot (or NONE), `ignore` when b
    /// is the ignore-src predicate; `size` bytes.
    CpAsync { size: u8, ignore_pred: bool },
    CpAsyncCommit,
    /// cp.async.wait_group imm.
    CpAsyncWait,
    CpAsyncWaitAll,
    // ---- mbarrier (PTX ISA "mbarrier"): the object at [a + imm] in `space` (Shared or Generic)
    /// mbarrier.init [a + imm], b.
    MbarInit { space: Sp },
    /// mbarrier.inval [a + imm].
    MbarInval { space: Sp },
    /// d = state; arrive-on (and expect-tx) on [a + imm], b = count or tx-count (or NONE).
    MbarArrive { space: Sp, kind: ArriveKind },
    /// mbarrier.expect_tx / mbarrier.complete_tx [a + imm], b.
    MbarTx { space: Sp, complete: bool },
    /// Possibly blocking: d = waitComplete of mbarrier.test_wait / try_wait{.parity} [a + imm], b
    /// (state or phase parity).
    MbarWait { space: Sp, parity: bool },
    /// fence.proxy.async (generic <-> async proxy ordering for shared memory).
    FenceProxyAsync,
    // ---- bulk asynchronous copies (PTX ISA "cp.async.bulk", "cp.async.bulk.tensor"); extra
    // address offsets live in `Kernel::offsets` from index c.
    /// global -> shared: [d + imm] <- [a + off[c]], b bytes, complete-tx on [pool[aux] + off[c+1]].
    BulkLoad,
    /// shared -> global, bulk async-group: [d + imm] <- [a + off[c]], b bytes.
    BulkStore,
    /// global -> shared tensor copy: [d + imm] <- [tensor map a + off[c], coords pool[aux..aux+dim]],
    /// complete-tx on [pool[aux+dim] + off[c+1]].
    TensorLoad { dim: u8 },
    /// shared -> global tensor copy, bulk async-group: [tensor map a + off[c], coords
    /// pool[aux..aux+dim]] <- [b + imm].
    TensorStore { dim: u8 },
    /// cp.async.bulk.commit_group.
    BulkCommit,
    /// cp.async.bulk.wait_group{.read} imm.
    BulkWait { read: bool },
    // ---- control
    /// Jump to instruction imm.
    Bra,
    Exit,
    Trap,
    /// Blocking: bar.sync / barrier.sync (arrive == false) or bar.arrive; a = barrier id slot,
    /// b = thread count slot (or NONE).
    Bar { arrive: bool },
    /// Blocking: a warp collective.
    Coll(Coll),
}

/// Float flag: flush subnormal inputs and results to zero.
pub(crate) const FTZ: u8 = 1;
/// Float flag: clamp the result to [0, 1] (NaN to 0).
pub(crate) const SAT: u8 = 2;

/// One pre-decoded instruction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inst {
    pub op: Op,
    /// Guard predicate slot, `| GUARD_NEG` for `@!`, or [`NO_GUARD`].
    pub guard: u32,
    pub d: u32,
    pub a: u32,
    pub b: u32,
    pub c: u32,
    /// Address offset, branch target, second destination, ... (per opcode).
    pub imm: i64,
    /// First operand-pool index, where the opcode uses the pool.
    pub aux: u32,
    /// 1-based PTX line.
    pub line: u32,
}

impl Inst {
    pub(crate) fn new(op: Op, line: usize) -> Inst {
        Inst { op, guard: NO_GUARD, d: NONE, a: NONE, b: NONE, c: NONE, imm: 0, aux: 0, line: line as u32 }
    }
}

/// One kernel parameter as declared in the `.entry` parameter list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    pub name: String,
    /// Size in bytes.
    pub size: usize,
    /// Alignment in bytes.
    pub align: usize,
    /// Byte offset in the parameter buffer.
    pub offset: usize,
}

/// A lowered entry, ready to launch.
#[derive(Debug, Clone)]
pub(crate) struct Kernel {
    pub name: String,
    pub params: Vec<ParamInfo>,
    pub param_bytes: usize,
    pub code: Vec<Inst>,
    pub pool: Vec<u32>,
    /// Second address offsets (cp.async sources), indexed by `Inst::c`.
    pub offsets: Vec<i64>,
    /// Register-file template: constants filled in, everything else zero.
    pub init_regs: Vec<u64>,
    /// Bytes of static shared memory; the dynamic region starts at `dynamic_shared_base`.
    pub static_shared_bytes: usize,
    pub dynamic_shared_base: usize,
    /// Per-thread `.local` bytes.
    pub local_bytes: usize,
    pub maxntid: Option<[u32; 3]>,
    pub reqntid: Option<[u32; 3]>,
}
