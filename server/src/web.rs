//! The office's and the supervisors' web pages (issue 6): server-rendered HTML (maud),
//! in Chinese, one small stylesheet, no JavaScript framework. This module holds what
//! every page shares: the layout with a nav of the links the role may use ([`page`]),
//! the signed-in user of a web session ([`WebUser`]), the error pages ([`WebError`]),
//! the CSRF field of every POST form ([`csrf_field`], [`WebUser::check_csrf`]) and the
//! form and query extractors whose refusals name the field, never its value
//! ([`WebForm`], [`WebQuery`]).
//!
//! Pages are for web sessions only (cookie `doorstep_session`, the sessions of
//! `POST /v1/session` and `/login`): a phone's device token is refused. After a POST a
//! page answers `303 See Other` (post/redirect/get). Every answer of these routes
//! carries `Cache-Control: no-store` and a strict Content-Security-Policy.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, Uri, header, request::Parts};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use maud::{DOCTYPE, Markup, html};
use serde::de::DeserializeOwned;

use crate::access::{Permission, Principal, Role};
use crate::api::SESSION_COOKIE;
use crate::error::Error;
use crate::http::{AppState, blocking};

mod bulletin;
mod dashboard;
mod directives;
mod follow_up;
mod household;
mod households;
mod login;
mod places;
mod review;

/// Name of the hidden form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// The web pages' routes, merged into [`crate::http::app_with`]. Every answer gets
/// `Cache-Control: no-store` (unless the handler set its own), `X-Frame-Options: DENY`,
/// `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin` and a
/// Content-Security-Policy allowing only this origin (and inline scripts of a few
/// lines). Unknown paths outside `/v1/` answer the Chinese 404 page.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/assets/site.css", get(site_css))
        .merge(login::routes())
        .merge(dashboard::routes())
        .merge(households::routes())
        .merge(household::routes())
        .merge(review::routes())
        .merge(follow_up::routes())
        .merge(directives::routes())
        .merge(places::routes())
        .merge(bulletin::routes())
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; \
             script-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; \
             base-uri 'none'",
        ),
    );
    resp
}

async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/v1/") {
        // The JSON API's unknown paths stay as they were: an empty 404.
        return StatusCode::NOT_FOUND.into_response();
    }
    WebError::NotFound.into_response()
}

/// The stylesheet of every page, embedded in the binary.
const SITE_CSS: &str = include_str!("web/site.css");

async fn site_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        SITE_CSS,
    )
        .into_response()
}

/// A link of the nav: its path, its Chinese label, and who sees it.
struct NavLink {
    path: &'static str,
    label: &'static str,
    /// Shown when the account has any of these.
    any_of: &'static [Permission],
}

/// The nav, in order. A link shows when the account's role has any of its permissions
/// at all (the page itself checks again, with the scope).
const NAV: &[NavLink] = &[
    NavLink {
        path: "/",
        label: "概览",
        any_of: &[Permission::ReadOfficePages],
    },
    NavLink {
        path: "/households",
        label: "住户",
        any_of: &[Permission::ReadOfficePages],
    },
    NavLink {
        path: "/review",
        label: "审核",
        any_of: &[Permission::WriteReview],
    },
    NavLink {
        path: "/rectifications",
        label: "整改",
        any_of: &[Permission::ReadOfficePages],
    },
    NavLink {
        path: "/follow-up",
        label: "电话回访",
        any_of: &[
            Permission::DrawFollowUpSample,
            Permission::WriteFollowUpCall,
        ],
    },
    NavLink {
        path: "/directives",
        label: "指令",
        any_of: &[
            Permission::PublishDirective,
            Permission::AcknowledgeDirective,
        ],
    },
    NavLink {
        path: "/places",
        label: "责任人",
        any_of: &[Permission::ManagePlaces],
    },
    NavLink {
        path: "/bulletin",
        label: "月度通报",
        any_of: &[Permission::ReadBulletin],
    },
    NavLink {
        path: "/bulletin/cases",
        label: "发案录入",
        any_of: &[Permission::EnterFraudCases],
    },
];

/// The nav links `who` sees: `(path, label)`, in the nav's order.
pub fn nav_links(who: &Principal) -> Vec<(&'static str, &'static str)> {
    NAV.iter()
        .filter(|l| l.any_of.iter().any(|p| who.may_at_all(*p)))
        .map(|l| (l.path, l.label))
        .collect()
}

/// Where `who` lands after signing in: the first page of its nav, or, for a role with
/// no web page (grid workers, grid leaders, the administrator), `/app`, which says to
/// use the phone app.
pub fn home_of(who: &Principal) -> &'static str {
    nav_links(who).first().map_or("/app", |(path, _)| path)
}

