//! `/v1/tokens`: list, create (the secret is in the answer, once), revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tasker_store::Store;
use utoipa::ToSchema;

use crate::auth::issue;
use crate::body::StrictJson;
use crate::openapi::{BadRequest, Invalid, NotFound, TooLarge, UnsupportedMediaType};
use crate::problem::Problem;
use crate::state::AppState;
use crate::views::TokenView;

/// `GET /v1/tokens`: every token, never a secret.
#[utoipa::path(
    get,
    path = "/v1/tokens",
    operation_id = "list_tokens",
    tag = "tokens",
    responses(
        (status = 200, description = "Every token", body = Vec<TokenView>),
    )
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<TokenView>>, Problem> {
    let rows = state.store().list_tokens().await?;
    Ok(Json(rows.into_iter().map(TokenView::from).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// 1 to 64 printable characters, unique.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// Permissions (`resource:action`), `resource:*` or `*`; at least one.
    #[schema(min_items = 1, example = json!(["tasks:read", "templates:*"]))]
    pub permissions: Vec<String>,
    /// When it stops working (in the future); never without.
    #[schema(nullable = false)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new token with its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub view: TokenView,
    /// The secret: send it as `Authorization: Bearer <token>`.
    #[schema(pattern = "^tkr_[0-9a-f]{64}$")]
    pub token: String,
}

/// `POST /v1/tokens`: 201 with `{name, token, ...}`; the secret is never shown again.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    operation_id = "create_token",
    tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "Created", body = CreatedToken),
        (status = 400, response = BadRequest),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Invalid),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    StrictJson(req): StrictJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), Problem> {
    let (row, secret) = issue(
        state.store(),
        &req.name,
        req.permissions,
        req.expires_at,
        state.now(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            view: TokenView::from(row),
            token: secret,
        }),
    ))
}

/// A revocation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub name: String,
    pub revoked: bool,
}

/// `DELETE /v1/tokens/{name}`: the token stops working at once.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{name}",
    operation_id = "revoke_token",
    tag = "tokens",
    params(("name" = String, Path, description = "The token's name")),
    responses(
        (status = 200, description = "Revoked", body = Revoked),
        (status = 404, response = NotFound),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Revoked>, Problem> {
    if state.store().revoke_token(&name, state.now()).await? {
        Ok(Json(Revoked {
            name,
            revoked: true,
        }))
    } else {
        Err(Problem::not_found(format!(
            "no active token named '{name}'"
        )))
    }
}
