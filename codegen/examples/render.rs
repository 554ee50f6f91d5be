//! Prints the generated source of one attention spec: `cargo run -p tessera-codegen --example render -- bf16 128 causal`.
use tessera_codegen::{Arch, AttentionSpec, ElemType};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dtype: ElemType = args.get(1).map(String::as_str).unwrap_or("bf16").parse()?;
    let head_dim: u32 = args.get(2).map(String::as_str).unwrap_or("128").parse()?;
    let causal = args.get(3).is_some_and(|a| a == "causal");
    let src = AttentionSpec::new(dtype, head_dim, causal, 8, 2).render(Arch::SM80)?;
    print!("{}", src.cuda_src);
    Ok(())
}
