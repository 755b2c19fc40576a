//! `segmentd.v1.PredictionService`: the prediction model in force, a fit
//! on demand, and the holdout validation. Reading the model needs
//! `personas.read`; a fit or a validation, which runs one, needs
//! `personas.manage`.

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::audit::{self, Audit};
use super::check::{field, optional_evaluation_time, All, Checked};
use super::convert::timestamp_to_proto;
use super::pb::prediction_service_server::PredictionService;
use super::pb::{self};
use super::{ready, EngineSlot};
use crate::domain::predict::{day_of, PredictionModel};
use crate::domain::{Error, Timestamp};

/// The resource the fits change, for the audit log.
const MODEL: &str = "predictionModel";

/// The PredictionService handlers.
#[derive(Debug, Clone)]
pub struct PredictionApi {
    /// The engine, once ready.
    engine: EngineSlot,
}

impl PredictionApi {
    /// Handlers over `engine`.
    pub fn new(engine: EngineSlot) -> Self {
        PredictionApi { engine }
    }
}

/// A fitted model as the API shows it.
fn model_to_proto(model: &PredictionModel) -> pb::PredictionModel {
    let bgnbd = &model.bgnbd;
    pb::PredictionModel {
        bgnbd: Some(pb::BgNbdParameters {
            r: bgnbd.r,
            alpha: bgnbd.alpha,
            a: bgnbd.a,
            b: bgnbd.b,
            log_likelihood: model.bgnbd_log_likelihood,
        }),
        gamma_gamma: model.gamma_gamma.map(|gg| pb::GammaGammaParameters {
            p: gg.p,
            q: gg.q,
            v: gg.v,
            log_likelihood: model.gamma_gamma_log_likelihood,
        }),
        customers: i64::try_from(model.customers).unwrap_or(i64::MAX),
        spenders: i64::try_from(model.spenders).unwrap_or(i64::MAX),
        purchases: i64::try_from(model.purchases).unwrap_or(i64::MAX),
        evaluation_time: Some(timestamp_to_proto(model.evaluation_time)),
        fit_time: Some(timestamp_to_proto(model.fitted_at)),
        fit_duration: prost_types::Duration::try_from(Duration::from_nanos(model.fit_nanos)).ok(),
    }
}

/// A required timestamp field.
fn required_time(name: &str, time: Option<&prost_types::Timestamp>) -> Checked<Timestamp> {
    let time = time.ok_or_else(|| Error::invalid(name, "required"))?;
    field(name, Timestamp::from_parts(time.seconds, time.nanos))
}

#[tonic::async_trait]
impl PredictionService for PredictionApi {
    async fn get_prediction_model(
        &self,
        _request: Request<pb::GetPredictionModelRequest>,
    ) -> Result<Response<pb::PredictionModel>, Status> {
        let engine = ready(&self.engine)?;
        // Before the first fit: one comes in the background once a
        // customer has a purchase, or with RefitPredictionModel.
        let model = engine
            .prediction_model()
            .ok_or_else(|| Error::NotFound(MODEL.to_owned()))?;
        Ok(Response::new(model_to_proto(&model)))
    }

    async fn refit_prediction_model(
        &self,
        request: Request<pb::RefitPredictionModelRequest>,
    ) -> Result<Response<pb::PredictionModel>, Status> {
        let audit = Audit::new(&request, "RefitPredictionModel", audit::named(MODEL));
        audit.outcome(
            async {
                let engine = ready(&self.engine)?;
                let request = request.into_inner();
                let at = optional_evaluation_time(request.evaluation_time.as_ref())?
                    .unwrap_or_else(|| engine.watch_now());
                let model = engine.refit_prediction_model(at).await?;
                Ok(Response::new(model_to_proto(&model)))
            }
            .await,
        )
    }

    async fn validate_prediction_model(
        &self,
        request: Request<pb::ValidatePredictionModelRequest>,
    ) -> Result<Response<pb::ValidatePredictionModelResponse>, Status> {
        let audit = Audit::new(&request, "ValidatePredictionModel", audit::named(MODEL));
        audit.outcome(
            async {
                let engine = ready(&self.engine)?;
                let request = request.into_inner();
                let (calibration_end, holdout_end) = (
                    required_time("calibration_end", request.calibration_end.as_ref()),
                    required_time("holdout_end", request.holdout_end.as_ref()),
                )
                    .all()?;
                if day_of(holdout_end.as_nanos()) <= day_of(calibration_end.as_nanos()) {
                    return Err(Error::invalid(
                        "holdout_end",
                        format!(
                            "must fall on a later UTC day than calibration_end ({calibration_end}), got {holdout_end}"
                        ),
                    )
                    .into());
                }
                let (model, validation) = engine
                    .validate_prediction_model(calibration_end, holdout_end)
                    .await?;
                Ok(Response::new(pb::ValidatePredictionModelResponse {
                    model: Some(model_to_proto(&model)),
                    customers: i64::try_from(validation.customers).unwrap_or(i64::MAX),
                    holdout_days: validation.holdout_days,
                    predicted_purchases: validation.predicted,
                    actual_purchases: i64::try_from(validation.actual).unwrap_or(i64::MAX),
                    naive_purchases: validation.naive,
                    aggregate_error: validation.aggregate_error(),
                    mean_absolute_error: validation.model_mae,
                    naive_mean_absolute_error: validation.naive_mae,
                }))
            }
            .await,
        )
    }
}
