//! Sign-in and sign-out pages: `GET /login` (the form), `POST /login` (fields
//! `username`, `password`, `next`; the same throttle and session as `POST
//! /v1/session`), `GET /logout` (asks to confirm), `POST /logout` (revokes the
//! session), and `GET /app`, where an account with no web page lands: the pages are
//! for the office and the supervisors, the field teams use the phone app.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    WebError, WebForm, WebQuery, WebUser, bare_page, csrf_field, home_of, local_path, page,
    see_other,
};
use crate::access::Role;
use crate::api::{CLEAR_SESSION_COOKIE, start_web_session};
use crate::error::Error;
use crate::http::{AppState, blocking, client_addr};

/// This page's routes, merged by [`super::routes`].
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", get(logout_confirm).post(logout))
        .route("/app", get(use_the_app))
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

fn login_page(next: &str, username: &str, message: Option<&str>) -> Markup {
    bare_page(
        "登录",
        html! {
            section.card {
                @if let Some(m) = message { p.error role="alert" { (m) } }
                form.stack method="post" action="/login" {
                    input type="hidden" name="next" value=(local_path(next));
                    label { "用户名" input name="username" value=(username) autocomplete="username" required autofocus; }
                    label { "密码" input type="password" name="password" autocomplete="current-password" required; }
                    button type="submit" { "登录" }
                }
                p.muted { "网页供镇办公室和督导组使用；网格员、网格长和民警入户走访请使用手机应用。" }
            }
        },
    )
}

async fn login_form(WebQuery(q): WebQuery<NextQuery>) -> Markup {
    login_page(&q.next, "", None)
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: String,
}

/// A form posted from another site (the `Origin` header names another host) is
/// refused: a page elsewhere must not sign anyone in to an account of its choosing.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    origin != "null" && origin_host.eq_ignore_ascii_case(host)
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    WebForm(f): WebForm<LoginForm>,
) -> Result<Response, WebError> {
    if !same_origin(&headers) {
        return Err(WebError::Forbidden("登录表单来源不明。".into()));
    }
    let addr = client_addr(peer, &headers, state.behind_proxy);
    let username = f.username.trim().to_string();
    match start_web_session(&state, addr, username.clone(), f.password).await {
        Ok((_token, p, cookie)) => {
            let next = local_path(&f.next);
            let to = if next == "/" || next.starts_with("/login") {
                home_of(&p)
            } else {
                next
            };
            let mut resp = see_other(to);
            if let Ok(v) = cookie.parse() {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            Ok(resp)
        }
        Err(Error::Unauthorized(_)) => Ok((
            StatusCode::UNAUTHORIZED,
            login_page(
                &f.next,
                &username,
                Some("用户名或密码不对，或者账号已停用。"),
            ),
        )
            .into_response()),
        Err(e) => Err(e.into()),
    }
}

async fn logout_confirm(user: WebUser) -> Markup {
    page(
        "退出登录",
        &user.principal,
        html! {
            form method="post" action="/logout" {
                (csrf_field(&user))
                button type="submit" { "退出登录" }
            }
        },
    )
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    user: WebUser,
    WebForm(f): WebForm<CsrfOnly>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    let db = state.db.clone();
    let (id, by) = (user.session_id, user.principal.username.clone());
    blocking(move || db.revoke_session(id, &by)).await?;
    let mut resp = see_other("/login");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_static(CLEAR_SESSION_COOKIE),
    );
    Ok(resp)
}

async fn use_the_app(user: WebUser) -> Markup {
    let p = &user.principal;
    let text = match p.role {
        Role::Admin => "管理员通过命令行和接口管理账号与手机，不查看住户。",
        Role::Liaison => "联络员请在手机应用或“指令”页签收指令并确认推送。",
        _ => "网页供镇办公室和督导组使用。入户走访、签名和拍照请使用手机应用。",
    };
    page(
        "请使用手机应用",
        p,
        html! {
            section.card {
                p { (text) }
                @if home_of(p) != "/app" {
                    p { a href=(home_of(p)) { "前往您可以使用的页面" } }
                }
            }
        },
    )
}
