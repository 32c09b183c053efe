//! Settings for Parley's WebSocket connections: Twilio's media stream and the streaming providers' sockets.
//!
//! tungstenite's default read buffer is 128 KiB per socket, allocated up front and zero-filled before every read.
//! Parley's sockets carry small messages (a 20 ms media frame is about 250 bytes of JSON, a provider's message a few
//! KiB), so with the default the buffers were most of a call's memory and their zeroing the largest single CPU cost
//! under load.

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Read buffer per socket: room for any routine message; a larger one is simply read in several steps.
pub const READ_BUFFER_BYTES: usize = 8 * 1024;

/// The configuration for Parley's outgoing WebSocket connections (providers).
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES)
}
