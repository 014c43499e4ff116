//! The Kafka bus over SASL/SCRAM and over TLS, against the real broker's authenticated
//! listeners (`scripts/services.sh` gives it a SASL_PLAINTEXT and a SASL_SSL listener, with a
//! SCRAM-SHA-512 user and a certificate from a CA it makes for the run): the security settings
//! come from the bus URL, the password from the environment or a file, and a wrong password, or
//! a broker certificate from an unknown CA, is refused. No secret is in any error or `Debug`.

use std::time::Duration;

use docstore_bus::kafka::{KafkaBus, KafkaConfig};
use docstore_bus::{BusError, EventBus, Message};

struct Listeners {
    sasl: String,
    tls: String,
    ca: String,
    user: String,
    password: String,
}

fn listeners() -> Option<Listeners> {
    let [sasl, tls, ca, user, password] = docstore_testkit::services([
        "DOCSTORE_TEST_KAFKA_SASL",
        "DOCSTORE_TEST_KAFKA_SASL_SSL",
        "DOCSTORE_TEST_KAFKA_CA",
        "DOCSTORE_TEST_KAFKA_SCRAM_USER",
        "DOCSTORE_TEST_KAFKA_SCRAM_PASSWORD",
    ])?;
    Some(Listeners {
        sasl,
        tls,
        ca,
        user,
        password,
    })
}

/// Publishes one message and reads it back through a fresh group.
async fn round_trip(config: KafkaConfig) -> Result<(), BusError> {
    let bus = KafkaBus::new(config)?;
    let topic = format!("secure.{}", uuid::Uuid::new_v4().simple());
    bus.publish(Message {
        topic: topic.clone(),
        key: "doc-1".into(),
        payload: b"{\"hello\":1}".to_vec(),
        headers: Vec::new(),
    })
    .await?;
    let mut sub = bus.subscribe("secure-test", &[topic]).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let got = sub.poll(10, Duration::from_millis(500)).await?;
        if let Some(d) = got.first() {
            assert_eq!(d.message.payload, b"{\"hello\":1}");
            return Ok(());
        }
    }
    Err(BusError::Unavailable("message not read back".into()))
}

fn short(mut c: KafkaConfig) -> KafkaConfig {
    c.delivery_timeout = Duration::from_secs(8);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_and_tls_from_the_url_and_environment() {
    let Some(l) = listeners() else { return };
    let env = |password: String| {
        move |name: &str| (name == "DOCSTORE_KAFKA_SASL_PASSWORD").then(|| password.clone())
    };
    let scram = format!(
        "kafka://{}?partitions=1&security.protocol=SASL_PLAINTEXT&sasl.mechanism=SCRAM-SHA-512&sasl.username={}",
        l.sasl, l.user
    );
    let config = KafkaConfig::from_url_with_env(&scram, env(l.password.clone())).unwrap();
    assert!(!format!("{config:?}").contains(&l.password), "{config:?}");
    round_trip(short(config)).await.unwrap();

    // The password from a file (a mounted secret), with its trailing newline.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kafka-password");
    std::fs::write(&file, format!("{}\n", l.password)).unwrap();
    let path = file.display().to_string();
    let from_file = move |name: &str| (name == "DOCSTORE_KAFKA_SASL_PASSWORD_FILE").then(|| path.clone());
    round_trip(short(KafkaConfig::from_url_with_env(&scram, from_file).unwrap()))
        .await
        .unwrap();

    // TLS: the broker's certificate checks out against the run's CA.
    let tls = format!(
        "kafka://{}?partitions=1&security.protocol=SASL_SSL&sasl.mechanism=SCRAM-SHA-512&sasl.username={}&ssl.ca.location={}",
        l.tls, l.user, l.ca
    );
    round_trip(short(
        KafkaConfig::from_url_with_env(&tls, env(l.password.clone())).unwrap(),
    ))
    .await
    .unwrap();

    // Refused, side by side (each waits out the client's bounded retries): a wrong password,
    // and the TLS listener without the run's CA. No error carries either password.
    let wrong = KafkaConfig::from_url_with_env(&scram, env("not-the-password".into())).unwrap();
    let unknown_ca = format!(
        "kafka://{}?partitions=1&security.protocol=SASL_SSL&sasl.mechanism=SCRAM-SHA-512&sasl.username={}",
        l.tls, l.user
    );
    let untrusted = KafkaConfig::from_url_with_env(&unknown_ca, env(l.password.clone())).unwrap();
    let (wrong, untrusted) = tokio::join!(round_trip(short(wrong)), round_trip(short(untrusted)));
    for (what, result) in [("a wrong password", wrong), ("an unknown CA", untrusted)] {
        let text = result.expect_err(&format!("{what} was accepted")).to_string();
        assert!(
            !text.contains("not-the-password") && !text.contains(&l.password),
            "{text}"
        );
    }
}

/// The example in docs/events.md parses to what it says.
#[test]
fn the_documented_url_parses() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/events.md")).unwrap();
    let line = doc
        .lines()
        .find(|l| l.starts_with("export DOCSTORE_BUS='kafka://"))
        .expect("example URL in docs/events.md");
    let url = line.split('\'').nth(1).unwrap();
    let password = |name: &str| (name == "DOCSTORE_KAFKA_SASL_PASSWORD").then(|| "from-env".to_owned());
    let c = KafkaConfig::from_url_with_env(url, password).unwrap();
    assert_eq!(c.brokers, "b1:9096,b2:9096");
    let get = |k: &str| c.extra.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
    assert_eq!(get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(get("sasl.username"), Some("docstore-relay"));
    assert_eq!(get("ssl.ca.location"), Some("/etc/docstore/kafka-ca.pem"));
    assert_eq!(get("sasl.password"), Some("from-env"));
    assert!(format!("{c:?}").contains("<redacted>") && !format!("{c:?}").contains("from-env"));
}

#[test]
fn secrets_never_ride_in_the_url() {
    let url = "kafka://127.0.0.1:9092?security.protocol=SASL_SSL&sasl.password=hunter2-secret";
    let err = KafkaConfig::from_url_with_env(url, |_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("DOCSTORE_KAFKA_SASL_PASSWORD"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let err = KafkaConfig::from_url_with_env("kafka://h:1?sasl.jaas=x&y=hunter2", |_| None)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
}
