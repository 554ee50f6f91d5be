use tessera_codegen::params::DeviceEnum;

#[derive(Clone, Copy, DeviceEnum)]
#[repr(u8)]
enum Activation {
    None = 0,
    Relu = 1,
}

fn main() {}
