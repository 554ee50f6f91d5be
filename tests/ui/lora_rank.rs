#[tessera::lora(dtype = bf16, rank = 3)]
struct Lora;

fn main() {}
