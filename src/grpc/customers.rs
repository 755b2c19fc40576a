//! `segmentd.v1.CustomerService`: check and convert the request, call the
//! engine, convert the result back.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use super::audit::{self, Audit};
use super::check::{customer_at, field, optional, optional_evaluation_time, All, Checked};
use super::convert::{
    customer_to_proto, features_to_proto, import_batch_from_proto, new_profile_from_proto,
    profile_update_from_proto, ProfileRules,
};
use super::paging::{page_size, page_time, PagedRequest};
use super::pb::customer_service_server::CustomerService;
use super::pb::{self};
use super::{finish_import, import_each, ready, ApiLimits, EngineSlot};
use crate::domain::error::echo;
use crate::domain::{CustomerId, Error, Timestamp};
use crate::engine::{compile_filter, CustomerUpdate, Engine, ImportCounts};

/// The CustomerService handlers.
#[derive(Debug, Clone)]
pub struct CustomerApi {
    /// The engine, once ready.
    engine: EngineSlot,
    /// Input limits.
    limits: ApiLimits,
}

impl CustomerApi {
    /// Handlers over `engine`, enforcing `limits`.
    pub fn new(engine: EngineSlot, limits: ApiLimits) -> Self {
        CustomerApi { engine, limits }
    }
}

fn rules(engine: &Engine) -> ProfileRules {
    ProfileRules {
        currency: engine.settings().reporting_currency,
        today: Timestamp::now().date(),
    }
}

/// An optional request id (AIP-155), which is a UUID.
fn request_id(text: String) -> Checked<Option<String>> {
    let Some(request_id) = optional(text) else {
        return Ok(None);
    };
    match uuid::Uuid::try_parse(&request_id) {
        Ok(_) => Ok(Some(request_id)),
        Err(_) => Err(Error::invalid(
            "request_id",
            format!(
                "expected a UUID such as 3fa85f64-5717-4562-b3fc-2c963f66afa6, got {}",
                echo(&request_id)
            ),
        )),
    }
}

fn check_batch_size(count: usize, limits: ApiLimits) -> Result<(), Error> {
    if count > limits.max_batch_size {
        return Err(Error::ResourceExhausted {
            subject: "customers".into(),
            description: format!(
                "at most {} customers per message, got {count}",
                limits.max_batch_size
            ),
        });
    }
    Ok(())
}

#[tonic::async_trait]
impl CustomerService for CustomerApi {
    async fn create_customer(
        &self,
        request: Request<pb::CreateCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let (id, request_id, profile) = (
            field("customer_id", CustomerId::parse(&request.customer_id)),
            request_id(request.request_id),
            new_profile_from_proto(request.customer.as_ref(), &rules(&engine)),
        )
            .all()?;
        let customer = engine
            .create_customer(id, profile, request_id)
            .await
            .map_err(|error| error.under("customer."))?;
        Ok(Response::new(customer_to_proto(&customer)))
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let engine = ready(&self.engine)?;
        let id = field("name", CustomerId::from_name(&request.into_inner().name))?;
        let customer = engine.get_customer(&id)?;
        Ok(Response::new(customer_to_proto(&customer)))
    }

    async fn update_customer(
        &self,
        request: Request<pb::UpdateCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let customer = request
            .customer
            .ok_or_else(|| Error::invalid("customer", "required"))?;
        let id = field("customer.name", CustomerId::from_name(&customer.name))?;
        let paths = request.update_mask.map(|mask| mask.paths);
        let (fields, profile) =
            profile_update_from_proto(&customer, paths.as_deref().unwrap_or(&[]), &rules(&engine))?;
        let updated = engine
            .update_customer(CustomerUpdate {
                id,
                profile,
                fields,
                etag: optional(customer.etag),
                allow_missing: request.allow_missing,
            })
            .await
            .map_err(|error| error.under("customer."))?;
        Ok(Response::new(customer_to_proto(&updated)))
    }

    async fn delete_customer(
        &self,
        request: Request<pb::DeleteCustomerRequest>,
    ) -> Result<Response<()>, Status> {
        let audit = Audit::new(
            &request,
            "DeleteCustomer",
            audit::customer(&request.get_ref().name),
        );
        audit.outcome(
            async {
                let engine = ready(&self.engine)?;
                let request = request.into_inner();
                let id = field("name", CustomerId::from_name(&request.name))?;
                engine
                    .delete_customer(&id, optional(request.etag).as_deref())
                    .await?;
                Ok(Response::new(()))
            }
            .await,
        )
    }

    /// Without a filter or an evaluation time, every customer is listed;
    /// with either, those the filter selects as of that time.
    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let page_size = page_size(request.page_size, self.limits)?;
        let page_token_key = engine.page_token_key();
        let paged = PagedRequest::new(&page_token_key, "ListCustomers").field(&request.filter);
        let (rule, requested) = (
            field("filter", compile_filter(&request.filter)),
            optional_evaluation_time(request.evaluation_time.as_ref()),
        )
            .all()?;
        let resume = paged.resume::<CustomerId>(&request.page_token)?;
        let (first_page_time, after) =
            resume.map_or((None, None), |resume| (resume.at, Some(resume.after)));
        let selects =
            !request.filter.trim().is_empty() || requested.is_some() || first_page_time.is_some();
        let at = selects
            .then(|| page_time(requested, first_page_time))
            .transpose()?;
        let selection = at.map(|at| (rule, at));
        let page = engine.customer_page(selection, after, page_size).await?;
        Ok(Response::new(pb::ListCustomersResponse {
            customers: page.customers.iter().map(customer_to_proto).collect(),
            next_page_token: page
                .next
                .map(|last| paged.next_token(at, &last))
                .unwrap_or_default(),
        }))
    }

    async fn get_customer_features(
        &self,
        request: Request<pb::GetCustomerFeaturesRequest>,
    ) -> Result<Response<pb::CustomerFeatures>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let (id, at) = customer_at(&request.name, request.evaluation_time.as_ref())?;
        let features = engine.customer_features(id, at).await?;
        let currency = engine.settings().reporting_currency;
        Ok(Response::new(features_to_proto(&features, currency)))
    }

    async fn import_customers(
        &self,
        request: Request<Streaming<pb::ImportCustomersRequest>>,
    ) -> Result<Response<pb::ImportCustomersResponse>, Status> {
        let engine = ready(&self.engine)?;
        let mut stream = request.into_inner();
        let mut totals = ImportCounts::default();
        let (batches, outcome) = import_each(
            &mut stream,
            |message: pb::ImportCustomersRequest| {
                check_batch_size(message.customers.len(), self.limits)?;
                Ok(import_batch_from_proto(
                    &message.customers,
                    &rules(&engine),
                )?)
            },
            |batch| {
                let engine = Arc::clone(&engine);
                async move {
                    engine
                        .import_customers(batch)
                        .await
                        .map_err(|error| error.under("customers").into())
                }
            },
            |counts: ImportCounts| {
                totals.created += counts.created;
                totals.updated += counts.updated;
            },
        )
        .await;
        let response = pb::ImportCustomersResponse {
            created_count: totals.created as i64,
            updated_count: totals.updated as i64,
            batch_count: batches as i64,
        };
        let applied = format!("{} customers", totals.created + totals.updated);
        finish_import(&engine, outcome.map(|()| response), batches, &applied).await
    }
}
