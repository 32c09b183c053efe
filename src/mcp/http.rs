//! The HTTP client under rmcp's Streamable HTTP transport, with one addition: a `tools/call` whose `_meta` carries a
//! W3C `traceparent` also gets it as an HTTP header, so HTTP-level tracing at the backend (proxies, middleware) joins
//! the call's trace. rmcp has no per-request header option, but it lets the HTTP client be replaced; this wrapper
//! adds the header and leaves everything else to rmcp's reqwest client.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use reqwest013::header::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, GetMeta, JsonRpcMessage};
use rmcp::transport::streamable_http_client::SseError;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use sse_stream::Sse;

/// rmcp's reqwest client plus the `traceparent` header on tool calls.
#[derive(Clone)]
pub struct TracingHttpClient {
    inner: reqwest013::Client,
}

/// The HTTP client could not be built (TLS setup).
#[derive(Debug, thiserror::Error)]
#[error("could not build the HTTP client: {0}")]
pub struct HttpClientError(String);

impl TracingHttpClient {
    /// Builds the client. Redirects are not followed: a redirect would carry the session id and credentials to
    /// wherever it points, so the configured URL must be the real endpoint.
    pub fn new(connect_timeout: Duration) -> Result<Self, HttpClientError> {
        crate::mcp::ensure_crypto_provider();
        let inner = reqwest013::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(reqwest013::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .build()
            .map_err(|e| HttpClientError(e.to_string()))?;
        Ok(TracingHttpClient { inner })
    }
}

/// The `traceparent` of a `tools/call` request, if it has one. rmcp keeps request `_meta` in the request's
/// extensions until it serializes (where it wins over the params' own `_meta`), so both places are checked.
fn traceparent_of(message: &ClientJsonRpcMessage) -> Option<HeaderValue> {
    let JsonRpcMessage::Request(request) = message else { return None };
    let ClientRequest::CallToolRequest(call) = &request.request else { return None };
    let value = request
        .request
        .get_meta()
        .get_traceparent()
        .or_else(|| call.params.meta.as_ref().and_then(|meta| meta.get_traceparent()))?;
    HeaderValue::from_str(value).ok()
}

fn with_traceparent(
    message: &ClientJsonRpcMessage,
    mut headers: HashMap<HeaderName, HeaderValue>,
) -> HashMap<HeaderName, HeaderValue> {
    if let Some(value) = traceparent_of(message) {
        headers.insert(HeaderName::from_static("traceparent"), value);
    }
    headers
}

type SseStream = BoxStream<'static, Result<Sse, SseError>>;
type Failure = StreamableHttpError<reqwest013::Error>;

impl StreamableHttpClient for TracingHttpClient {
    type Error = reqwest013::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, Failure> {
        let headers = with_traceparent(&message, custom_headers);
        self.inner.post_message(uri, message, session_id, auth_header, headers).await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, Failure> {
        let headers = with_traceparent(&message, custom_headers);
        self.inner
            .post_message_with_max_sse_event_size(uri, message, session_id, auth_header, headers, max_sse_event_size)
            .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, Failure> {
        let headers = with_traceparent(&message, custom_headers);
        self.inner.post_message_with_response_limits(uri, message, session_id, auth_header, headers, limits).await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), Failure> {
        self.inner.delete_session(uri, session_id, auth_header, custom_headers).await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<SseStream, Failure> {
        self.inner.get_stream(uri, session_id, last_event_id, auth_header, custom_headers).await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<SseStream, Failure> {
        self.inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::{CallToolRequest, CallToolRequestParams, JsonRpcRequest, RequestId, RequestMetaObject};

    use super::*;

    fn call_message(traceparent: Option<&str>) -> ClientJsonRpcMessage {
        let mut params = CallToolRequestParams::new("lookup_order");
        if let Some(tp) = traceparent {
            let mut meta = RequestMetaObject::new();
            meta.set_traceparent(tp);
            params.meta = Some(meta);
        }
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        JsonRpcMessage::Request(JsonRpcRequest::new(RequestId::Number(1), request))
    }

    #[test]
    fn finds_traceparent_in_the_request_extensions_too() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
        let mut request = ClientRequest::CallToolRequest(CallToolRequest::new(CallToolRequestParams::new("x")));
        request.get_meta_mut().set_traceparent(tp);
        let message = JsonRpcMessage::Request(JsonRpcRequest::new(RequestId::Number(1), request));
        assert_eq!(traceparent_of(&message).and_then(|v| v.to_str().ok().map(str::to_string)).as_deref(), Some(tp));
    }

    #[test]
    fn adds_traceparent_only_for_tool_calls_that_carry_one() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
        let headers = with_traceparent(&call_message(Some(tp)), HashMap::new());
        let header = headers.get(&HeaderName::from_static("traceparent"));
        assert_eq!(header.and_then(|v| v.to_str().ok()), Some(tp));
        assert!(with_traceparent(&call_message(None), HashMap::new()).is_empty());
    }
}
