use tessera_codegen::params::DeviceEnum;

#[derive(Clone, Copy, DeviceEnum)]
#[repr(i32)]
#[device_enum(prefix = "ACT_")]
enum Activation {
    None = 0,
    Relu,
}

fn main() {}
