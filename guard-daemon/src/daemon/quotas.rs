//! Answers to the plan quotas' control requests (`guard plan …`, `guard quota …`).
use crate::control::{Request, Response};

/// Answers a `plan` or `quota` request; other requests are not this module's.
pub(super) fn handle(shared: &super::Shared, req: Request) -> Response {
    use crate::quota::admin::AdminError;
    let Some(q) = shared.quotas.as_ref() else {
        return Response::failed(&AdminError::Off);
    };
    let now_s = crate::clock::now_ms() / 1000;
    let result = match req {
        Request::PlanSet { user, plan } => q.plan_set(&user, &plan).map(Response::ok),
        Request::PlanRm { user } => q.plan_rm(&user).map(Response::ok),
        Request::PlanLs => q.plan_ls().map(Response::ok),
        Request::QuotaShow { target } => Ok(Response::ok(q.usage(&target, now_s))),
        Request::QuotaReset { target, rule } => q.reset(&target, rule.as_deref()).map(Response::ok),
        other => return Response::err(format!("{} is not a quota command", other.command())),
    };
    result.unwrap_or_else(|e| Response::failed(&e))
}