/// The layout of every page: `<html lang="zh-CN">`, the viewport meta for phones, the
/// stylesheet, a nav showing only the links `who`'s role may use, the account's name
/// and role, a sign-out link (`GET /logout` asks to confirm, with the CSRF field),
/// then `body` under an `<h1>` of `title`.
pub fn page(title: &str, who: &Principal, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · 入户反诈宣传" }
                link rel="stylesheet" href="/assets/site.css";
            }
            body {
                header.top {
                    a.brand href=(home_of(who)) { "入户反诈宣传" }
                    nav {
                        @for (path, label) in nav_links(who) {
                            a href=(path) { (label) }
                        }
                    }
                    span.who {
                        (who.username) " · " (who.role.label_zh()) " "
                        a href="/logout" { "退出" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page for nobody signed in (sign-in, errors before a session): the same layout
/// without the nav.
pub fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · 入户反诈宣传" }
                link rel="stylesheet" href="/assets/site.css";
            }
            body {
                header.top { a.brand href="/" { "入户反诈宣传" } }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field every POST form carries: `<input type=hidden name=csrf>` with
/// the user's token.
pub fn csrf_field(user: &WebUser) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(user.csrf); }
}

/// The account of a web session, for the pages. Extracting it:
///
/// - reads only the cookie `doorstep_session`; a request carrying `Authorization`
///   (a phone's bearer token, or anything else) is refused with the 403 page;
/// - with no cookie, or one naming no live web session (a device token in the cookie
///   names none), answers `303 See Other` to `/login?next=<this path>` (the path
///   only, without the query).
///
/// `csrf` is the token forms must echo: [`ServerDb::csrf_token`] of the session token.
///
/// [`ServerDb::csrf_token`]: crate::db::ServerDb::csrf_token
#[derive(Clone)]
pub struct WebUser {
    /// The account, with its role and scope as they stand now.
    pub principal: Principal,
    /// The web session's number (for signing out).
    pub session_id: i64,
    /// The CSRF token of this session: 64 hex digits.
    pub csrf: String,
}

impl std::fmt::Debug for WebUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebUser")
            .field("principal", &self.principal)
            .field("session_id", &self.session_id)
            .field("csrf", &"<secret>")
            .finish()
    }
}

/// The value of cookie `doorstep_session`, if any.
pub(crate) fn session_cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The path of a request, for `?next=`: the query is dropped, since it may carry
/// personal data (a name or phone digits typed into the household search) that must
/// not land in a `/login` URL, the browser history or the logs.
fn next_path(uri: &Uri) -> String {
    let path = uri.path();
    if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    }
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(WebError::Forbidden(
                "网页只接受网页登录，手机的设备令牌不能用于网页。".into(),
            ));
        }
        let next = next_path(&parts.uri);
        let Some(token) = session_cookie(parts) else {
            return Err(WebError::SignIn { next });
        };
        let db = state.db.clone();
        let found = blocking(move || {
            let s = db.authenticate_session(&token)?;
            Ok((s, db.csrf_token(&token)))
        })
        .await;
        match found {
            Ok((s, csrf)) => Ok(WebUser {
                principal: s.principal,
                session_id: s.id,
                csrf,
            }),
            Err(Error::Unauthorized(_)) => Err(WebError::SignIn { next }),
            Err(e) => Err(e.into()),
        }
    }
}

impl WebUser {
    /// Checks the role may use `p` at all (the page checks the scope of what it shows).
    ///
    /// Errors: [`WebError::Forbidden`], the 403 page (for a field role, saying to use
    /// the phone app).
    pub fn require(&self, p: Permission) -> Result<(), WebError> {
        if self.principal.may_at_all(p) {
            Ok(())
        } else {
            Err(WebError::ForbiddenFor {
                who: Box::new(self.principal.clone()),
                message: forbidden_sentence(&self.principal),
            })
        }
    }

    /// Checks the CSRF token a POST form sent (`csrf`, from [`csrf_field`]), in
    /// constant time.
    ///
    /// Errors: [`WebError::Forbidden`] when missing or wrong.
    pub fn check_csrf(&self, sent: &str) -> Result<(), WebError> {
        let (a, b) = (sent.as_bytes(), self.csrf.as_bytes());
        let same =
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
        if same {
            Ok(())
        } else {
            tracing::info!("web form refused: wrong or missing CSRF token");
            Err(WebError::ForbiddenFor {
                who: Box::new(self.principal.clone()),
                message: "表单已过期或来源不明，请回到上一页刷新后重试。".into(),
            })
        }
    }
}

