use tessera_codegen::params::DeviceEnum;

#[derive(Clone, Copy, DeviceEnum)]
#[repr(i32)]
#[device_enum(prefix = "ACT_")]
enum Activation {
    GeluTanh = 0,
    #[device_enum(name = "GELU_TANH")]
    Gelu = 1,
}

fn main() {}
