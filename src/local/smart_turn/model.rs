//! One loaded smart-turn model: features in, the probability that the caller's turn is complete out.

use std::path::Path;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;

use super::features::{FEATURES_LEN, FRAMES, MEL_BINS};
use super::{runtime, SmartTurnError};

/// The model's input and output names.
const INPUT: &str = "input_features";
const OUTPUT: &str = "logits";

/// An ONNX Runtime session of the smart-turn model. It runs one inference at a time (`&mut self`), on one thread:
/// the pool gives each worker its own.
pub struct SmartTurnModel {
    session: Session,
}

impl SmartTurnModel {
    /// Loads the model file with ONNX Runtime from `library`.
    pub fn load(model: &Path, library: &Path) -> Result<Self, SmartTurnError> {
        if !model.is_file() {
            return Err(SmartTurnError::ModelMissing(model.to_path_buf()));
        }
        let environment = runtime::environment(library)?;
        let fail = |what: &str, detail: String| SmartTurnError::Runtime { what: what.into(), detail };
        let session = Session::builder(environment)
            .map_err(|e| fail("creating a session", e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| fail("setting the optimisation level", e.to_string()))?
            // One thread per inference: the pool's workers are the parallelism, and a call waits for one judgement.
            .with_intra_threads(1)
            .map_err(|e| fail("setting its threads", e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| fail("setting its threads", e.to_string()))?
            .commit_from_file(model)
            .map_err(|e| fail(&format!("loading {}", model.display()), e.to_string()))?;
        Ok(SmartTurnModel { session })
    }

    /// The probability that the turn is complete, from features of `FEATURES_LEN` values (`[80][800]`).
    pub fn complete_probability(&mut self, features: &[f32]) -> Result<f32, SmartTurnError> {
        if features.len() != FEATURES_LEN {
            return Err(SmartTurnError::Runtime {
                what: "checking the input".into(),
                detail: format!("{} feature values, the model takes {FEATURES_LEN}", features.len()),
            });
        }
        let fail = |e: ort::Error| SmartTurnError::Runtime { what: "running the model".into(), detail: e.to_string() };
        let input = TensorRef::from_array_view(([1usize, MEL_BINS, FRAMES], features)).map_err(fail)?;
        let outputs = self.session.run(ort::inputs![INPUT => input]).map_err(fail)?;
        let (_, values) = outputs[OUTPUT].try_extract_tensor::<f32>().map_err(fail)?;
        match values.first() {
            Some(&p) if p.is_finite() => Ok(p),
            other => Err(SmartTurnError::Runtime {
                what: "reading its output".into(),
                detail: format!("expected one probability, got {other:?}"),
            }),
        }
    }
}