/// The 403 page's sentence for `who`: a field role is told to use the phone app.
fn forbidden_sentence(who: &Principal) -> String {
    match who.role {
        Role::GridWorker | Role::GridLeader | Role::Police | Role::Liaison => format!(
            "{}账号无权查看此页。网页供镇办公室和督导组使用，入户走访请使用手机应用。",
            who.role.label_zh()
        ),
        _ => format!("{}账号无权查看此页。", who.role.label_zh()),
    }
}

/// What a page can fail with; each answers a Chinese HTML page that names no personal
/// data. Internal errors are logged with their detail and answer a generic 500 page.
#[derive(Debug)]
pub enum WebError {
    /// No web session: `303 See Other` to `/login?next=<next>`.
    SignIn {
        /// The local path to come back to after signing in.
        next: String,
    },
    /// 400: a form or query field is wrong; the Chinese sentence names the field.
    BadRequest(String),
    /// 403: the role may not, or a form's CSRF token is wrong; the Chinese sentence.
    /// The page has no nav and links home to `/`.
    Forbidden(String),
    /// 403 for a signed-in account ([`WebUser::require`], [`WebUser::check_csrf`]): the
    /// page shows the account's nav and links home to [`home_of`] it, so that no link
    /// on it leads to another 403.
    ForbiddenFor {
        /// The account refused.
        who: Box<Principal>,
        /// The Chinese sentence.
        message: String,
    },
    /// 404: nothing by that name in the account's scope.
    NotFound,
    /// 409: the record changed meanwhile (the Chinese sentence).
    Conflict(String),
    /// 429: too many attempts; wait this many seconds.
    Throttled(u64),
    /// 503: the server is busy; try again shortly.
    Busy,
    /// 500: logged with this detail, never shown.
    Internal(String),
}

impl std::fmt::Display for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SignIn { .. } => f.write_str("sign in first"),
            Self::BadRequest(m) | Self::Forbidden(m) | Self::Conflict(m) => f.write_str(m),
            Self::ForbiddenFor { message, .. } => f.write_str(message),
            Self::NotFound => f.write_str("not found"),
            Self::Throttled(s) => write!(f, "throttled for {s} s"),
            Self::Busy => f.write_str("busy"),
            Self::Internal(m) => write!(f, "internal: {m}"),
        }
    }
}

impl From<Error> for WebError {
    fn from(e: Error) -> Self {
        match e {
            Error::Unauthorized(_) | Error::DeviceRevoked(_) => Self::SignIn { next: "/".into() },
            Error::Forbidden(m) => {
                tracing::debug!(reason = %m, "web page refused");
                Self::Forbidden("您的账号无权做此操作。".into())
            }
            Error::NotFound(_) => Self::NotFound,
            Error::Throttled { retry_after_s } => Self::Throttled(retry_after_s),
            Error::Busy => Self::Busy,
            // The server's sentences for bad input name the field, never its value.
            Error::BadRequest(m) => Self::BadRequest(format!("请求有误：{m}")),
            Error::HashMismatch { .. } | Error::TooLarge { .. } => {
                Self::BadRequest(format!("请求有误：{e}"))
            }
            Error::Conflict(m) => Self::Conflict(format!("记录已被改动或冲突：{m}")),
            Error::Db(_) | Error::Io(_) | Error::Internal(_) => Self::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, text) = match &self {
            Self::SignIn { next } => {
                let to = format!("/login?next={}", encode_query(local_path(next)));
                return Redirect::to(&to).into_response();
            }
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "请求有误", m.clone()),
            Self::Forbidden(m) | Self::ForbiddenFor { message: m, .. } => {
                (StatusCode::FORBIDDEN, "无权访问", m.clone())
            }
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "找不到页面",
                "没有这个页面，或者它不在您的管辖范围内。".to_string(),
            ),
            Self::Conflict(m) => (StatusCode::CONFLICT, "记录冲突", m.clone()),
            Self::Throttled(s) => (
                StatusCode::TOO_MANY_REQUESTS,
                "尝试次数过多",
                format!("尝试次数过多，请 {s} 秒后再试。"),
            ),
            Self::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "服务器繁忙",
                "服务器繁忙，请稍后再试。".to_string(),
            ),
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "web page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "服务器出错",
                    "服务器出错了，请稍后再试；详情已记入服务器日志。".to_string(),
                )
            }
        };
        if status != StatusCode::INTERNAL_SERVER_ERROR {
            tracing::debug!(status = status.as_u16(), "web page refused");
        }
        // A signed-in account's page keeps its nav, and its home is the account's own
        // first page (`/` is the office's dashboard, itself a 403 for other roles).
        let who = match &self {
            Self::ForbiddenFor { who, .. } => Some(&**who),
            _ => None,
        };
        let home = who.map_or("/", home_of);
        let content = html! {
            p.error { (text) }
            p { a href=(home) { "返回首页" } " · " a href="javascript:history.back()" { "返回上一页" } }
        };
        let body = match who {
            Some(who) => page(title, who, content),
            None => bare_page(title, content),
        };
        let mut resp = (status, body).into_response();
        if let Self::Throttled(s) = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// `next` if it is a local path (`/...`, not `//host` or `/\host`), else `/`: a
