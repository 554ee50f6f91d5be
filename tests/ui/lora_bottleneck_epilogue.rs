#[tessera::lora(dtype = bf16, rank = 16, bottleneck = relu, bias)]
struct Adapter;

fn main() {}
