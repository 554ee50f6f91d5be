pub use tessera_codegen as codegen;
