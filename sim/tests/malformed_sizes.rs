//! Declarations with absurd sizes, alignments and thread counts are parse errors (or, for launch
//! bounds, plain configuration checks), never an arithmetic overflow or an allocation that aborts
//! the process. Found by the PTX fuzzer (`runtime/tests/fuzz_ptx.rs`): mutated array lengths,
//! `.align` values and `.maxntid` dimensions.

mod common;

use common::kernel;
use tessera_sim::{launch, GlobalMemory, LaunchConfig, Module, SimError, SimOptions};

const REGS: &str = ".reg .b32 %r<4>;";

fn parse_error(ptx: &str) -> String {
    match Module::parse(ptx) {
        Err(e @ SimError::Parse { .. }) => {
            let message = e.to_string();
            assert_eq!(message.lines().count(), 1, "{message}");
            message
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn huge_parameters_are_rejected() {
    let e = parse_error(&kernel(".param .align 8 .b8 p[9223372036854775807]", "ret;"));
    assert!(e.contains("`p`") && e.contains("32764"), "{e}");
    // The element count times the element size overflows.
    let e = parse_error(&kernel(".param .b64 p[4611686018427387904]", "ret;"));
    assert!(e.contains("`p`"), "{e}");
    let e = parse_error(&kernel(".param .b8 p[18446744073709551616]", "ret;"));
    assert!(e.contains("bad integer") || e.contains("`p`"), "{e}");
    // Each parameter fits, all of them together do not.
    let e = parse_error(&kernel(".param .b8 a[20000], .param .b8 b[20000]", "ret;"));
    assert!(e.contains("40000") && e.contains("32764"), "{e}");
}

#[test]
fn huge_variables_are_rejected_before_anything_is_allocated() {
    for (decl, space) in [
        (".global .b8 g[1099511627776];", ".global"),
        (".const .b32 c[1048576];", ".const"),
        (".shared .b8 s[4294967296][4294967296];", ".shared"),
        (".shared .align 16 .b8 s[232449];", ".shared"),
    ] {
        let ptx = format!(".version 9.0\n.target sm_80\n.address_size 64\n{decl}\n.visible .entry k()\n{{\nret;\n}}\n");
        let e = parse_error(&ptx);
        assert!(e.contains(space) || e.contains("overflows"), "{decl}: {e}");
    }
    // Per-thread local memory: one variable, and several that add up.
    parse_error(&kernel("", &format!("{REGS}\n.local .b8 l[1099511627776];\nret;")));
    let e = parse_error(&kernel("", &format!("{REGS}\n.local .b8 a[300000];\n.local .b8 b[300000];\nret;")));
    assert!(e.contains(".local"), "{e}");
}

#[test]
fn alignments_must_be_powers_of_two_of_sensible_size() {
    for align in ["0", "3", "9223372036854775808", "4294967296"] {
        let e = parse_error(&kernel("", &format!("{REGS}\n.shared .align {align} .b8 s[16];\nret;")));
        assert!(e.contains(".align"), "{align}: {e}");
        let e = parse_error(&kernel(&format!(".param .align {align} .b8 p[8]"), "ret;"));
        assert!(e.contains(".align"), "{align}: {e}");
    }
    // What NVRTC and CUTLASS-style code write still parses.
    Module::parse(&kernel(".param .align 8 .b8 p[16]", &format!("{REGS}\n.shared .align 1024 .b8 s[16];\nret;"))).unwrap();
}

#[test]
fn launch_bounds_past_u32_are_rejected_and_huge_ones_do_not_overflow() {
    let with = |directive: &str| {
        format!(".version 9.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{directive}\n{{\nret;\n}}\n")
    };
    let e = parse_error(&with(".maxntid 4294967296, 1, 1"));
    assert!(e.contains(".maxntid"), "{e}");
    // The product of three u32 maxima does not fit u64; the check must still just pass.
    let module = Module::parse(&with(".maxntid 4294967295, 4294967295, 4294967295")).unwrap();
    let config = LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], dynamic_shared_bytes: 0 };
    launch(&module, "k", &config, &[], &GlobalMemory::new(), &SimOptions::default()).unwrap();
}
