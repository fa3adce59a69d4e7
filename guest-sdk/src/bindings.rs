//! wit-bindgen glue for the three worlds of `weir:plugin`.
//!
//! Each world gets its own module; the shared `types` and `host` interfaces
//! are generated once (in the enricher world) and reused by the others, so
//! the SDK has one Rust type per WIT type. The export macros are public (and
//! hidden): the SDK's `enricher!` / `projection!` / `command_handler!`
//! macros invoke them from the plugin crate.

pub mod enricher {
    wit_bindgen::generate!({
        path: "../wit",
        world: "enricher",
        pub_export_macro: true,
        export_macro_name: "__export_weir_enricher",
        default_bindings_module: "weir_guest::__private::enricher",
        runtime_path: "weir_guest::__private::wit_bindgen::rt",
    });
}

pub mod projection {
    wit_bindgen::generate!({
        path: "../wit",
        world: "projection",
        pub_export_macro: true,
        export_macro_name: "__export_weir_projection",
        default_bindings_module: "weir_guest::__private::projection",
        runtime_path: "weir_guest::__private::wit_bindgen::rt",
        with: {
            "weir:plugin/types@0.1.0": crate::bindings::enricher::weir::plugin::types,
            "weir:plugin/host@0.1.0": crate::bindings::enricher::weir::plugin::host,
        },
    });
}

pub mod command_handler {
    wit_bindgen::generate!({
        path: "../wit",
        world: "command-handler",
        pub_export_macro: true,
        export_macro_name: "__export_weir_command_handler",
        default_bindings_module: "weir_guest::__private::command_handler",
        runtime_path: "weir_guest::__private::wit_bindgen::rt",
        with: {
            "weir:plugin/types@0.1.0": crate::bindings::enricher::weir::plugin::types,
            "weir:plugin/host@0.1.0": crate::bindings::enricher::weir::plugin::host,
        },
    });
}

pub use enricher::weir::plugin::types;
