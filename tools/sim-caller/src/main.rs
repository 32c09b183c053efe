//! `sim-caller`: places one simulated Twilio call against a running `parley serve` and reports what came back.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use parley::twilio::messages::OutboundMessage;
use parley::twilio::signature::SignatureValidator;
use sim_caller::{tone, SimCall, StartOptions};

#[derive(Debug, Parser)]
#[command(about = "Plays Twilio's side of a Media Stream call against Parley")]
struct Args {
    /// Parley's media stream URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/twilio/media")]
    url: String,
    /// The URL Twilio would sign (Parley's public wss URL); defaults to --url.
    #[arg(long)]
    signed_url: Option<String>,
    /// Seconds of caller audio (a 440 Hz tone) to send.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let signature = std::env::var("TWILIO_AUTH_TOKEN")
        .ok()
        .map(|token| SignatureValidator::new(&token).sign(args.signed_url.as_deref().unwrap_or(&args.url), &[]));
    let mut call = SimCall::connect(&args.url, signature.as_deref()).await.context("connecting to Parley")?;
    call.start(&StartOptions::default())?;
    let audio = tone(440.0, args.seconds * 1000, 8000);
    call.stream_audio(&audio).await?;
    // Give an echo agent time to play everything back.
    let wait = Duration::from_secs(u64::from(args.seconds) + 3);
    let expected_frames = args.seconds as usize * 50;
    let echoed = call
        .wait_until("the caller's audio to come back", wait, |log| {
            log.iter()
                .filter(|r| matches!(r, sim_caller::Received::Message { message: OutboundMessage::Media { .. }, .. }))
                .count()
                >= expected_frames
        })
        .await;
    if let Err(err) = echoed {
        eprintln!("sim-caller: {err}");
    }
    let messages = call.messages();
    let media = messages.iter().filter(|m| matches!(m, OutboundMessage::Media { .. })).count();
    let marks = messages.iter().filter(|m| matches!(m, OutboundMessage::Mark { .. })).count();
    let heard_ms = call.audio_received().len() / 8;
    call.send_stop()?;
    call.hang_up().await;
    println!(
        "sent {} ms of audio; received {media} media messages ({heard_ms} ms of audio) and {marks} marks",
        args.seconds * 1000
    );
    if media == 0 {
        bail!("Parley sent no audio back");
    }
    Ok(())
}
