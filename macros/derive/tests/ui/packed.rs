use tessera_codegen::params::KernelParams;

#[derive(Clone, Copy, KernelParams)]
#[repr(C, packed)]
struct Params {
    n: i32,
    x: u64,
}

fn main() {}
