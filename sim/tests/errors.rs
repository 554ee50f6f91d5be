//! Clear errors for malformed PTX, unsupported instructions, missing entries, bad launches.

mod common;

use common::kernel;
use tessera_sim::{launch, GlobalMemory, LaunchConfig, Module, SimError, SimOptions};

fn parse_err(text: &str) -> SimError {
    match Module::parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn malformed_ptx_names_the_line() {
    let text = kernel("", "\t.reg .b32 %r<4>;\n\tadd.s32 %r1, %r2 %r3;\n\tret;");
    match parse_err(&text) {
        SimError::Parse { line, message } => {
            assert_eq!(line, 8);
            assert!(message.contains("expected `,` or `;`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let text = kernel("", "\t.reg .b32 %r<4>;\n\tmov.u32 %r9, 1;");
    assert!(matches!(parse_err(&text), SimError::Parse { line: 8, ref message } if message.contains("undeclared register `%r9`")));
    let text = kernel("", "\t.reg .pred %p<2>;\n\t@%p1 bra $L_nowhere;");
    assert!(matches!(parse_err(&text), SimError::Parse { ref message, .. } if message.contains("undefined label `$L_nowhere`")));
    assert!(matches!(parse_err(".version 9.0\n.entry k(\n{\n}"), SimError::Parse { .. }));
    assert!(matches!(parse_err(".version 9.0\n.entry k()\n{\n\tret;\n"), SimError::Parse { .. }));
    let e = parse_err(".entry k() { ret; } $");
    assert!(e.to_string().starts_with("PTX parse error at line 1"), "{e}");
}

#[test]
fn unsupported_instructions_are_named_with_their_line() {
    let cases = [
        ("\t.reg .b32 %r<4>;\n\tfrobnicate.b32 %r1, %r2;", "frobnicate.b32"),
        ("\t.reg .b32 %r<4>;\n\t.reg .b64 %rd<2>;\n\ttex.2d.v4.s32.s32 {%r0, %r1, %r2, %r3}, [%rd1, {%r1, %r2}];", "tex.2d.v4.s32.s32"),
        ("\t.reg .b16 %h<4>;\n\tadd.rz.f16 %h1, %h2, %h3;", "add.rz.f16"),
        ("\t.reg .b32 %r<4>;\n\tcvt.rna.tf32.f32 %r1, %r2;", "cvt.rna.tf32.f32"),
        ("\t.reg .b32 %r<4>;\n\tadd.s32.foo %r1, %r2, %r3;", "add.s32.foo"),
        ("\t.reg .b32 %r<4>;\n\tcall.uni foo, (%r1);", "call.uni"),
    ];
    for (body, name) in cases {
        let text = kernel("", &format!("{body}\n\tret;"));
        match parse_err(&text) {
            SimError::Unsupported { instruction, line } => {
                assert_eq!(instruction, name);
                assert_eq!(line, 6 + body.lines().count(), "{name}");
                let msg = SimError::Unsupported { instruction, line }.to_string();
                assert!(msg.contains(name) && msg.contains("line"), "{msg}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn missing_entry_and_wrong_parameters() {
    let m = Module::parse(&kernel(".param .u64 p, .param .u32 n", "\tret;")).expect("parse");
    assert_eq!(m.entries(), vec!["k".to_string()]);
    let params = m.entry_params("k").expect("params");
    assert_eq!(params.iter().map(|p| (p.offset, p.size, p.align)).collect::<Vec<_>>(), vec![(0, 8, 8), (8, 4, 4)]);
    let mem = GlobalMemory::new();
    let config = LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], dynamic_shared_bytes: 0 };
    match launch(&m, "nope", &config, &[0; 12], &mem, &SimOptions::default()) {
        Err(SimError::EntryNotFound { name, available }) => {
            assert_eq!(name, "nope");
            assert_eq!(available, vec!["k".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(m.entry_params("nope"), Err(SimError::EntryNotFound { .. })));
    match launch(&m, "k", &config, &[0; 8], &mem, &SimOptions::default()) {
        Err(SimError::ParamSize { expected: 12, got: 8 }) => {}
        other => panic!("{other:?}"),
    }
    launch(&m, "k", &config, &[0; 12], &mem, &SimOptions::default()).expect("valid launch");
}

#[test]
fn invalid_launch_configurations() {
    let m = Module::parse(".version 9.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n.maxntid 64, 1, 1\n{\n\tret;\n}\n")
    .expect("parse");
    let mem = GlobalMemory::new();
    let go = |grid: [u32; 3], block: [u32; 3], smem: u32| {
        launch(&m, "k", &LaunchConfig { grid, block, dynamic_shared_bytes: smem }, &[], &mem, &SimOptions::default())
    };
    assert!(matches!(go([0, 1, 1], [32, 1, 1], 0), Err(SimError::Config(_))));
    assert!(matches!(go([1, 1, 1], [128, 1, 1], 0), Err(SimError::Config(ref m)) if m.contains(".maxntid")));
    assert!(matches!(go([1, 1, 1], [32, 1, 1], 1 << 20), Err(SimError::Config(ref m)) if m.contains("shared memory")));
    let s = go([3, 2, 1], [64, 1, 1], 0).expect("ok");
    assert_eq!(s.ctas, 6);
    assert_eq!(s.thread_instructions, 6 * 64);
}

#[test]
fn host_memory_errors() {
    let mem = GlobalMemory::new();
    let a = mem.alloc(8);
    assert!(matches!(mem.write(a + 4, &[0; 8]), Err(SimError::Memory(_))));
    assert!(matches!(mem.read(a - 1, &mut [0; 1]), Err(SimError::Memory(_))));
    assert!(matches!(mem.free(a + 1), Err(SimError::Memory(_))));
    mem.free(a).expect("free");
}
