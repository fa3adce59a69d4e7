//! The HTTP client the subcommands share: requests with the bearer token,
//! answers as status + JSON, and the server's errors as `code (status): message`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::ClientOptions;

/// A small blocking HTTP client for the server's API.
pub struct Client {
    pub(super) agent: ureq::Agent,
    pub(super) base: String,
    pub(super) token: Option<String>,
}

/// A server answer: status and JSON body (or the raw text as a JSON string).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

pub(super) fn encode_path(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(options: &ClientOptions) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Client {
            agent,
            base: options.server.trim_end_matches('/').to_owned(),
            token: options.token.clone(),
        }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(super) fn finish(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer> {
        let mut resp =
            result.with_context(|| format!("cannot reach the weir server at {}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .context("reading the server's answer")?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body })
    }

    pub fn get(&self, path: &str) -> Result<Answer> {
        let mut req = self.agent.get(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.finish(req.call())
    }

    pub fn delete(&self, path: &str) -> Result<Answer> {
        let mut req = self.agent.delete(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.finish(req.call())
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer> {
        let mut req = match method {
            "PUT" => self.agent.put(self.url(path)),
            _ => self.agent.post(self.url(path)),
        };
        req = req.header("content-type", content_type);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.finish(req.send(body))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Result<Answer> {
        self.send(
            "POST",
            path,
            "application/json",
            &[],
            body.to_string().as_bytes(),
        )
    }
}

/// Fail with the server's error code and message on a non-2xx answer.
pub(super) fn ok(answer: Answer) -> Result<Value> {
    if (200..300).contains(&answer.status) {
        return Ok(answer.body);
    }
    let error = &answer.body["error"];
    let code = error["code"].as_str().unwrap_or("error");
    let message = error["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| answer.body.to_string());
    match error["reason"].as_str() {
        Some(reason) => bail!("{code} ({}): {reason}: {message}", answer.status),
        None => bail!("{code} ({}): {message}", answer.status),
    }
}
