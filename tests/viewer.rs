//! The call viewer in a real browser: a call is placed and archived, the viewer serves the archive, and headless
//! Chromium (Debian's `chromium`, installed by scripts/setup) loads the list and the call page with the token as
//! basic-auth credentials. Requests without the token are refused. Screenshots of both pages are left in the
//! test's temporary folder (`viewer-calls.png`, `viewer-call.png`) for a person to look at.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::init_logs;
use loadgen::{Rig, RigOptions, WAIT};
use parley::archive::{list_calls, Archive, ArchiveStore, CallStatus, LocalStore};
use parley::viewer::Viewer;

const TOKEN: &str = "viewer-test-token";

/// Places a call with a barge-in and waits until the archive has sealed it.
async fn archived_call(root: &Path) -> String {
    let archive = Archive::new(Arc::new(LocalStore::new(root).unwrap()), true);
    let openai = common::barge_in_model();
    let mut rig = Rig::start(RigOptions { openai, taps: Some(Arc::new(archive)), ..RigOptions::default() }).await;
    let call = rig.call(12).await;
    common::talk_over_the_agent(&mut rig, call, 50).await;
    let call_sid = format!("CA{:032}", 12);
    let store = LocalStore::new(root).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let sealed = list_calls(&store).unwrap().into_iter().find(|(_, m)| m.call_sid == call_sid);
        if let Some((key, metadata)) = sealed.filter(|(_, m)| m.status == CallStatus::Sealed) {
            // No after-call worker runs here: the call has its μ-law recording.
            assert!(store.get(&key, "recording.wav").is_ok(), "{metadata:?}");
            return call_sid;
        }
        assert!(tokio::time::Instant::now() < deadline, "the call was not sealed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The call's folder, relative to the archive's root.
fn call_folder(root: &Path, call_sid: &str) -> PathBuf {
    let store = LocalStore::new(root).unwrap();
    parley::archive::cli::find_call(&store, call_sid).unwrap().relative_path()
}

/// Headless Chromium: the page's DOM once loaded, and a screenshot of it.
async fn chromium(url: &str, screenshot: &Path) -> String {
    let run = |extra: Vec<String>| {
        let mut command = tokio::process::Command::new("chromium");
        command
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1600"])
            .args(extra)
            .arg(url)
            .kill_on_drop(true);
        command
    };
    let dom = tokio::time::timeout(Duration::from_secs(60), run(vec!["--dump-dom".into()]).output())
        .await
        .expect("chromium finished")
        .expect("chromium runs (scripts/setup installs Debian's chromium)");
    assert!(dom.status.success(), "chromium failed: {}", String::from_utf8_lossy(&dom.stderr));
    let shot = tokio::time::timeout(
        Duration::from_secs(60),
        run(vec![format!("--screenshot={}", screenshot.display())]).output(),
    )
    .await
    .expect("chromium finished")
    .expect("chromium runs");
    assert!(shot.status.success() && screenshot.is_file(), "no screenshot: {}", String::from_utf8_lossy(&shot.stderr));
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_shows_calls_in_a_browser_and_only_with_the_token() {
    init_logs();
    let root = tempfile::tempdir().unwrap();
    let call_sid = archived_call(root.path()).await;
    let store: Arc<dyn ArchiveStore> = Arc::new(LocalStore::new(root.path()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, Viewer::new(store, TOKEN, true).router()).await });

    // Without the token, or with a wrong one, nothing is shown.
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    for path in ["/calls", &format!("/calls/{call_sid}"), &format!("/calls/{call_sid}/recording")] {
        let url = format!("{base}{path}");
        assert_eq!(http.get(&url).send().await.unwrap().status(), 401, "{path} without a token");
        let wrong = http.get(&url).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
    }
    // The μ-law recording is served as 16-bit PCM WAV, which every browser plays.
    let recording = http.get(format!("{base}/calls/{call_sid}/recording")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(recording.status(), 200);
    assert_eq!(recording.headers()["content-type"], "audio/wav");
    let wav = recording.bytes().await.unwrap();
    assert!(wav.starts_with(b"RIFF") && &wav[8..16] == b"WAVEfmt ");
    assert_eq!((wav[20], wav[22], wav[34]), (1, 2, 16), "PCM, two channels, 16 bits");
    let (caller, _) = parley::archive::read_legs(&root.path().join(call_folder(root.path(), &call_sid))).unwrap();
    assert_eq!(wav.len(), 44 + caller.len() * 4, "both legs, the whole call");

    // Once the after-call worker has made the Opus recording, that is served.
    let store_again = LocalStore::new(root.path()).unwrap();
    let key = parley::archive::cli::find_call(&store_again, &call_sid).unwrap();
    parley::archive::compress_recording(&store_again, &key).unwrap().expect("compressed");
    for path in [format!("/calls/{call_sid}/recording"), format!("/calls/{call_sid}/recording.opus")] {
        let recording = http.get(format!("{base}{path}")).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(recording.status(), 200);
        assert_eq!(recording.headers()["content-type"], "audio/ogg; codecs=opus");
        assert!(recording.bytes().await.unwrap().starts_with(b"OggS"));
    }

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let list = chromium(&format!("http://viewer:{TOKEN}@{addr}/calls"), &shots.join("viewer-calls.png")).await;
    assert!(list.contains("<table id=\"calls\""), "{list}");
    assert!(list.contains(&format!("href=\"/calls/{call_sid}\"")), "the call is listed:\n{list}");
    assert!(list.contains("+1******1111") && !list.contains("+15550001111"), "the number is redacted:\n{list}");

    let page =
        chromium(&format!("http://viewer:{TOKEN}@{addr}/calls/{call_sid}"), &shots.join("viewer-call.png")).await;
    assert!(page.contains("<audio id=\"recording\""), "{page}");
    assert!(page.contains("<table id=\"timeline\""), "{page}");
    assert!(page.contains("<tr class=\"barge-in\">"), "the barge-in is marked:\n{page}");
    let waterfall = page.split("<div id=\"waterfall\">").nth(1).unwrap_or_default();
    assert!(waterfall.starts_with("<svg"), "the waterfall is drawn:\n{page}");
    assert!(waterfall.contains("LLM first token"), "with Parley's stages:\n{page}");
}

/// `parley serve` with `[viewer]` on: no token in the environment, no start; with it, `/calls` on the call listener
/// opens only to the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parley_serve_mounts_the_viewer_only_behind_its_token() {
    let root = tempfile::tempdir().unwrap();
    let serve = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_parley"));
        command
            .arg("serve")
            .env_remove("PARLEY_CONFIG")
            .env_remove("PARLEY_VIEWER_TOKEN")
            .env("PARLEY__VIEWER__ENABLED", "true")
            .env("PARLEY__ARCHIVE__ROOT", root.path())
            .env("PARLEY__SERVER__LISTEN", "127.0.0.1:0")
            .env("PARLEY__TWILIO__VALIDATE_SIGNATURES", "false")
            .env("RUST_LOG", "warn");
        command
    };
    let refused = serve().output().unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("PARLEY_VIEWER_TOKEN"), "the missing token is named: {said}");

    let mut with_token = serve();
    with_token.env("PARLEY_VIEWER_TOKEN", TOKEN);
    let (_parley, addr) = common::spawn_listening(with_token);
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/calls");
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let page = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("No calls in the archive yet."));
    assert_eq!(http.get(format!("http://{addr}/healthz")).send().await.unwrap().status(), 200, "calls still served");
}
