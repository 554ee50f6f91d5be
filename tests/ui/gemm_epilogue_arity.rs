#[tessera::elementwise]
fn add(a: f32, b: f32) -> f32 {
    a + b
}

#[tessera::gemm(dtype = bf16, epilogue = add)]
struct Gemm;

fn main() {}
