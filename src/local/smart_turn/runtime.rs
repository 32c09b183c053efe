//! ONNX Runtime, loaded at run time from the shared library `scripts/fetch-onnxruntime` installs.
//!
//! Parley links no ONNX Runtime at build time (the `ort` crate's `load-dynamic` mode): the build downloads nothing
//! and stays small, and the library comes from the `onnxruntime` wheel on PyPI like the model itself. A process can
//! load the library, and create ONNX Runtime's environment, only once: the first pool to start does it and later
//! ones share it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use super::SmartTurnError;

/// The process's ONNX Runtime environment, once loaded.
static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
/// Serialises loading, so two pools starting at once load the library once.
static LOADING: Mutex<()> = Mutex::new(());

/// The environment, loading `library` first if no pool has yet.
pub(super) fn environment(library: &Path) -> Result<&'static Environment, SmartTurnError> {
    if let Some(environment) = ENVIRONMENT.get() {
        return Ok(environment);
    }
    let _loading = LOADING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(environment) = ENVIRONMENT.get() {
        return Ok(environment);
    }
    if !library.is_file() {
        return Err(SmartTurnError::RuntimeMissing(library.to_path_buf()));
    }
    let builder = ort::init_from(library).map_err(|err| SmartTurnError::Runtime {
        what: format!("loading {}", library.display()),
        detail: err.to_string(),
    })?;
    let environment = builder
        .with_name("parley-smart-turn")
        .build()
        .map_err(|err| SmartTurnError::Runtime { what: "creating its environment".into(), detail: err.to_string() })?;
    Ok(ENVIRONMENT.get_or_init(|| environment))
}

/// Where `scripts/fetch-onnxruntime` installs the library unless told otherwise: `$PARLEY_ONNXRUNTIME_LIB`, else
/// `~/.cache/parley/lib/libonnxruntime.so`.
pub fn default_library_path() -> PathBuf {
    if let Some(path) = std::env::var_os("PARLEY_ONNXRUNTIME_LIB") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/parley/lib/libonnxruntime.so")
}
