//! The wasmtime runtime: engine, component cache, sandbox, limits, one module per plugin world.
