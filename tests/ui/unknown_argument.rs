#[tessera::gemm(dtype = bf16, heads = 4)]
struct Gemm;

fn main() {}
