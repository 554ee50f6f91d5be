use tessera_codegen::params::DeviceEnum;

#[derive(Clone, Copy, DeviceEnum)]
#[repr(C)]
struct Activation {
    kind: i32,
}

fn main() {}
