use tessera_codegen::params::KernelParams;

#[derive(Clone, Copy, KernelParams)]
#[repr(i32)]
enum Mode {
    A = 0,
}

fn main() {}
