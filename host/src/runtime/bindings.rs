//! wasmtime bindgen for the three worlds of `weir:plugin`: the host-import
//! traits (`host`, `state`, `lookup`), their `add_to_linker`, and the WIT
//! record types.
//!
//! The enricher world generates the shared `types` and `host` interfaces;
//! the other worlds reuse them through `with`, so e.g. `types::Failure` is
//! one Rust type for all worlds. Exports are not called through the
//! generated `Guest` wrappers: `contract` resolves them by the exact
//! (versioned) name the component exports, and the hot path lowers batches
//! from borrowed slices (see `wire`).

pub mod enricher {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "enricher",
        imports: { default: trappable },
    });
}

pub mod projection {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "projection",
        imports: { default: trappable },
        with: {
            "weir:plugin/types": crate::runtime::bindings::enricher::weir::plugin::types,
            "weir:plugin/host": crate::runtime::bindings::enricher::weir::plugin::host,
        },
    });
}

pub mod command_handler {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "command-handler",
        imports: { default: trappable },
        with: {
            "weir:plugin/types": crate::runtime::bindings::enricher::weir::plugin::types,
            "weir:plugin/host": crate::runtime::bindings::enricher::weir::plugin::host,
        },
    });
}

pub use enricher::weir::plugin::types;
