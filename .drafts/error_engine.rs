
impl From<crate::processor::EngineError> for ApiError {
    fn from(err: crate::processor::EngineError) -> Self {
        use crate::processor::EngineError as E;
        use crate::runtime::LoadError as L;
        let message = err.to_string();
        let unprocessable = |code| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message.clone());
        match err {
            E::Manifest(_) => ApiError::bad_request("invalid_manifest", message),
            E::Load(load) => match load {
                L::NotWasm | L::CoreModule | L::Invalid { .. } => ApiError::bad_request("invalid_component", message),
                L::WrongWorld { .. } => unprocessable("wrong_world"),
                L::IncompatibleVersion { .. } => unprocessable("incompatible_contract"),
                L::MissingExport { .. } => unprocessable("missing_export"),
                L::WrongType { .. } => unprocessable("wrong_export_type"),
                L::UnsupportedImport { .. } => unprocessable("unsupported_import"),
                L::Inspect(_) => unprocessable("plugin_failed"),
            },
            E::Plugin(_) => unprocessable("plugin_failed"),
            // The engine names what is missing; a topic (e.g. a reply topic)
            // or else a plugin / pond / service.
            E::NotFound(m) if m.contains("topic") => ApiError::new(StatusCode::NOT_FOUND, "unknown_topic", m),
            E::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "unknown_plugin", m),
            E::Conflict(m) => ApiError::conflict("conflict", m),
            E::Invalid(m) => ApiError::bad_request("invalid_request", m),
            E::Log(log) => log.into(),
            E::Store(_) => ApiError::internal(message),
            E::Io(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io_error", message),
        }
    }
}
