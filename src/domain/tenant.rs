//! The caller: which tenant a request (and its model calls) belong to. A
//! domain type: the HTTP layer builds it from the API key (`api::auth`), the
//! domain (chat, suggest, agent) takes it, neither imports the other for it.

use uuid::Uuid;

use crate::llm::CallContext;

/// The authenticated caller; every query filters by `tenant.id`.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: Uuid,
    pub request_id: String,
    /// Whether the tenant has spend limits, so its model calls reserve first.
    pub budgeted: bool,
}

impl Tenant {
    /// The usage context for model calls made on this request.
    pub fn call_context(&self, endpoint: &'static str, conversation_id: Option<Uuid>) -> CallContext {
        CallContext {
            tenant_id: Some(self.id),
            request_id: Some(self.request_id.clone()),
            conversation_id,
            endpoint,
            budgeted: self.budgeted,
            meter: None,
            cap_wait: None,
        }
    }
}
