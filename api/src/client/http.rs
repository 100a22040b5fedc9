//! How the client sends a request and reads its answer: the bearer token, the body, and the
//! translation of every failure into a [`ClientError`].

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::{Client, ClientError};
use crate::error::Problem;
use crate::views::Health;

/// What a request carries.
#[derive(Clone)]
pub(super) enum Body {
    Empty,
    Json(serde_json::Value),
    Yaml(String),
    Bytes(Vec<u8>),
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "request",
    }
}

impl Client {
    pub(super) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(Method::GET, path, Body::Empty).await
    }

    pub(super) async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(Method::POST, path, Body::Empty).await
    }

    /// Sends a request and decodes a successful answer's JSON body.
    pub(super) async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<T, ClientError> {
        let name = method_name(&method);
        let response = self.answer(method, path, body).await?;
        self.decode(response, name, path).await
    }

    /// The JSON body of an answer.
    async fn decode<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
        method: &'static str,
        path: &str,
    ) -> Result<T, ClientError> {
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|err| self.unreachable(&err))?;
        serde_json::from_slice(&bytes).map_err(|err| ClientError::Unexpected {
            method,
            path: path.to_owned(),
            status,
            reason: format!("its JSON body does not decode: {err}"),
        })
    }

    /// Sends a request whose successful answer has no body (204).
    pub(super) async fn no_content(&self, method: Method, path: &str) -> Result<(), ClientError> {
        self.answer(method, path, Body::Empty).await.map(drop)
    }

    /// A body as bytes, with its status.
    pub(super) async fn raw(&self, path: &str) -> Result<(Vec<u8>, u16), ClientError> {
        let response = self.answer(Method::GET, path, Body::Empty).await?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|err| self.unreachable(&err))?;
        Ok((bytes.to_vec(), status))
    }

    /// A body, chunk by chunk into `out` as it arrives; answers how many bytes.
    pub(super) async fn download(
        &self,
        path: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, ClientError> {
        let mut response = self.answer(Method::GET, path, Body::Empty).await?;
        let mut written = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| self.unreachable(&err))?
        {
            out.write_all(&chunk)
                .map_err(|err| ClientError::Unexpected {
                    method: "GET",
                    path: path.to_owned(),
                    status: 200,
                    reason: format!("cannot write what it answers: {err}"),
                })?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    /// A log's bytes from an offset, and its whole length (`Hodei-Log-Length`).
    pub(super) async fn bytes(&self, path: &str) -> Result<(Vec<u8>, u64), ClientError> {
        let response = self.answer(Method::GET, path, Body::Empty).await?;
        let status = response.status().as_u16();
        let length = response
            .headers()
            .get("Hodei-Log-Length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| ClientError::Unexpected {
                method: "GET",
                path: path.to_owned(),
                status,
                reason: "it has no `Hodei-Log-Length` header".into(),
            })?;
        let bytes = response
            .bytes()
            .await
            .map_err(|err| self.unreachable(&err))?;
        Ok((bytes.to_vec(), length))
    }

    /// A health document, which the server also sends with 503.
    pub(super) async fn health_of(&self, path: &str) -> Result<Health, ClientError> {
        let url = format!("{}{path}", self.url());
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        self.decode(response, "GET", path).await
    }

    /// Sends a request; a success, or the error its answer means. With several replicas, a
    /// request that cannot reach one, or that one cannot forward (`503 no-leader`), is sent to
    /// the next, each tried once.
    pub(super) async fn answer(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<reqwest::Response, ClientError> {
        let mut tries = self.urls.len();
        loop {
            let url = self.url().to_owned();
            let answer = self
                .answer_from(&url, method.clone(), path, body.clone())
                .await;
            tries -= 1;
            let moves_on = match &answer {
                Err(ClientError::Unreachable { .. }) => true,
                Err(err) => err.code() == Some("no-leader"),
                Ok(_) => false,
            };
            if !moves_on || tries == 0 || !self.next_replica(&url) {
                return answer;
            }
        }
    }

    async fn answer_from(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<reqwest::Response, ClientError> {
        let name = method_name(&method);
        let mut request = self.http.request(method, format!("{base}{path}"));
        if let Some(token) = &self.target.token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Body::Empty => request,
            Body::Json(value) => request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(value.to_string()),
            Body::Yaml(text) => request
                .header(reqwest::header::CONTENT_TYPE, "application/yaml")
                .body(text),
            Body::Bytes(bytes) => request
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes),
        };
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = response.bytes().await.unwrap_or_default();
        let problem = serde_json::from_slice::<Problem>(&bytes).ok();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = match (&problem, &self.target.token) {
                (Some(problem), _) => problem.detail.clone(),
                (None, None) => "no token was sent".to_owned(),
                (None, Some(_)) => "the token was refused".to_owned(),
            };
            return Err(ClientError::Unauthorized {
                url: self.url().to_owned(),
                method: name,
                path: path.to_owned(),
                status: status.as_u16(),
                detail,
            });
        }
        match problem {
            Some(problem) => Err(ClientError::Rejected {
                method: name,
                path: path.to_owned(),
                problem: Box::new(problem),
                retry_after,
            }),
            None => Err(ClientError::Unexpected {
                method: name,
                path: path.to_owned(),
                status: status.as_u16(),
                reason: format!(
                    "not a problem document: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            }),
        }
    }

    pub(super) fn unreachable(&self, err: &reqwest::Error) -> ClientError {
        if let Some(problem) = super::CertificateProblem::of(err) {
            return ClientError::Certificate {
                url: self.url().to_owned(),
                problem,
            };
        }
        let reason = if err.is_timeout() {
            format!("no answer in time ({})", chain(err))
        } else {
            chain(err)
        };
        ClientError::Unreachable {
            url: self.url().to_owned(),
            reason,
        }
    }
}

/// An error and its causes, innermost last, without repeats: `connection refused` rather than
/// `error sending request`.
pub(super) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// `text` as one path segment or query value: everything but unreserved characters
/// percent-encoded.
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// A query string of encoded pairs.
pub(super) fn query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", segment(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("web app/ü"), "web%20app%2F%C3%BC");
        assert_eq!(segment("a-b_c.d~"), "a-b_c.d~");
        assert_eq!(
            query(&[("status", "failed".into()), ("branch", "a&b".into())]),
            "status=failed&branch=a%26b"
        );
    }
}