/// sign-in never sends anyone to another site.
pub fn local_path(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    if ok { next } else { "/" }
}

/// Percent-encodes `s` for a query value (RFC 3986 unreserved characters kept).
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A form body (`application/x-www-form-urlencoded`) whose refusal is the 400 page
/// naming the missing or wrong field, never its value.
#[derive(Debug)]
pub struct WebForm<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for WebForm<T> {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Form::<T>::from_request(req, state).await {
            Ok(Form(v)) => Ok(Self(v)),
            Err(r) => Err(form_refusal(&r)),
        }
    }
}

fn form_refusal(r: &FormRejection) -> WebError {
    match r {
        FormRejection::FailedToDeserializeForm(e) => {
            WebError::BadRequest(field_sentence("表单", &e.body_text()))
        }
        FormRejection::FailedToDeserializeFormBody(e) => {
            WebError::BadRequest(field_sentence("表单", &e.body_text()))
        }
        _ => WebError::BadRequest("表单无法读取（格式或大小不对）。".into()),
    }
}

/// A query string whose refusal is the 400 page naming the wrong field, never its value.
#[derive(Debug)]
pub struct WebQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for WebQuery<T> {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(WebError::BadRequest(
                field_sentence("网址参数", &e.body_text()),
            )),
            Err(_) => Err(WebError::BadRequest("网址参数有误。".into())),
        }
    }
}

/// A Chinese sentence naming the field serde complained of (`missing field `x``,
/// ``x`: invalid ...``), without the value it quotes.
fn field_sentence(what: &str, serde_message: &str) -> String {
    if let Some(rest) = serde_message.split("missing field `").nth(1)
        && let Some(field) = rest.split('`').next()
    {
        return format!("{what}缺少 {field} 一项。");
    }
    // serde_urlencoded / serde_path_to_error name the field before a colon.
    let field = serde_message
        .rsplit_once("Form: ")
        .or_else(|| serde_message.rsplit_once("string: "))
        .map(|(_, r)| r)
        .unwrap_or(serde_message)
        .split(':')
        .next()
        .unwrap_or("")
        .trim();
    if !field.is_empty()
        && field.len() <= 32
        && field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '[' || c == ']')
    {
        format!("{what}中 {field} 一项的值不对。")
    } else {
        format!("{what}中有一项的值不对。")
    }
}

/// A page showing a number revealed in full: `Cache-Control: no-store` and `Pragma:
/// no-cache`, so neither a browser nor a proxy keeps it (the reveal is audited once).
pub fn revealed_page(markup: Markup) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        markup,
    )
        .into_response()
}

/// `303 See Other` to `to` (post/redirect/get).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Formats UTC milliseconds as the town's local date and time (China Standard Time),
/// `2025-03-01 14:05`.
pub fn town_time(ms: i64) -> String {
    let local = ms + doorstep_core::model::TOWN_UTC_OFFSET_MS;
    chrono::DateTime::from_timestamp_millis(local)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(
            local_path("/households?village=甲村"),
            "/households?village=甲村"
        );
        assert_eq!(local_path("//evil.example/"), "/");
        assert_eq!(local_path("/\\evil.example/"), "/");
        assert_eq!(local_path("https://evil.example/"), "/");
        assert_eq!(local_path(""), "/");
        assert_eq!(encode_query("/a?b=c&d"), "/a%3Fb%3Dc%26d");
    }

    #[test]
    fn refusals_name_the_field_not_the_value() {
        assert_eq!(
            field_sentence("表单", "Failed to deserialize form: missing field `reason`"),
            "表单缺少 reason 一项。"
        );
        let s = field_sentence(
            "网址参数",
            "Failed to deserialize query string: page: invalid digit found in string",
        );
        assert_eq!(s, "网址参数中 page 一项的值不对。");
        let s = field_sentence("表单", "Failed to deserialize form: 13812345678 is wrong");
        assert!(!s.contains("13812345678"), "{s}");
    }
}

#[cfg(test)]
mod page_tests;
