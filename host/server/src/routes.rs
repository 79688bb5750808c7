//! The route table: every route with its handler and who may call it, in one list, from
//! which the router, the authorization middleware and the tests all read.

use axum::Router;
use axum::http::Method;

use crate::auth::Permission;
use crate::handlers::{events, health, hooks, plugins, schedules, steps, tasks, templates, tokens};
use crate::openapi;
use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, no token (load balancer probes).
    Public,
    /// Any valid token.
    Authenticated,
    /// A token holding this permission.
    Need(Permission),
}

/// One route: method, axum path and access rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

macro_rules! route_table {
    ($($method:ident $path:literal => $handler:path, $access:expr;)*) => {
        /// Every route the server answers.
        pub const ROUTES: &[Route] = &[
            $(Route { method: stringify!($method), path: $path, access: $access },)*
        ];

        fn table_router() -> Router<AppState> {
            let r = Router::new();
            $(let r = r.route($path, axum::routing::$method($handler));)*
            r
        }
    };
}

use Access::{Authenticated, Need, Public};
use Permission::*;

route_table! {
    get "/health/live" => health::live, Public;
    get "/health/ready" => health::ready, Public;
    get "/health/status" => health::status, Authenticated;
    get "/openapi.json" => openapi::document, Public;
    get "/metrics" => crate::metrics::scrape_route, Need(MetricsRead);

    post "/v1/templates" => templates::register, Need(TemplatesWrite);
    get "/v1/templates" => templates::list, Need(TemplatesRead);
    get "/v1/templates/{namespace}/{name}/{version}" => templates::show, Need(TemplatesRead);

    post "/v1/tasks" => tasks::create, Need(TasksCreate);
    get "/v1/tasks" => tasks::list, Need(TasksRead);
    get "/v1/tasks/counts" => tasks::counts, Need(TasksRead);
    get "/v1/tasks/{id}" => tasks::show, Need(TasksRead);
    get "/v1/tasks/{id}/attempts" => tasks::attempts, Need(TasksRead);
    get "/v1/tasks/{id}/transitions" => tasks::transitions, Need(TasksRead);
    post "/v1/tasks/{id}/cancel" => tasks::cancel, Need(TasksCancel);
    post "/v1/tasks/{id}/retry" => tasks::retry, Need(TasksRetry);
    get "/v1/tasks/{id}/events" => events::task_events, Need(TasksRead);
    get "/v1/events" => events::events, Need(TasksRead);

    get "/v1/steps/{id}" => steps::show, Need(StepsRead);
    get "/v1/steps/{id}/logs" => steps::logs, Need(StepsRead);
    post "/v1/steps/{id}/resolve" => steps::resolve, Need(StepsResolve);

    get "/v1/plugins" => plugins::list, Need(PluginsRead);
    post "/v1/plugins" => plugins::upload, Need(PluginsWrite);
    get "/v1/plugins/{plugin}" => plugins::show, Need(PluginsRead);

    get "/v1/hooks" => hooks::list, Need(HooksRead);
    get "/v1/hooks/{id}/deliveries" => hooks::deliveries, Need(HooksRead);
    post "/v1/hooks/{id}/redeliver" => hooks::redeliver, Need(HooksRedeliver);

    post "/v1/schedules" => schedules::create, Need(SchedulesWrite);
    get "/v1/schedules" => schedules::list, Need(SchedulesRead);
    get "/v1/schedules/{name}" => schedules::show, Need(SchedulesRead);
    post "/v1/schedules/{name}/pause" => schedules::pause, Need(SchedulesWrite);
    post "/v1/schedules/{name}/resume" => schedules::resume, Need(SchedulesWrite);
    delete "/v1/schedules/{name}" => schedules::delete, Need(SchedulesWrite);

    get "/ui/session" => crate::session::show, Public;
    post "/ui/session" => crate::session::sign_in, Public;
    delete "/ui/session" => crate::session::sign_out, Public;

    get "/v1/tokens" => tokens::list, Need(TokensAdmin);
    post "/v1/tokens" => tokens::create, Need(TokensAdmin);
    delete "/v1/tokens/{name}" => tokens::revoke, Need(TokensAdmin);
}

/// The access rule of a matched route (None: not in the table, a bug).
pub fn access(method: &Method, path: &str) -> Option<Access> {
    ROUTES
        .iter()
        .find(|r| r.path == path && method.as_str().eq_ignore_ascii_case(r.method))
        .map(|r| r.access)
}

/// The routes with the authorization layer in front of each, and the web page's files
/// (public, unlisted: they are not the API).
pub(crate) fn router(state: AppState) -> Router {
    table_router()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authorize,
        ))
        .with_state(state.clone())
        .merge(crate::page::router(state))
}
