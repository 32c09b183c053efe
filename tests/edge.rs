//! The Twilio edge end to end: a real server on 127.0.0.1 driven by a simulated Twilio.

mod common;

use std::time::Duration;

use common::*;
use parley::twilio::messages::OutboundMessage;
use sim_caller::{tone, Received, SimCall, SimError, StartOptions};

const WAIT: Duration = Duration::from_secs(10);

fn form(params: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    let owned: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&owned).finish();
    (body, owned)
}

/// The value of `parley_calls_refused_total{reason}` on `/metrics` (0 before the first refusal).
async fn refused(server: &parley::edge::RunningServer, reason: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", server.local_addr)).await.unwrap().text().await.unwrap();
    let label = format!("reason=\"{reason}\"");
    text.lines()
        .find(|line| line.starts_with("parley_calls_refused_total{") && line.contains(&label))
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0, |value| value.parse().expect("a counter value"))
}

const CALL_PARAMS: [(&str, &str); 4] =
    [("CallSid", CALL_SID), ("From", "+12349013030"), ("To", "+18005551212"), ("AccountSid", "AC1")];
const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn webhook_answers_a_signed_call_with_stream_twiml() {
    let mut config = test_config();
    config.twilio.stream_parameters.insert("tenant".into(), "acme".into());
    let server = start_server(config).await;
    let (body, params) = form(&CALL_PARAMS);
    let signature = validator().sign(&format!("{PUBLIC_URL}/twilio/voice"), &params);
    let response = reqwest::Client::new()
        .post(format!("http://{}/twilio/voice", server.local_addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/xml");
    let twiml = response.text().await.unwrap();
    // The Stream URL carries the call's token (in the path: Twilio refuses a query string there).
    let stream_url = twiml.split("<Connect><Stream url=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
    let token = stream_url.strip_prefix("wss://voice.parley.test/twilio/media/").expect("a token segment");
    let tokens = parley::twilio::stream_token::StreamTokens::from_auth_token(AUTH_TOKEN);
    let verified = tokens.verify(token, parley::twilio::stream_token::unix_now()).expect("a valid token");
    assert_eq!(verified.call_sid, CALL_SID);
    assert!(twiml.contains("statusCallback=\"https://voice.parley.test/twilio/stream-status\""), "{twiml}");
    for parameter in [
        "<Parameter name=\"callSid\" value=\"CA0123456789abcdef0123456789abcdef\"/>",
        "<Parameter name=\"from\" value=\"+12349013030\"/>",
        "<Parameter name=\"to\" value=\"+18005551212\"/>",
        "<Parameter name=\"tenant\" value=\"acme\"/>",
    ] {
        assert!(twiml.contains(parameter), "missing {parameter} in {twiml}");
    }
}

#[tokio::test]
async fn webhook_refuses_bad_or_missing_signatures() {
    let server = start_server(test_config()).await;
    let refused_before = refused(&server, "bad_signature").await;
    let (body, params) = form(&CALL_PARAMS);
    let client = reqwest::Client::new();
    let url = format!("http://{}/twilio/voice", server.local_addr);
    let post = |signature: Option<String>| {
        let mut request =
            client.post(&url).header("content-type", "application/x-www-form-urlencoded").body(body.clone());
        if let Some(signature) = signature {
            request = request.header("x-twilio-signature", signature);
        }
        request.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 403);
    assert_eq!(post(Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into())).await.unwrap().status(), 403);
    // Signed for the internal address instead of the public URL: what a proxy rewrite would produce.
    let internal = validator().sign(&url, &params);
    assert_eq!(post(Some(internal)).await.unwrap().status(), 403);
    // Signed with another account's token.
    let foreign = parley::twilio::signature::SignatureValidator::new("other")
        .sign(&format!("{PUBLIC_URL}/twilio/voice"), &params);
    assert_eq!(post(Some(foreign)).await.unwrap().status(), 403);
    // Other tests refuse bad signatures in parallel, so at least these four.
    assert!(refused(&server, "bad_signature").await >= refused_before + 4);
}

#[tokio::test]
async fn webhook_accepts_json_bodies_signed_with_body_sha256() {
    let server = start_server(test_config()).await;
    let body = r#"{"CallSid":"CA99999999999999999999999999999999","From":"+15550001111","To":"+15550002222"}"#;
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(body.as_bytes()))
    };
    let path = format!("/twilio/voice?bodySHA256={hash}");
    let signature = validator().sign(&format!("{PUBLIC_URL}{path}"), &[]);
    let client = reqwest::Client::new();
    let send = |body: &'static str| {
        client
            .post(format!("http://{}{path}", server.local_addr))
            .header("content-type", "application/json")
            .header("x-twilio-signature", signature.clone())
            .body(body)
            .send()
    };
    let response = send(body).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("<Parameter name=\"callSid\" value=\"CA99999999999999999999999999999999\"/>"));
    assert_eq!(send(r#"{"CallSid":"CA66"}"#).await.unwrap().status(), 403, "body does not match its hash");
}

#[tokio::test]
async fn media_upgrade_needs_a_valid_signature() {
    let server = start_server(test_config()).await;
    // No signature, a bad one, one over the internal URL, and a good one over the plain URL (which has no token).
    for signature in [
        None,
        Some("bm90IGEgc2lnbmF0dXJl".to_owned()),
        Some(validator().sign(&media_url(&server), &[])),
        Some(media_signature()),
    ] {
        match SimCall::connect(&media_url(&server), signature.as_deref()).await {
            Err(SimError::Connect(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                assert_eq!(response.status(), 403)
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("upgrade accepted with signature {signature:?}"),
        }
    }
    assert_eq!(server.registry().active(), 0);
}

#[tokio::test]
async fn a_full_call_is_echoed_with_marks_and_ends_on_stop() {
    let server = start_server(test_config()).await;
    let mut call = place_call(&server).await;
    wait_active(&server, 1).await;
    let audio = tone(440.0, 2_000, 8_000);
    call.stream_audio(&audio).await.unwrap();
    call.wait_until("the echo with two marks", WAIT, |log| {
        log.iter().filter(|r| matches!(r, Received::Message { message: OutboundMessage::Mark { .. }, .. })).count() >= 2
    })
    .await
    .unwrap();
    let echoed = call.audio_received();
    assert_eq!(&echoed[..audio.len()], &audio[..], "the echo is the caller's audio, unchanged and in order");
    let marks: Vec<String> = call
        .messages()
        .into_iter()
        .filter_map(|m| match m {
            OutboundMessage::Mark { mark, stream_sid } => {
                assert_eq!(stream_sid, StartOptions::default().stream_sid);
                Some(mark.name)
            }
            _ => None,
        })
        .collect();
    assert_eq!(marks, vec!["echo-1", "echo-2"]);
    // Media is sent as whole 20 ms frames, at most 100 ms a message.
    for message in call.messages() {
        if let OutboundMessage::Media { media, .. } = message {
            assert!(media.payload.len() % 160 == 0 && (160..=800).contains(&media.payload.len()), "{media:?}");
        }
    }
    call.send_stop().unwrap();
    assert_eq!(call.wait_closed(WAIT).await.unwrap(), Some(1000));
    wait_active(&server, 0).await;
}

#[tokio::test]
async fn echo_is_paced_in_real_time_not_dumped() {
    let server = start_server(test_config()).await;
    let mut call = place_call(&server).await;
    // All of it at once: Parley must still play it out at 50 frames a second.
    for frame in tone(300.0, 1_000, 8_000).chunks(160) {
        call.send_media(frame).unwrap();
    }
    let frames_in = |message: &OutboundMessage| match message {
        OutboundMessage::Media { media, .. } => media.payload.len() / 160,
        _ => 0,
    };
    call.wait_until("a second of echo", WAIT, |log| {
        log.iter()
            .map(|r| match r {
                Received::Message { message, .. } => frames_in(message),
                _ => 0,
            })
            .sum::<usize>()
            >= 50
    })
    .await
    .unwrap();
    // When each frame left: every frame of a message with the message.
    let times: Vec<_> = call
        .received()
        .into_iter()
        .flat_map(|r| match r {
            Received::Message { at, message } => vec![at; frames_in(&message)],
            _ => Vec::new(),
        })
        .collect();
    let spread = times[49] - times[0];
    // 50 frames are a second of audio; with a 200 ms lead the last goes out no sooner than ~0.75 s after the first.
    assert!(spread >= Duration::from_millis(700), "50 frames sent within {spread:?}");
    call.hang_up().await;
}

#[tokio::test]
async fn bad_frames_are_skipped_and_the_call_goes_on() {
    let mut config = test_config();
    config.server.max_frame_bytes = 4_096;
    let server = start_server(config).await;
    let mut call = place_call(&server).await;
    call.send_text("{not json").unwrap();
    call.send_text(r#"{"event":"transcription","streamSid":"MZ00000000000000000000000000000001"}"#).unwrap();
    call.send_text(r#"{"event":"media","streamSid":"MZ00000000000000000000000000000001"}"#).unwrap();
    call.send_text("[1,2,3]").unwrap();
    call.send_binary(vec![0u8; 320]).unwrap();
    call.send_media_payload("@@@ not base64 @@@", 160).unwrap();
    call.send_media(&vec![0x55u8; 8_000]).unwrap(); // a second of audio in one frame: over the frame limit
    call.send_text(format!(r#"{{"event":"media","pad":"{}"}}"#, "x".repeat(100_000))).unwrap();
    call.send_dtmf("5").unwrap();
    // The call still works afterwards.
    let audio = tone(500.0, 1_000, 8_000);
    call.stream_audio(&audio).await.unwrap();
    call.wait_until("the echo after bad frames", WAIT, |log| {
        log.iter().any(|r| matches!(r, Received::Message { message: OutboundMessage::Mark { .. }, .. }))
    })
    .await
    .unwrap();
    let echoed = call.audio_received();
    assert!(echoed.windows(160).any(|w| w == &audio[..160]), "the good audio came back");
    assert!(!echoed.contains(&0x55), "the oversize frame was not played");
    assert_eq!(server.registry().active(), 1);
    call.hang_up().await;
    wait_active(&server, 0).await;
}

#[tokio::test]
async fn a_caller_that_vanishes_frees_its_slot() {
    let mut config = test_config();
    config.server.max_concurrent_calls = 1;
    let server = start_server(config).await;
    let mut call = place_call(&server).await;
    call.stream_audio(&tone(440.0, 300, 8_000)).await.unwrap();
    wait_active(&server, 1).await;
    call.vanish();
    wait_active(&server, 0).await;
    // The server is unharmed and takes the next call.
    let mut next = place_call(&server).await;
    next.stream_audio(&tone(440.0, 300, 8_000)).await.unwrap();
    next.wait_until("an echo", WAIT, |log| !log.is_empty()).await.unwrap();
    next.hang_up().await;
}

#[tokio::test]
async fn the_concurrent_call_cap_refuses_extra_calls() {
    let mut config = test_config();
    config.server.max_concurrent_calls = 2;
    let server = start_server(config).await;
    let base = format!("http://{}", server.local_addr);
    assert_eq!(reqwest::get(format!("{base}/readyz")).await.unwrap().status(), 200);
    let addr = server.local_addr.to_string();
    let refused_before = refused(&server, "capacity").await;
    let first = place_call(&server).await;
    // The third call's webhook was answered while there was room; its stream comes when there is none.
    let (third_url, third_signature) = stream_request(&addr, "CA00000000000000000000000000000003").await;
    let second = place_call(&server).await;
    wait_active(&server, 2).await;
    match SimCall::connect(&third_url, Some(&third_signature)).await {
        Err(SimError::Connect(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("third call not refused: {:?}", other.err()),
    }
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "at capacity");
    assert_eq!(body["active_calls"], 2);
    let (form_body, params) = form(&CALL_PARAMS);
    let webhook = reqwest::Client::new()
        .post(format!("{base}/twilio/voice"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", validator().sign(&format!("{PUBLIC_URL}/twilio/voice"), &params))
        .body(form_body)
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 503, "no TwiML for a call that cannot be taken");
    // This is the only test that fills the cap: the media upgrade and the webhook, one each.
    assert_eq!(refused(&server, "capacity").await, refused_before + 2);
    first.hang_up().await;
    wait_active(&server, 1).await;
    assert_eq!(reqwest::get(format!("{base}/readyz")).await.unwrap().status(), 200);
    assert_eq!(reqwest::get(format!("{base}/healthz")).await.unwrap().text().await.unwrap(), "ok");
    second.hang_up().await;
}

#[tokio::test]
async fn shutdown_lets_a_live_call_finish_then_closes_it_cleanly() {
    let server = start_server(test_config()).await; // grace: 1 s
    let mut call = place_call(&server).await;
    wait_active(&server, 1).await;
    let registry = server.registry().clone();
    let shutdown = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(registry.is_draining());
    assert_eq!(registry.active(), 1, "the live call goes on during the grace period");
    call.stream_audio(&tone(440.0, 200, 8_000)).await.unwrap();
    assert_eq!(call.wait_closed(WAIT).await.unwrap(), Some(1001), "closed as going away after the grace period");
    tokio::time::timeout(WAIT, shutdown).await.expect("shutdown finishes").unwrap().unwrap();
    assert!(!call.messages().is_empty(), "the call was served while draining");
}
